"""Checks run inside a sub-venv with real mamba-ssm / causal-conv1d (CPU, small shapes).

    python mamba_checks.py [--no-distributed | --no-process-group] CHECK...

prints one JSON object: check -> {"ok": true, "errors": {...}, ...} or {"ok": false, "error": "..."}.
`--no-distributed` first makes this torch look like a build without torch.distributed (with the
ProcessGroup stub recent torch keeps there), `--no-process-group` like an older one without it.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Callable, Dict

import torch

# what torch builds without distributed support lack
COLLECTIVES = ("all_gather_into_tensor", "_all_gather_base", "reduce_scatter_tensor", "_reduce_scatter_base")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _without_distributed(process_group: bool) -> None:
    """Make this torch look like a USE_DISTRIBUTED=0 build: recent ones keep a ProcessGroup stub, older none."""
    import torch.distributed as dist

    for name in COLLECTIVES:
        if hasattr(dist, name):
            delattr(dist, name)
    dist.ProcessGroup = type("_ProcessGroupStub", (), {})
    if not process_group:
        del dist.ProcessGroup
    dist.is_available = lambda: False


def check_import() -> Dict[str, Any]:
    import mamba_ssm

    return {"version": mamba_ssm.__version__}


def check_fused() -> Dict[str, Any]:
    """Mamba's fused mamba_inner_fn path and Mamba2's mem-eff path, forward + backward."""
    from mamba_ssm import Mamba, Mamba2

    torch.manual_seed(0)
    for module in (Mamba(d_model=32, d_state=8, use_fast_path=True),
                   Mamba2(d_model=64, d_state=16, headdim=16, chunk_size=16, use_mem_eff_path=True)):
        module(torch.randn(2, 24, module.d_model)).sum().backward()
    return {}


def check_inner() -> Dict[str, Any]:
    """mamba_inner_fn against mamba_inner_ref: output and every gradient."""
    from mamba_ssm.ops.selective_scan_interface import mamba_inner_fn, mamba_inner_ref

    torch.manual_seed(0)
    dim, n, rank = 16, 8, 4
    base = {"xz": torch.randn(2, 2 * dim, 32), "conv1d_weight": torch.randn(dim, 1, 4) * 0.3,
            "conv1d_bias": torch.randn(dim) * 0.1, "x_proj_weight": torch.randn(rank + 2 * n, dim) * 0.1,
            "delta_proj_weight": torch.randn(dim, rank) * 0.3, "out_proj_weight": torch.randn(dim, dim) * 0.1,
            "A": -torch.rand(dim, n) - 0.5, "D": torch.randn(dim), "delta_bias": torch.randn(dim) * 0.1}
    ours = {k: v.clone().requires_grad_() for k, v in base.items()}
    ref = {k: v.clone().requires_grad_() for k, v in base.items()}

    def call(fn: Callable[..., torch.Tensor], t: Dict[str, torch.Tensor]) -> torch.Tensor:
        return fn(t["xz"], t["conv1d_weight"], t["conv1d_bias"], t["x_proj_weight"], t["delta_proj_weight"],
                  t["out_proj_weight"], None, t["A"], None, None, t["D"], delta_bias=t["delta_bias"],
                  delta_softplus=True)

    out, out_ref = call(mamba_inner_fn, ours), call(mamba_inner_ref, ref)
    grad = torch.randn_like(out)
    out.backward(grad)
    out_ref.backward(grad)
    return {"errors": {"out": _rel(out, out_ref), **{f"d{k}": _rel(ours[k].grad, ref[k].grad) for k in base}}}


def _paths_and_step(cls: Any, fused: Dict[str, Any], unfused: Dict[str, Any], **kwargs: Any) -> Dict[str, float]:
    torch.manual_seed(0)
    module, reference = cls(**kwargs, **fused), cls(**kwargs, **unfused)
    reference.load_state_dict(module.state_dict())
    x = torch.randn(2, 24, kwargs["d_model"], requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    out, out_ref = module(x), reference(x_ref)
    grad = torch.randn_like(out)
    out.backward(grad)
    out_ref.backward(grad)
    params = dict(reference.named_parameters())
    errors = {"out": _rel(out, out_ref), "dx": _rel(x.grad, x_ref.grad),
              "dparams": max(_rel(p.grad, params[n].grad) for n, p in module.named_parameters())}
    with torch.no_grad():
        conv_state, ssm_state = module.allocate_inference_cache(2, 24)
        steps = [module.step(x[:, t:t + 1].detach(), conv_state, ssm_state)[0] for t in range(x.shape[1])]
    errors["step_vs_forward"] = _rel(torch.cat(steps, dim=1), out)
    return errors


def check_modules() -> Dict[str, Any]:
    """Mamba fused vs unfused and Mamba2 mem-eff vs chunked path (fwd + bwd), and step() vs forward."""
    from mamba_ssm import Mamba, Mamba2

    mamba = _paths_and_step(Mamba, {"use_fast_path": True}, {"use_fast_path": False}, d_model=32, d_state=8)
    mamba2 = _paths_and_step(Mamba2, {"use_mem_eff_path": True}, {"use_mem_eff_path": False},
                             d_model=64, d_state=16, headdim=16, chunk_size=16)
    return {"errors": {**{f"mamba.{k}": v for k, v in mamba.items()}, **{f"mamba2.{k}": v for k, v in mamba2.items()}}}


def check_generate() -> Dict[str, Any]:
    """A tiny random MambaLMHeadModel (Mamba1 and Mamba2 layers) generates greedily, consistent with forward."""
    from mamba_ssm.models.config_mamba import MambaConfig
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

    result: Dict[str, Any] = {}
    for layer, extra in (("Mamba1", {}), ("Mamba2", {"headdim": 16, "chunk_size": 16})):
        torch.manual_seed(0)
        config = MambaConfig(d_model=64, n_layer=2, vocab_size=50, pad_vocab_size_multiple=8,
                             ssm_cfg={"layer": layer, **extra})
        model = MambaLMHeadModel(config).eval()
        prompt = torch.randint(0, 50, (2, 5))
        out = model.generate(prompt, max_length=12, top_k=1, output_scores=True, return_dict_in_generate=True)
        with torch.no_grad():
            logits = model(out.sequences.clone()).logits
        result[layer] = {"type": type(out).__name__, "shape": list(out.sequences.shape),
                         "greedy_matches_forward": bool((logits[:, 4:-1].argmax(-1) == out.sequences[:, 5:]).all())}
    return result


def check_varlen() -> Dict[str, Any]:
    """Mamba2's varlen prefill (three sequences packed in one row, cu_seqlens + seq_idx, inference cache):
    each sequence's output and cached conv / SSM states against its own prefill."""
    from mamba_ssm import Mamba2
    from mamba_ssm.utils.generation import InferenceParams

    torch.manual_seed(0)
    module = Mamba2(d_model=32, d_state=16, headdim=16, chunk_size=8, layer_idx=0).eval()
    bounds = [0, 5, 6, 19]
    u = torch.randn(1, bounds[-1], 32)

    def prefill(x: torch.Tensor, batch: int, **kwargs: Any) -> list:
        params = InferenceParams(max_seqlen=32, max_batch_size=batch)
        params.key_value_memory_dict[0] = module.allocate_inference_cache(batch, 32)
        with torch.no_grad():
            return [module(x, inference_params=params, **kwargs), *params.key_value_memory_dict[0]]

    seq_idx = torch.cat([torch.full((e - s,), i, dtype=torch.int32) for i, (s, e) in enumerate(zip(bounds, bounds[1:]))])
    out, conv, ssm = prefill(u, 3, cu_seqlens=torch.tensor(bounds, dtype=torch.int32), seq_idx=seq_idx[None])
    errors: Dict[str, float] = {}
    for i, (s, e) in enumerate(zip(bounds, bounds[1:])):
        alone, conv_i, ssm_i = prefill(u[:, s:e], 1)
        errors[f"seq{i}.out"] = _rel(out[:, s:e], alone)
        errors[f"seq{i}.conv_state"] = _rel(conv[i], conv_i[0])
        errors[f"seq{i}.ssm_state"] = _rel(ssm[i], ssm_i[0])
    return {"errors": errors}


def check_distributed() -> Dict[str, Any]:
    """The distributed modules import; each entry point raises a RuntimeError naming what torch lacks.

    The modules are imported without running mamba_ssm/__init__ (which also imports transformers,
    and transformers 5 itself needs torch.distributed.ProcessGroup).
    """
    import importlib.util
    import types

    if "mamba_ssm" not in sys.modules:
        package = types.ModuleType("mamba_ssm")
        package.__path__ = list(importlib.util.find_spec("mamba_ssm").submodule_search_locations)
        sys.modules["mamba_ssm"] = package
    from mamba_ssm.distributed import distributed_utils, tensor_parallel

    messages = {}
    calls = {"all_gather_raw": lambda: distributed_utils.all_gather_raw(torch.zeros(2), None),
             "reduce_scatter_raw": lambda: distributed_utils.reduce_scatter_raw(torch.zeros(2), None),
             "ProcessGroup()": lambda: distributed_utils.ProcessGroup(),
             "ColumnParallelLinear": lambda: tensor_parallel.ColumnParallelLinear(4, 4, process_group=None)}
    for name, call in calls.items():
        try:
            call()
        except RuntimeError as error:
            messages[name] = str(error)
        else:
            messages[name] = None
    # introspection must not trip over the stand-in for torch.distributed (hasattr, getattr with a default)
    proxy = getattr(distributed_utils, "_jm_dist", None)
    introspection = None
    if proxy is not None:
        introspection = {"dunder": hasattr(proxy, "__wrapped__"), "unknown": getattr(proxy, "no_such_name", "default")}
    return {"messages": messages, "introspection": introspection}


def check_bridge() -> Dict[str, Any]:
    """Which functions the fused paths reach for causal-conv1d."""
    from mamba_ssm.ops import selective_scan_interface
    from mamba_ssm.ops.triton import ssd_combined

    return {"modules": {name: getattr(module.causal_conv1d_fwd_function, "__module__", None)
                        for name, module in (("selective_scan_interface", selective_scan_interface),
                                             ("ssd_combined", ssd_combined))}}


def check_fixed_b_state() -> Dict[str, Any]:
    """selective_scan_fn's final state with a fixed (dim, dstate) B against selective_scan_ref's."""
    from mamba_ssm.ops import selective_scan_interface as ssi

    torch.manual_seed(0)
    batch, dim, length, n = 2, 8, 24, 4
    u, delta = torch.randn(batch, dim, length), 0.5 * torch.rand(batch, dim, length)
    A, B, C = -torch.rand(dim, n) - 0.5, torch.randn(dim, n), torch.randn(dim, n)
    out, state = ssi.selective_scan_fn(u, delta, A, B, C, return_last_state=True)
    out_ref, state_ref = ssi.selective_scan_ref(u, delta, A, B, C, return_last_state=True)
    return {"errors": {"out": _rel(out, out_ref), "last_state": _rel(state, state_ref)},
            "module": getattr(ssi.selective_scan_cuda, "__name__", "?"),
            "standin": bool(getattr(ssi.selective_scan_cuda, "__jetson_mamba_standin__", False))}


def check_mamba3() -> Dict[str, Any]:
    """Mamba-3 MIMO needs TileLang: what constructing one says when its kernels cannot be imported."""
    from mamba_ssm.modules.mamba3 import Mamba3

    try:
        Mamba3(d_model=64, d_state=16, headdim=16, is_mimo=True)
    except Exception as error:
        return {"mimo_error": f"{type(error).__name__}: {error}"}
    return {"mimo_error": None}


def main(argv: list) -> int:
    if argv and argv[0] in ("--no-distributed", "--no-process-group"):
        _without_distributed(process_group=argv[0] == "--no-distributed")
        argv = argv[1:]
    results: Dict[str, Any] = {}
    for name in argv:
        try:
            results[name] = {"ok": True, **globals()[f"check_{name}"]()}
        except Exception as error:  # a check's failure is its result
            results[name] = {"ok": False, "error": f"{type(error).__name__}: {error}".splitlines()[0]}
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
