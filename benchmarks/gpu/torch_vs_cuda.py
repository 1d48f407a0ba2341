"""The portable torch kernels next to the compiled CUDA kernels on the lab GPU, in one command.

    python3 benchmarks/gpu/torch_vs_cuda.py [--repeats 20] [--json OUT.json]

Installs the compiled wheels from .carry/wheelhouse (mamba_ssm, causal_conv1d; --no-deps,
offline) when `selective_scan_cuda` does not import yet, then at B=8, D=2048, L=2048, N=16
(selective scan with z, D, delta_bias, softplus; causal conv1d width 4 with SiLU), fp32 and
bf16: checks that the torch and cuda backends agree, and times forward and forward+backward of
each with CUDA events (median over --repeats after warm-up), plus peak GPU memory.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
SHAPE = {"batch": 8, "dim": 2048, "L": 2048, "dstate": 16, "width": 4}


def ensure_compiled() -> None:
    import torch  # noqa: F401  (the extensions need torch's libraries loaded first)

    try:
        import causal_conv1d_cuda  # noqa: F401
        import selective_scan_cuda  # noqa: F401
        return
    except ImportError:
        wheels = sorted(glob.glob(str(ROOT / ".carry" / "wheelhouse" / "*.whl")))
        if not wheels:
            raise SystemExit("no compiled kernels and no wheels in .carry/wheelhouse; run scripts/device.sh") from None
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", *wheels], check=True)
    import importlib

    importlib.invalidate_caches()


def time_cuda(fn: Callable[[], Any], repeats: int) -> Dict[str, float]:
    import torch

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    times: List[float] = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return {"median_ms": statistics.median(times), "min_ms": min(times),
            "peak_mib": (torch.cuda.max_memory_allocated() - base) / 2**20}


def scan_inputs(dtype: Any) -> Dict[str, Any]:
    import torch

    b, d, L, n = SHAPE["batch"], SHAPE["dim"], SHAPE["L"], SHAPE["dstate"]
    g = torch.Generator(device="cuda").manual_seed(0)

    def r(*s: int, dt: Any = dtype, scale: float = 1.0) -> Any:
        return (torch.randn(*s, device="cuda", generator=g) * scale).to(dt)

    return {"u": r(b, d, L), "delta": r(b, d, L, scale=0.5), "A": -torch.arange(1, n + 1, device="cuda",
            dtype=torch.float32).repeat(d, 1), "B": r(b, n, L), "C": r(b, n, L),
            "D": torch.ones(d, device="cuda"), "z": r(b, d, L), "delta_bias": r(d, dt=torch.float32, scale=0.5) - 3}


def rel_err(a: Any, b: Any) -> float:
    return ((a.double() - b.double()).abs().max() / (b.double().abs().max() + 1e-12)).item()


def bench_scan(dtype: Any, repeats: int) -> List[Dict[str, Any]]:
    from jetson_mamba.ops.selective_scan import cuda as scan_cuda
    from jetson_mamba.ops.selective_scan import torch as scan_torch

    x = scan_inputs(dtype)
    args = [x[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    dout = x["u"].clone()
    rows = []
    outs = {}
    for name, mod in (("cuda", scan_cuda), ("torch", scan_torch)):
        outs[name] = (mod.selective_scan_forward(*args, True)[1], mod.selective_scan_backward(*args, True, dout))
        fwd = time_cuda(lambda mod=mod: mod.selective_scan_forward(*args, True), repeats)
        both = time_cuda(lambda mod=mod: (mod.selective_scan_forward(*args, True),
                                          mod.selective_scan_backward(*args, True, dout)), repeats)
        rows.append({"op": "selective_scan", "dtype": str(dtype), "backend": name, "fwd": fwd, "fwd+bwd": both})
    agree = {"out_z": rel_err(outs["torch"][0], outs["cuda"][0])}
    names = ("du", "ddelta", "dA", "dB", "dC", "dD", "ddelta_bias", "dz")
    agree.update({n: rel_err(t, c) for n, t, c in zip(names, outs["torch"][1], outs["cuda"][1])})
    for row in rows:
        row["torch_vs_cuda_rel_err"] = agree
    return rows


def bench_conv(dtype: Any, repeats: int) -> List[Dict[str, Any]]:
    import torch

    from jetson_mamba.ops.causal_conv1d import cuda as conv_cuda
    from jetson_mamba.ops.causal_conv1d import torch as conv_torch

    b, d, L, w = SHAPE["batch"], SHAPE["dim"], SHAPE["L"], SHAPE["width"]
    x = torch.randn(b, d, L, device="cuda", dtype=dtype)
    weight, bias = torch.randn(d, w, device="cuda"), torch.randn(d, device="cuda")
    dout = torch.randn_like(x)
    rows, outs = [], {}
    for name, mod in (("cuda", conv_cuda), ("torch", conv_torch)):
        outs[name] = mod.causal_conv1d_forward(x, weight, bias, None, None, False, True)[0]
        fwd = time_cuda(lambda mod=mod: mod.causal_conv1d_forward(x, weight, bias, None, None, False, True), repeats)
        both = time_cuda(lambda mod=mod: (mod.causal_conv1d_forward(x, weight, bias, None, None, False, True),
                                          mod.causal_conv1d_backward(x, weight, bias, dout, None, None, None, True)),
                         repeats)
        rows.append({"op": "causal_conv1d", "dtype": str(dtype), "backend": name, "fwd": fwd, "fwd+bwd": both})
    for row in rows:
        row["torch_vs_cuda_rel_err"] = {"out": rel_err(outs["torch"], outs["cuda"])}
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", type=Path, default=Path(os.environ.get("OUT", ".")) / "torch_vs_cuda.json")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():  # checked first: never install wheels on a machine without a GPU
        raise SystemExit("no CUDA device")
    ensure_compiled()
    rows: List[Dict[str, Any]] = []
    for dtype in (torch.float32, torch.bfloat16):
        rows += bench_scan(dtype, args.repeats)
        rows += bench_conv(dtype, args.repeats)
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  shape {SHAPE}")
    print(f"{'op':15} {'dtype':15} {'backend':8} {'fwd ms':>9} {'fwd+bwd ms':>11} {'peak MiB':>9}  max rel err torch vs cuda")
    for r in rows:
        worst = max(r["torch_vs_cuda_rel_err"].values())
        print(f"{r['op']:15} {r['dtype']:15} {r['backend']:8} {r['fwd']['median_ms']:9.2f} "
              f"{r['fwd+bwd']['median_ms']:11.2f} {r['fwd+bwd']['peak_mib']:9.0f}  {worst:.2e}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                     "shape": SHAPE, "rows": rows}, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
