"""Kernel checks: any module with the backend contract (ops/<op>/<backend>.py, or an adapter over a
compiled extension) against the float64 references in ops/<op>/naive.py, forward and backward.

Outputs the kernel allocates are NaN-poisoned (see `nan_poisoned_memory`), so a kernel that leaves
part of a result unwritten fails instead of passing on a lucky allocation.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

from jetson_mamba.verify.cases import ConvCase, ScanCase, conv_inputs, conv_seq_idx, scan_inputs
from jetson_mamba.verify.compare import nan_poisoned_memory, tolerance
from jetson_mamba.verify.report import CheckResult, run_check

SCAN_GRADS = ("u", "delta", "A", "B", "C", "D", "delta_bias", "z")
CONV_GRADS = ("x", "weight", "bias", "initial_states")


def dtype_name(dtype: Any) -> str:
    return str(dtype).replace("torch.", "")


def float64_leaves(inputs: Dict[str, Optional[Any]]) -> Dict[str, Optional[Any]]:
    return {key: None if value is None else value.detach().cpu().double().requires_grad_()
            for key, value in inputs.items()}


def grads_of(leaves: Dict[str, Optional[Any]]) -> Dict[str, Any]:
    return {key: value.grad for key, value in leaves.items() if value is not None and value.grad is not None}


Compute = Callable[[], Tuple[Dict[str, Any], Dict[str, Any]]]


def _forward_backward(component: str, label: str, dtype: Any, forward: Compute,
                      backward: Optional[Compute]) -> List[CheckResult]:
    name = dtype_name(dtype)
    results = [run_check(component, label, name, "forward", tolerance(dtype, False), forward)]
    if backward is not None:
        results.append(run_check(component, label, name, "backward", tolerance(dtype, True), backward))
    return results


def scan_reference(inputs: Dict[str, Optional[Any]], softplus: bool, dout: Any) -> Tuple[Any, Any, Dict[str, Any]]:
    """float64 (out, last_state, gradients of every input) from the naive selective scan."""
    from jetson_mamba.ops.selective_scan.naive import selective_scan_ref

    leaves = float64_leaves(inputs)
    out, last = selective_scan_ref(**leaves, delta_softplus=softplus, return_last_state=True)
    out.backward(dout.detach().cpu().double())
    return out.detach(), last.detach(), grads_of(leaves)


def check_scan(component: str, module: Any, case: ScanCase, dtype: Any, device: Any, generator: Any,
               backward: bool = True, with_x: bool = False) -> List[CheckResult]:
    """`module.selective_scan_forward` / `_backward` on fresh inputs against the reference; over more than
    one 2048-step chunk also the chunk states x, where the module keeps them (`with_x`: it offers
    `selective_scan_forward_x`)."""
    import torch

    from jetson_mamba.ops.selective_scan.cuda import X_CHUNK
    from jetson_mamba.ops.selective_scan.naive import chunk_states_ref

    inputs = scan_inputs(case, dtype, device, generator)
    dout = torch.randn(inputs["u"].shape, generator=generator).to(device=device, dtype=dtype)
    ref_out, ref_state, ref_grads = scan_reference(inputs, case.softplus, dout)
    args = (inputs["u"], inputs["delta"], inputs["A"], inputs["B"], inputs["C"], inputs["D"], inputs["z"],
            inputs["delta_bias"], case.softplus)

    def forward() -> Tuple[Dict[str, Any], Dict[str, Any]]:
        with nan_poisoned_memory():
            out, out_z, last_state = module.selective_scan_forward(*args)
        return ({"out": out_z if case.z else out, "last_state": last_state},
                {"out": ref_out, "last_state": ref_state})

    def backward_() -> Tuple[Dict[str, Any], Dict[str, Any]]:
        with nan_poisoned_memory():
            grads = module.selective_scan_backward(*args, dout)
        return dict(zip(SCAN_GRADS, grads)), ref_grads

    def chunk_states() -> Tuple[Dict[str, Any], Dict[str, Any]]:
        leaves = {k: v.detach() for k, v in float64_leaves(inputs).items() if v is not None and k not in ("D", "z")}
        ref = chunk_states_ref(**leaves, delta_softplus=case.softplus, every=X_CHUNK)
        if float(ref[..., 0::2].min()) < 1e-30:
            raise ValueError(f"case {case.label}: decay products below fp32's range (any kernel stores 0 there); "
                             "give it smaller steps (delta_scale)")
        with nan_poisoned_memory():
            x = module.selective_scan_forward_x(*args, X_CHUNK)[2]
        return ({"x decay products": x[..., 0::2], "x states": x[..., 1::2]},
                {"x decay products": ref[..., 0::2], "x states": ref[..., 1::2]})

    results = _forward_backward(component, case.label, dtype, forward, backward_ if backward else None)
    # the x the stand-in modules return, from backends that keep it in their forward pass
    if with_x and case.length > X_CHUNK:
        results.append(run_check(component, case.label, dtype_name(dtype), "chunk states", tolerance(dtype, False),
                                 chunk_states))
    return results


def conv_reference(inputs: Dict[str, Optional[Any]], case: ConvCase, dout: Any, dfinal: Optional[Any],
                   seq_idx: Optional[Any] = None) -> Tuple[Any, Optional[Any], Dict[str, Any]]:
    """float64 (out, final_states, gradients) from the naive causal conv1d."""
    from jetson_mamba.ops.causal_conv1d.naive import causal_conv1d_ref

    leaves = float64_leaves(inputs)
    result = causal_conv1d_ref(leaves["x"], leaves["weight"], leaves["bias"], leaves["initial_states"],
                               return_final_states=case.final_states, activation="silu" if case.silu else None,
                               seq_idx=None if seq_idx is None else seq_idx.cpu())
    out, final = result if case.final_states else (result, None)
    loss = (out * dout.detach().cpu().double()).sum()
    if final is not None:
        loss = loss + (final * dfinal.detach().cpu().double()).sum()
    loss.backward()
    return out.detach(), None if final is None else final.detach(), grads_of(leaves)


def check_conv(component: str, module: Any, case: ConvCase, dtype: Any, device: Any, generator: Any,
               backward: bool = True) -> List[CheckResult]:
    """`module.causal_conv1d_forward` / `_backward` on fresh inputs against the reference. dout is laid
    out like the output (empty_like(x): channel-last for a channel-last x, dense for a strided one), and
    dfinal_states (batch, width-1, dim) transposed, as autograd hands them to causal-conv1d's backward."""
    import torch

    inputs = conv_inputs(case, dtype, device, generator)
    seq_idx = conv_seq_idx(case, device, generator)
    x = inputs["x"]
    dout = torch.empty_like(x).copy_(torch.randn(x.shape, generator=generator))
    dfinal = None
    if case.final_states:
        dfinal = torch.randn(case.batch, case.width - 1, case.dim, generator=generator).to(
            device=device, dtype=dtype).transpose(1, 2)
    ref_out, ref_final, ref_grads = conv_reference(inputs, case, dout, dfinal, seq_idx)

    def forward() -> Tuple[Dict[str, Any], Dict[str, Any]]:
        with nan_poisoned_memory():
            out, final = module.causal_conv1d_forward(x, inputs["weight"], inputs["bias"], seq_idx,
                                                      inputs["initial_states"], case.final_states, case.silu)
        return {"out": out, "final_states": final}, {"out": ref_out, "final_states": ref_final}

    def backward_() -> Tuple[Dict[str, Any], Dict[str, Any]]:
        with nan_poisoned_memory():
            grads = module.causal_conv1d_backward(x, inputs["weight"], inputs["bias"], dout, seq_idx,
                                                  inputs["initial_states"], dfinal, case.silu)
        return dict(zip(CONV_GRADS, grads)), ref_grads

    return _forward_backward(component, case.label, dtype, forward, backward_ if backward else None)


def check_conv_update(component: str, module: Any, dtype: Any, device: Any, generator: Any,
                      width: int = 4, steps: int = 3) -> CheckResult:
    """`module.causal_conv1d_update`, a few decode steps: outputs and the in-place conv_state."""
    import torch

    from jetson_mamba.ops.causal_conv1d.naive import causal_conv1d_update_ref

    batch, dim, state_len = 2, 16, width - 1 + 2

    def randn(*shape: int) -> Any:
        return torch.randn(*shape, generator=generator).to(device=device, dtype=dtype)

    xs = [randn(batch, dim, 1) for _ in range(steps)]  # one token per step, (batch, dim, 1) as upstream passes it
    state, weight, bias = randn(batch, dim, state_len), randn(dim, width), randn(dim)
    ref_state = state.detach().cpu().double()
    refs = [causal_conv1d_update_ref(x.cpu().double(), ref_state, weight.cpu().double(), bias.cpu().double(),
                                     "silu") for x in xs]

    def compute() -> Tuple[Dict[str, Any], Dict[str, Any]]:
        conv_state = state.clone()
        with nan_poisoned_memory():
            outs = [module.causal_conv1d_update(x, conv_state, weight, bias, True, None, None) for x in xs]
        return ({"out": torch.stack(outs), "conv_state": conv_state},
                {"out": torch.stack(refs), "conv_state": ref_state})

    return run_check(component, f"width {width}, {steps} steps, state_len {state_len}", dtype_name(dtype),
                     "update", tolerance(dtype, False), compute)
