"""End-to-end checks: the public ops through autograd, mamba_ssm's Mamba / Mamba2 (fused paths and
step()), and the Mamba-YOLO blocks, each against a float64 reference on the CPU.

References never use a backend under test: jetson-mamba's own blocks run in float64 with every op
routed to the naive references (`reference_backend`); mamba_ssm's layers are recomputed from their
parameters with the naive ops, because their fused paths call compiled or Triton kernels directly.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Dict, List, Tuple

from jetson_mamba.verify.cases import ConvCase, ScanCase, conv_inputs, scan_inputs
from jetson_mamba.verify.compare import nan_poisoned_memory, tolerance
from jetson_mamba.verify.extensions import import_module
from jetson_mamba.verify.kernels import (
    SCAN_GRADS,
    conv_reference,
    dtype_name,
    float64_leaves,
    grads_of,
    scan_reference,
)
from jetson_mamba.verify.plan import Plan, Task, absent_or_broken
from jetson_mamba.verify.reference import reference_backend
from jetson_mamba.verify.report import CheckResult, Skipped, run_check


def _leaves(inputs: Dict[str, Any]) -> Dict[str, Any]:
    return {key: None if value is None else value.detach().clone().requires_grad_()
            for key, value in inputs.items()}


def check_scan_fn(plan: Plan, dtype: Any, salt: int) -> List[CheckResult]:
    """`jetson_mamba.ops.selective_scan_fn` (dispatch + autograd.Function) forward and backward."""
    import torch

    from jetson_mamba.ops import selective_scan_fn

    case = ScanCase(2, 8, 33, 4)
    generator = plan.generator(salt)
    inputs = scan_inputs(case, dtype, plan.device, generator)
    dout = torch.randn(inputs["u"].shape, generator=generator).to(device=plan.device, dtype=dtype)
    ref_out, ref_state, ref_grads = scan_reference(inputs, case.softplus, dout)
    results: Dict[str, Any] = {}

    def forward() -> Tuple[Dict[str, Any], Dict[str, Any]]:
        leaves = _leaves(inputs)
        with nan_poisoned_memory():
            out, last = selective_scan_fn(**leaves, delta_softplus=True, return_last_state=True)
            out.backward(dout)
        results.update({key: leaf.grad for key, leaf in leaves.items() if leaf is not None})
        return {"out": out, "last_state": last}, {"out": ref_out, "last_state": ref_state}

    component, name = "ops.selective_scan_fn", case.label
    return [run_check(component, name, dtype_name(dtype), "forward", tolerance(dtype, False), forward),
            run_check(component, name, dtype_name(dtype), "backward", tolerance(dtype, True),
                      lambda: ({key: results.get(key) for key in SCAN_GRADS}, ref_grads))]


def check_conv_fn(plan: Plan, dtype: Any, salt: int) -> List[CheckResult]:
    """`jetson_mamba.ops.causal_conv1d_fn` (dispatch + autograd.Function) forward and backward."""
    import torch

    from jetson_mamba.ops import causal_conv1d_fn

    case = ConvCase(2, 8, 21, 4)
    generator = plan.generator(salt)
    inputs = conv_inputs(case, dtype, plan.device, generator)
    dout = torch.randn(inputs["x"].shape, generator=generator).to(device=plan.device, dtype=dtype)
    ref_out, _, ref_grads = conv_reference(inputs, case, dout, None)
    results: Dict[str, Any] = {}

    def forward() -> Tuple[Dict[str, Any], Dict[str, Any]]:
        leaves = _leaves(inputs)
        with nan_poisoned_memory():
            out = causal_conv1d_fn(leaves["x"], leaves["weight"], leaves["bias"], activation="silu")
            out.backward(dout)
        results.update({key: leaf.grad for key, leaf in leaves.items() if leaf is not None})
        return {"out": out}, {"out": ref_out}

    component, name = "ops.causal_conv1d_fn", case.label
    return [run_check(component, name, dtype_name(dtype), "forward", tolerance(dtype, False), forward),
            run_check(component, name, dtype_name(dtype), "backward", tolerance(dtype, True),
                      lambda: ({key: results.get(key) for key in ("x", "weight", "bias")}, ref_grads))]


def check_chunk_scan_fn(plan: Plan, dtype: Any, salt: int) -> List[CheckResult]:
    """`jetson_mamba.ops.mamba_chunk_scan_combined` (Mamba2's SSD) with D, z, dt_bias, softplus, initial and
    final states, a length not a multiple of the chunk, forward and backward, against the float64 recurrence."""
    import torch

    from jetson_mamba.ops import mamba_chunk_scan_combined
    from jetson_mamba.ops.ssd.naive import ssd_ref

    b, length, heads, headdim, groups, dstate, chunk = 2, 37, 4, 8, 2, 8, 16
    generator = plan.generator(salt)

    def randn(*shape: int, dt: Any = dtype, scale: float = 1.0) -> Any:
        return (scale * torch.randn(*shape, generator=generator)).to(device=plan.device, dtype=dt)

    inputs = {
        "x": randn(b, length, heads, headdim), "dt": randn(b, length, heads, scale=0.5),
        "A": -(0.5 + torch.rand(heads, generator=generator)).to(plan.device),
        "B": randn(b, length, groups, dstate), "C": randn(b, length, groups, dstate),
        "D": randn(heads, dt=torch.float32), "z": randn(b, length, heads, headdim),
        "dt_bias": randn(heads, dt=torch.float32, scale=0.5),
        "initial_states": randn(b, heads, headdim, dstate, dt=torch.float32, scale=0.5),
    }
    dout, dfinal = randn(b, length, heads, headdim), randn(b, heads, headdim, dstate, dt=torch.float32)
    ref = float64_leaves(inputs)
    ref_out, ref_final = ssd_ref(**ref, dt_softplus=True)
    ((ref_out * dout.cpu().double()).sum() + (ref_final * dfinal.cpu().double()).sum()).backward()
    ref_grads = grads_of(ref)
    grads: Dict[str, Any] = {}

    def forward() -> Tuple[Dict[str, Any], Dict[str, Any]]:
        leaves = _leaves(inputs)
        with nan_poisoned_memory():
            out, final = mamba_chunk_scan_combined(
                leaves["x"], leaves["dt"], leaves["A"], leaves["B"], leaves["C"], chunk, D=leaves["D"],
                z=leaves["z"], dt_bias=leaves["dt_bias"], initial_states=leaves["initial_states"],
                dt_softplus=True, return_final_states=True)
            ((out.double() * dout.double()).sum() + (final.double() * dfinal.double()).sum()).backward()
        grads.update(grads_of(leaves))
        return {"out": out, "final_states": final}, {"out": ref_out.detach(), "final_states": ref_final.detach()}

    component = "ops.mamba_chunk_scan_combined"
    name = f"D, z, dt_bias, softplus, initial/final states, {b}x{length}x{heads}x{headdim} G={groups} chunk {chunk}"
    return [run_check(component, name, dtype_name(dtype), "forward", tolerance(dtype, False), forward),
            run_check(component, name, dtype_name(dtype), "backward", tolerance(dtype, True),
                      lambda: (grads, ref_grads))]


def check_module(component: str, name: str, module: Any, reference: Callable[[Any, Dict[str, Any]], Any],
                 shape: Tuple[int, ...], dtype: Any, device: Any, generator: Any,
                 precision: Any = None) -> List[CheckResult]:
    """A module forward + backward (input and parameter gradients) in `dtype` on `device` against
    `reference(x64, params64)` computed in float64 on the CPU from the same dtype-rounded x and parameters."""
    import torch

    test_module = copy.deepcopy(module).to(device=device, dtype=dtype)
    x = torch.randn(*shape, generator=generator).to(dtype)
    ref_params = {key: value.detach().cpu().double().requires_grad_()
                  for key, value in test_module.named_parameters()}
    ref_x = x.double().requires_grad_()
    ref_out = reference(ref_x, ref_params)
    dout = torch.randn(ref_out.shape, generator=generator).to(dtype)
    ref_out.backward(dout.double())
    ref_grads = {"x": ref_x.grad, **{key: value.grad for key, value in ref_params.items() if value.grad is not None}}
    grads: Dict[str, Any] = {}

    def forward() -> Tuple[Dict[str, Any], Dict[str, Any]]:
        test_x = x.to(device=device, dtype=dtype).requires_grad_()
        with nan_poisoned_memory():
            out = test_module(test_x)
            out.backward(dout.to(device=device, dtype=dtype))
        grads.update({"x": test_x.grad, **{key: value.grad for key, value in test_module.named_parameters()}})
        return {"out": out}, {"out": ref_out.detach()}

    precision = precision or dtype  # the arithmetic the tolerance is for (e.g. "tf32" for float32 inputs)
    return [run_check(component, name, dtype_name(dtype), "forward", tolerance(precision, False, block=True),
                      forward),
            run_check(component, name, dtype_name(dtype), "backward", tolerance(precision, True, block=True),
                      lambda: ({key: grads.get(key) for key in ref_grads}, ref_grads))]


def _functional_reference(module: Any) -> Callable[[Any, Dict[str, Any]], Any]:
    """float64 reference of a jetson-mamba module: a float64 copy with every op on the naive references."""
    import torch

    ref_module = copy.deepcopy(module).cpu().double()

    def reference(x: Any, params: Dict[str, Any]) -> Any:
        with reference_backend():
            return torch.func.functional_call(ref_module, params, (x,))

    return reference


def mamba_reference(module: Any) -> Callable[[Any, Dict[str, Any]], Any]:
    """mamba_ssm's `Mamba` recomputed from its parameters with the naive conv and scan (its slow path)."""
    import torch
    import torch.nn.functional as F

    from jetson_mamba.ops.causal_conv1d.naive import causal_conv1d_ref
    from jetson_mamba.ops.selective_scan.naive import selective_scan_ref

    rank, dstate = module.dt_rank, module.d_state

    def reference(x: Any, p: Dict[str, Any]) -> Any:
        xz = F.linear(x, p["in_proj.weight"], p.get("in_proj.bias")).transpose(1, 2)
        xs, z = xz.chunk(2, dim=1)
        xs = causal_conv1d_ref(xs, p["conv1d.weight"][:, 0, :], p.get("conv1d.bias"), activation="silu")
        dt, B, C = torch.split(F.linear(xs.transpose(1, 2), p["x_proj.weight"]), [rank, dstate, dstate], dim=-1)
        dt = F.linear(dt, p["dt_proj.weight"]).transpose(1, 2)
        y = selective_scan_ref(xs, dt, -torch.exp(p["A_log"]), B.transpose(1, 2), C.transpose(1, 2), p["D"], z,
                               p["dt_proj.bias"], delta_softplus=True)
        return F.linear(y.transpose(1, 2), p["out_proj.weight"], p.get("out_proj.bias"))

    return reference


def mamba2_reference(module: Any) -> Callable[[Any, Dict[str, Any]], Any]:
    """mamba_ssm's `Mamba2` recomputed from its parameters with the naive conv and SSD (and the plain-torch
    gated RMSNorm, which computes in float64 for float64 inputs)."""
    import torch
    import torch.nn.functional as F

    from jetson_mamba.ops.causal_conv1d.naive import causal_conv1d_ref
    from jetson_mamba.ops.ssd.layernorm_gated import rmsnorm_fn
    from jetson_mamba.ops.ssd.naive import ssd_ref

    m = module
    d_ssm, groups, dstate, heads, headdim = m.d_ssm, m.ngroups, m.d_state, m.nheads, m.headdim

    def reference(x: Any, p: Dict[str, Any]) -> Any:
        batch, length, _ = x.shape
        zxbcdt = F.linear(x, p["in_proj.weight"], p.get("in_proj.bias"))
        d_mlp = (zxbcdt.shape[-1] - 2 * d_ssm - 2 * groups * dstate - heads) // 2
        z0, x0, z, xBC, dt = torch.split(zxbcdt, [d_mlp, d_mlp, d_ssm, d_ssm + 2 * groups * dstate, heads], dim=-1)
        xBC = causal_conv1d_ref(xBC.transpose(1, 2), p["conv1d.weight"][:, 0, :], p.get("conv1d.bias"),
                                activation="silu").transpose(1, 2)
        xs, B, C = torch.split(xBC, [d_ssm, groups * dstate, groups * dstate], dim=-1)
        D = p["D"].view(heads, headdim) if m.D_has_hdim else p["D"]
        y, _ = ssd_ref(xs.reshape(batch, length, heads, headdim), dt, -torch.exp(p["A_log"]),
                       B.reshape(batch, length, groups, dstate), C.reshape(batch, length, groups, dstate), D,
                       dt_bias=p["dt_bias"], dt_softplus=True, dt_limit=tuple(m.dt_limit))
        y = y.reshape(batch, length, d_ssm)
        if m.rmsnorm:
            y = rmsnorm_fn(y, p["norm.weight"], None, z, eps=m.norm.eps, group_size=d_ssm // groups,
                           norm_before_gate=False)
        else:
            y = y * F.silu(z)
        if d_mlp > 0:
            y = torch.cat([F.silu(z0) * x0, y], dim=-1)
        return F.linear(y, p["out_proj.weight"], p.get("out_proj.bias"))

    return reference


def check_step(component: str, module: Any, reference: Callable[[Any, Dict[str, Any]], Any],
               shape: Tuple[int, int, int], dtype: Any, device: Any, generator: Any,
               precision: Any = None) -> CheckResult:
    """Decoding token by token with `step()` from a fresh cache must reproduce the whole-sequence reference."""
    import torch

    test_module = copy.deepcopy(module).to(device=device, dtype=dtype).eval()
    x = torch.randn(*shape, generator=generator).to(dtype)
    with torch.no_grad():
        ref_out = reference(x.double(), {key: value.detach().cpu().double()
                                         for key, value in test_module.named_parameters()})

    def compute() -> Tuple[Dict[str, Any], Dict[str, Any]]:
        batch, length, _ = shape
        xs = x.to(device=device, dtype=dtype)
        with torch.no_grad(), nan_poisoned_memory():
            conv_state, ssm_state = test_module.allocate_inference_cache(batch, length, dtype=dtype)
            outs = []
            for t in range(length):
                out, conv_state, ssm_state = test_module.step(xs[:, t:t + 1], conv_state, ssm_state)
                outs.append(out)
        return {"out": torch.cat(outs, dim=1)}, {"out": ref_out}

    return run_check(component, f"{shape[1]} decode steps, batch {shape[0]}", dtype_name(dtype), "step",
                     tolerance(precision or dtype, False, block=True), compute)


def _block_dtypes(plan: Plan) -> List[Any]:
    import torch

    return [torch.float32] if plan.quick else [torch.float32, torch.bfloat16]


def _pin_autotuning(plan: Plan) -> None:
    """mamba_ssm's Mamba2 runs ~27 autotuned Triton kernels: one config each keeps a cold start short.

    The smallest config is also the one that shows mamba-ssm 2.2.x's dD defect (a per-head D gradient
    stored, not summed, per BLOCK_SIZE_N column block: wrong when headdim > BLOCK_SIZE_N; fixed in
    2.3), which the Mamba2 check below stays clear of with headdim 32."""
    from jetson_mamba.ops.triton_utils import pin_autotuned_kernels

    pinned = pin_autotuned_kernels("mamba_ssm")
    if pinned:
        plan.notes.append(f"{pinned} autotuned Triton kernels of mamba_ssm pinned to their smallest config "
                          "(tuning them all takes minutes on a cold cache)")


def _plan_mamba_ssm(plan: Plan) -> None:
    import torch

    module, why = import_module("mamba_ssm")
    if module is None:
        absent_or_broken(plan, "mamba_ssm", "mamba-ssm", why)
        return
    length = 16 if plan.quick else 64
    on_gpu = torch.device(plan.device).type == "cuda"
    # (component, module, class, arguments, reference, float32 arithmetic of its fused path on the GPU)
    layers = (
        ("mamba_ssm.Mamba", "mamba_ssm.modules.mamba_simple", "Mamba", dict(d_model=32, d_state=8), mamba_reference,
         None),
        # headdim 32: not above any config's BLOCK_SIZE_N, which mamba-ssm 2.2.x's dD needs (see _pin_autotuning)
        ("mamba_ssm.Mamba2", "mamba_ssm.modules.mamba2", "Mamba2",
         dict(d_model=64, d_state=16, headdim=32, chunk_size=8), mamba2_reference, "tf32" if on_gpu else None),
    )
    for component, path, cls_name, kwargs, make_reference, fp32_precision in layers:
        layer_module, why = import_module(path)
        if layer_module is None:
            absent_or_broken(plan, component, path, why)
            continue

        def run(layer_module: Any = layer_module, cls_name: str = cls_name, kwargs: Dict[str, Any] = kwargs,
                component: str = component, make_reference: Any = make_reference,
                fp32_precision: Any = fp32_precision) -> List[CheckResult]:
            torch.manual_seed(plan.seed)
            layer = getattr(layer_module, cls_name)(**kwargs, layer_idx=0).eval()
            reference = make_reference(layer)
            results: List[CheckResult] = []
            for index, dtype in enumerate(_block_dtypes(plan)):
                generator = plan.generator(3000 + index)
                precision = fp32_precision if dtype == torch.float32 else None
                results += check_module(component, f"fused path, batch 2, length {length}", layer, reference,
                                        (2, length, kwargs["d_model"]), dtype, plan.device, generator, precision)
                results.append(check_step(component, layer, reference, (2, min(length, 8), kwargs["d_model"]),
                                          dtype, plan.device, generator, precision))
            return results

        plan.tasks.append(Task(component, run))
    _pin_autotuning(plan)  # once, with every mamba_ssm module the layers imported


def _plan_mamba_yolo(plan: Plan) -> None:
    import torch

    module, why = import_module("jetson_mamba.models.mamba_yolo")
    if module is None:
        plan.skipped.append(Skipped("mamba_yolo", f"jetson-mamba's Mamba-YOLO blocks: {why}"))
        return
    side = 6 if plan.quick else 12
    blocks = (
        ("mamba_yolo.SS2D", lambda: module.SS2D(d_model=16, d_state=4), (1, 16, side, side)),
        ("mamba_yolo.VSSBlock", lambda: module.VSSBlock(in_channels=8, hidden_dim=16, ssm_d_state=4),
         (2, 8, side, side)),
        ("mamba_yolo.XSSBlock", lambda: module.XSSBlock(in_channels=8, hidden_dim=16, n=2, ssm_d_state=4),
         (2, 8, side, side)),
    )

    for component, build, shape in blocks:
        def run(component: str = component, build: Any = build, shape: Tuple[int, ...] = shape) -> List[CheckResult]:
            torch.manual_seed(plan.seed)
            block = build().eval()
            results: List[CheckResult] = []
            for index, dtype in enumerate(_block_dtypes(plan)):
                results += check_module(component, f"input {'x'.join(map(str, shape))}", block,
                                        _functional_reference(block), shape, dtype, plan.device,
                                        plan.generator(4000 + index))
            return results

        plan.tasks.append(Task(component, run))


def plan_blocks(plan: Plan) -> None:
    """Add the end-to-end tasks: public ops, mamba_ssm layers, Mamba-YOLO blocks."""
    import torch

    ops, why = import_module("jetson_mamba.ops")
    if ops is None or not hasattr(ops, "selective_scan_fn"):
        plan.skipped.append(Skipped("ops", f"jetson_mamba.ops public functions: {why or 'not present'}"))
        return
    why = plan.forced_unusable("selective_scan")
    if why is not None:
        plan.skipped.append(Skipped("ops, mamba_ssm, mamba_yolo", f"--backend {plan.forced}: {why}"))
        return
    for index, dtype in enumerate([torch.float32, torch.bfloat16]):
        plan.tasks.append(Task(f"ops.selective_scan_fn {dtype_name(dtype)}",
                               lambda dtype=dtype, index=index: check_scan_fn(plan, dtype, 5000 + index)))
        plan.tasks.append(Task(f"ops.causal_conv1d_fn {dtype_name(dtype)}",
                               lambda dtype=dtype, index=index: check_conv_fn(plan, dtype, 5100 + index)))
    why = plan.forced_unusable("ssd")
    if why is not None:
        plan.skipped.append(Skipped("ops.mamba_chunk_scan_combined", f"--backend {plan.forced}: {why}"))
    else:
        for index, dtype in enumerate([torch.float32, torch.bfloat16]):
            plan.tasks.append(Task(f"ops.mamba_chunk_scan_combined {dtype_name(dtype)}",
                                   lambda dtype=dtype, index=index: check_chunk_scan_fn(plan, dtype, 5200 + index)))
    _plan_mamba_ssm(plan)
    _plan_mamba_yolo(plan)
