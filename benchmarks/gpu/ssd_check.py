"""GPU check of jetson_mamba's portable Mamba2/SSD ops against mamba-ssm's own Triton kernels.

On the lab machine (H200, torch 2.11 + triton 3.6, no network), from the repository root:

    python3 benchmarks/gpu/ssd_check.py

Uses an installed mamba_ssm if there is one, else installs .carry/wheelhouse/mamba_ssm-*.whl and
causal_conv1d-*.whl into a temporary --target folder (no deps, no index). mamba_ssm's package
__init__ is bypassed (it imports transformers' generation API that transformers 5 removed).
For mamba_chunk_scan_combined, mamba_split_conv1d_scan_combined, rmsnorm_fn and
selective_state_update it compares outputs and every gradient of ours (fp32 and bf16 inputs) and
of upstream's Triton kernels with our fp64 run on the GPU (itself checked against a step-by-step
float64 recurrence in tests/ops/test_ssd.py), then times forward and forward+backward at a
Mamba2 (d_model=1024) shape side by side, with peak memory. Prints a table, writes
benchmarks/gpu/results/ssd_check.json; exit 0 when every error is within tolerance.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from torch_vs_cuda import time_cuda  # noqa: E402  (the same CUDA-event timing as the scan and conv numbers)

TOLERANCE = {"float32": 2e-3, "bfloat16": 3e-2}  # relative L2 error against the fp64 run
DEVICE = "cuda"


def import_upstream() -> Dict[str, Any]:
    """mamba_ssm's Triton SSD functions, without running mamba_ssm/__init__.py."""
    import importlib
    import importlib.util

    spec = importlib.util.find_spec("mamba_ssm")
    if spec is None:
        wheels = sorted((ROOT / ".carry" / "wheelhouse").glob("*.whl"))
        if not wheels:
            raise SystemExit("ssd_check: no mamba_ssm installed and no wheels in .carry/wheelhouse")
        target = tempfile.mkdtemp(prefix="ssd_check_")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", target,
                        *map(str, wheels)], check=True)
        sys.path.insert(0, target)
        spec = importlib.util.find_spec("mamba_ssm")
    assert spec is not None and spec.submodule_search_locations is not None
    package = types.ModuleType("mamba_ssm")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["mamba_ssm"] = package
    combined = importlib.import_module("mamba_ssm.ops.triton.ssd_combined")
    norm = importlib.import_module("mamba_ssm.ops.triton.layernorm_gated")
    update = importlib.import_module("mamba_ssm.ops.triton.selective_state_update")
    return {"mamba_chunk_scan_combined": combined.mamba_chunk_scan_combined,
            "mamba_split_conv1d_scan_combined": combined.mamba_split_conv1d_scan_combined,
            "rmsnorm_fn": norm.rmsnorm_fn, "selective_state_update": update.selective_state_update}


def rel(a: Any, b: Any) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def run_with_grads(fn: Callable[..., Any], inputs: Dict[str, Any], dtype: Any, float_keys: Tuple[str, ...],
                   seed: int = 0) -> Tuple[List[Any], Dict[str, Any]]:
    """Call fn on copies of inputs (float_keys cast to dtype), backprop fixed random cotangents."""
    import torch

    leaves = {k: (v.to(dtype) if k in float_keys else v.clone()).detach().requires_grad_(v.is_floating_point())
              for k, v in inputs.items()}
    outs = fn(**leaves)
    outs = list(outs) if isinstance(outs, tuple) else [outs]
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    cot = [torch.randn(o.shape, device=DEVICE, generator=g, dtype=torch.float32).to(o.dtype) for o in outs]
    torch.autograd.backward(outs, cot)
    return outs, {k: v.grad for k, v in leaves.items() if v.grad is not None}


def compare(name: str, ours: Callable[..., Any], theirs: Callable[..., Any], inputs: Dict[str, Any],
            float_keys: Tuple[str, ...], rows: List[Dict[str, Any]]) -> None:
    import torch

    ref_out, ref_grads = run_with_grads(ours, {k: v.double() if v.is_floating_point() else v
                                               for k, v in inputs.items()}, torch.float64, float_keys)
    for dtype in (torch.float32, torch.bfloat16):
        dname = str(dtype).split(".")[-1]
        for impl, fn in (("jetson_mamba", ours), ("mamba_ssm", theirs)):
            try:
                outs, grads = run_with_grads(fn, inputs, dtype, float_keys)
            except Exception as exc:  # report, do not hide: upstream may not support a combination
                rows.append({"op": name, "dtype": dname, "impl": impl, "error": f"{type(exc).__name__}: {exc}"})
                continue
            errs = {f"out{i}": rel(o, r) for i, (o, r) in enumerate(zip(outs, ref_out))}
            errs.update({f"d{k}": rel(v, ref_grads[k]) for k, v in grads.items() if k in ref_grads})
            worst = max(errs.values())
            rows.append({"op": name, "dtype": dname, "impl": impl, "max_rel_err": worst,
                         "ok": worst < TOLERANCE[dname], "errors": errs})


def mamba2_inputs(batch: int, seqlen: int, nheads: int, headdim: int, ngroups: int, dstate: int) -> Dict[str, Any]:
    import torch

    g = torch.Generator(device=DEVICE).manual_seed(0)

    def rnd(*shape: int, scale: float = 1.0) -> Any:
        return torch.randn(*shape, device=DEVICE, generator=g) * scale

    return {"x": rnd(batch, seqlen, nheads, headdim), "dt": rnd(batch, seqlen, nheads, scale=0.5) - 1,
            "A": -torch.rand(nheads, device=DEVICE, generator=g) * 4 - 0.5,
            "B": rnd(batch, seqlen, ngroups, dstate), "C": rnd(batch, seqlen, ngroups, dstate),
            "D": rnd(nheads), "z": rnd(batch, seqlen, nheads, headdim), "dt_bias": rnd(nheads, scale=0.3),
            "initial_states": rnd(batch, nheads, headdim, dstate, scale=0.5)}


def correctness(up: Dict[str, Any], rows: List[Dict[str, Any]]) -> None:
    import torch

    import jetson_mamba.ops.ssd as ours

    scan_inputs = mamba2_inputs(2, 1000, 8, 64, 2, 64)  # seqlen not a multiple of the chunk

    def scan(impl: Callable[..., Any]) -> Callable[..., Any]:
        return lambda **t: impl(t["x"], t["dt"], t["A"], t["B"], t["C"], 256, D=t["D"], z=t["z"],
                                dt_bias=t["dt_bias"], initial_states=t["initial_states"], dt_softplus=True,
                                return_final_states=True)

    compare("mamba_chunk_scan_combined", scan(ours.mamba_chunk_scan_combined), scan(up["mamba_chunk_scan_combined"]),
            scan_inputs, ("x", "B", "C", "z"), rows)

    g = torch.Generator(device=DEVICE).manual_seed(1)
    nheads, headdim, ngroups, dstate, dim = 8, 64, 2, 64, 512
    conv_dim = dim + 2 * ngroups * dstate
    split_inputs = {
        "zxbcdt": torch.randn(2, 700, 2 * dim + 2 * ngroups * dstate + nheads, device=DEVICE, generator=g),
        "conv1d_weight": torch.randn(conv_dim, 4, device=DEVICE, generator=g) * 0.3,
        "conv1d_bias": torch.randn(conv_dim, device=DEVICE, generator=g) * 0.1,
        "dt_bias": torch.randn(nheads, device=DEVICE, generator=g) * 0.3 - 1,
        "A": -torch.rand(nheads, device=DEVICE, generator=g) * 4 - 0.5, "D": torch.randn(nheads, device=DEVICE, generator=g),
        "rmsnorm_weight": torch.rand(dim, device=DEVICE, generator=g) + 0.5,
        "outproj_weight": torch.randn(256, dim, device=DEVICE, generator=g) * 0.05,
    }

    def split(impl: Callable[..., Any]) -> Callable[..., Any]:
        return lambda **t: impl(t["zxbcdt"], t["conv1d_weight"], t["conv1d_bias"], t["dt_bias"], t["A"], t["D"], 256,
                                rmsnorm_weight=t["rmsnorm_weight"], rmsnorm_eps=1e-5, outproj_weight=t["outproj_weight"],
                                headdim=headdim, ngroups=ngroups, norm_before_gate=False)

    compare("mamba_split_conv1d_scan_combined", split(ours.mamba_split_conv1d_scan_combined),
            split(up["mamba_split_conv1d_scan_combined"]), split_inputs, ("zxbcdt", "outproj_weight"), rows)

    norm_inputs = {"x": torch.randn(4, 300, 512, device=DEVICE, generator=g),
                   "weight": torch.rand(512, device=DEVICE, generator=g) + 0.5,
                   "z": torch.randn(4, 300, 512, device=DEVICE, generator=g)}

    def norm(impl: Callable[..., Any]) -> Callable[..., Any]:
        return lambda **t: impl(t["x"], t["weight"], None, z=t["z"], eps=1e-5, group_size=256, norm_before_gate=False)

    compare("rmsnorm_fn", norm(ours.rmsnorm_fn), norm(up["rmsnorm_fn"]), norm_inputs, ("x", "z"), rows)

    # selective_state_update: forward only (it updates the state in place, no autograd upstream).
    state = torch.randn(4, 8, 64, 32, device=DEVICE, generator=g)
    step = {"x": torch.randn(4, 8, 64, device=DEVICE, generator=g), "dt": torch.randn(4, 8, 64, device=DEVICE, generator=g),
            "A": (-torch.rand(8, 1, 1, device=DEVICE, generator=g) * 4).expand(8, 64, 32),
            "B": torch.randn(4, 2, 32, device=DEVICE, generator=g), "C": torch.randn(4, 2, 32, device=DEVICE, generator=g),
            "D": torch.randn(8, 64, device=DEVICE, generator=g), "z": torch.randn(4, 8, 64, device=DEVICE, generator=g),
            "dt_bias": torch.randn(8, 64, device=DEVICE, generator=g)}
    ref_state = state.double()
    ref = ours.selective_state_update(ref_state, **{k: v.double() for k, v in step.items()}, dt_softplus=True)
    for impl, fn in (("jetson_mamba", ours.selective_state_update), ("mamba_ssm", up["selective_state_update"])):
        s = state.clone()
        out = fn(s, **step, dt_softplus=True)
        worst = max(rel(out, ref), rel(s, ref_state))
        rows.append({"op": "selective_state_update", "dtype": "float32", "impl": impl, "max_rel_err": worst,
                     "ok": worst < TOLERANCE["float32"]})


def scan_once(fn: Callable[..., Any], t: Dict[str, Any], backward: bool) -> None:
    out = fn(t["x"], t["dt"], t["A"], t["B"], t["C"], 256, D=t["D"], z=t["z"], dt_bias=t["dt_bias"], dt_softplus=True)
    if backward:
        out.backward(out.detach().clone().fill_(1.0))


def timing(up: Dict[str, Any], rows: List[Dict[str, Any]]) -> None:
    """Mamba2(d_model=1024) mixer shape: B=8, L=2048, 32 heads x 64, ngroups 1, dstate 128, bf16."""

    import jetson_mamba.ops.ssd as ours

    t = mamba2_inputs(8, 2048, 32, 64, 1, 128)
    t = {k: (v.bfloat16() if k in ("x", "B", "C", "z") else v) for k, v in t.items()}
    for impl, fn in (("jetson_mamba", ours.mamba_chunk_scan_combined), ("mamba_ssm", up["mamba_chunk_scan_combined"])):
        for mode in ("forward", "forward+backward"):
            leaves = {k: v.detach().requires_grad_(mode != "forward") for k, v in t.items()}
            measured = time_cuda(functools.partial(scan_once, fn, leaves, mode != "forward"), 10)
            rows.append({"op": "timing mamba_chunk_scan_combined B8 L2048 H32 P64 N128 bf16", "impl": impl,
                         "mode": mode, "median_ms": measured["median_ms"], "peak_extra_MiB": measured["peak_mib"]})


def main() -> int:
    """`--dry-run` checks this script on the CPU, comparing jetson_mamba with itself (no timing)."""
    global DEVICE
    import torch

    rows: List[Dict[str, Any]] = []
    if "--dry-run" in sys.argv:
        import jetson_mamba.ops.ssd as ours

        DEVICE = "cpu"
        print("dry run on the CPU: the 'mamba_ssm' rows are jetson_mamba again (checks this script only)")
        correctness({name: getattr(ours, name) for name in ("mamba_chunk_scan_combined", "rmsnorm_fn",
                     "mamba_split_conv1d_scan_combined", "selective_state_update")}, rows)
    elif not torch.cuda.is_available():
        raise SystemExit("ssd_check: needs a CUDA GPU (or --dry-run)")
    else:
        up = import_upstream()
        correctness(up, rows)
        timing(up, rows)
    for r in rows:
        if "median_ms" in r:
            print(f"{r['op']:60s} {r['impl']:13s} {r['mode']:17s} {r['median_ms']:9.3f} ms  peak +{r['peak_extra_MiB']:.0f} MiB")
        elif "error" in r:
            print(f"{r['op']:34s} {r['dtype']:9s} {r['impl']:13s} ERROR {r['error']}")
        else:
            print(f"{r['op']:34s} {r['dtype']:9s} {r['impl']:13s} max rel err {r['max_rel_err']:.2e} "
                  f"{'ok' if r['ok'] else 'TOO LARGE'}")
    if DEVICE == "cuda":
        out = ROOT / "benchmarks" / "gpu" / "results" / "ssd_check.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows},
                                  indent=1, default=str))
    ours_ok = all(r.get("ok", True) for r in rows if r.get("impl") == "jetson_mamba" and "error" not in r)
    ours_ran = not any("error" in r for r in rows if r.get("impl") == "jetson_mamba")
    return 0 if ours_ok and ours_ran else 1


if __name__ == "__main__":
    sys.exit(main())
