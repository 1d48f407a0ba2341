"""Triton kernels vs the compiled CUDA kernels, side by side in one process, on one GPU.

    python benchmarks/bench_triton_gpu.py [--sweep] [--cold-start] [--json results.json]

Times are medians of CUDA-event-timed calls after warm-up, cycling through several input sets
so that no call finds its inputs in L2. The compiled kernels are the `selective_scan_cuda` and
`causal_conv1d_cuda` extensions of the mamba-ssm / causal-conv1d wheels, called directly (the
mamba_ssm package itself need not import). Every timed pair is also compared numerically.
`--sweep` times every candidate launch config of each kernel (to pick the defaults);
`--cold-start` measures the first call of a fresh process with an empty and a warm Triton cache.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from jetson_mamba.ops.causal_conv1d import triton as conv_triton
from jetson_mamba.ops.selective_scan import triton as scan_triton

N_SETS = 3
Row = Dict[str, Any]


def median_ms(fn: Callable[..., Any], sets: Sequence[Tuple[Any, ...]], warmup: int = 5, iters: int = 30) -> float:
    """Median time of fn(*sets[i % len(sets)]) in ms, each call timed by its own CUDA events."""
    for i in range(warmup):
        fn(*sets[i % len(sets)])
    events = []
    for i in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(*sets[i % len(sets)])
        end.record()
        events.append((start, end))
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in events)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|; inf when a has non-finite values."""
    if not torch.isfinite(a).all():
        return float("inf")
    return ((a.float() - b.float()).abs().max() / (b.float().abs().max() + 1e-12)).item()


@contextmanager
def only_config(kernel: Any, config: Any) -> Iterator[None]:
    """Run an autotuned kernel with exactly one config (no tuning)."""
    saved, saved_cache = kernel.configs, dict(kernel.cache)
    kernel.configs, kernel.cache = [config], {}
    try:
        yield
    finally:
        kernel.configs, kernel.cache = saved, saved_cache


# ---------------------------------------------------------------- selective scan
def scan_inputs(batch: int, dim: int, L: int, N: int, groups: int, dtype: torch.dtype, with_z: bool,
                seed: int) -> Tuple[torch.Tensor, ...]:
    g = torch.Generator(device="cuda").manual_seed(seed)

    def rnd(*shape: int, scale: float = 1.0, dt: torch.dtype = dtype) -> torch.Tensor:
        return (torch.randn(*shape, generator=g, device="cuda") * scale).to(dt)

    bc_shape = (batch, groups, N, L)  # the compiled kernel takes variable B/C as (batch, groups, N, L)
    u, delta = rnd(batch, dim, L), rnd(batch, dim, L, scale=0.5)
    A = -torch.rand(dim, N, generator=g, device="cuda") * 2 - 0.1
    B, C = rnd(*bc_shape), rnd(*bc_shape)
    D, bias = rnd(dim, dt=torch.float32), rnd(dim, scale=0.3, dt=torch.float32)
    z = rnd(batch, dim, L) if with_z else None
    dout = rnd(batch, dim, L)
    return u, delta, A, B, C, D, z, bias, dout


def cuda_scan_fwd(ext: Any, u, delta, A, B, C, D, z, bias, dout):  # noqa: ANN001, ANN201
    out, x, *rest = ext.fwd(u, delta, A, B, C, D, z, bias, True)
    return (rest[0] if z is not None else out), x[:, :, -1, 1::2], out, x


def cuda_scan_fwd_bwd(ext: Any, u, delta, A, B, C, D, z, bias, dout):  # noqa: ANN001, ANN201
    _, _, out, x = cuda_scan_fwd(ext, u, delta, A, B, C, D, z, bias, dout)
    return ext.bwd(u, delta, A, B, C, D, z, bias, dout, x, out, None, True, False)


def triton_scan_fwd(u, delta, A, B, C, D, z, bias, dout):  # noqa: ANN001, ANN201
    out, out_z, last = scan_triton.selective_scan_forward(u, delta, A, B, C, D, z, bias, True)
    return (out_z if z is not None else out), last


def triton_scan_fwd_bwd(u, delta, A, B, C, D, z, bias, dout):  # noqa: ANN001, ANN201
    triton_scan_fwd(u, delta, A, B, C, D, z, bias, dout)
    return scan_triton.selective_scan_backward(u, delta, A, B, C, D, z, bias, True, dout)


def bench_scan(ext: Any, name: str, batch: int, dim: int, L: int, groups: int, dtype: torch.dtype,
               with_z: bool) -> Row:
    sets = [scan_inputs(batch, dim, L, 16, groups, dtype, with_z, seed) for seed in range(N_SETS)]
    first = sets[0]
    ref_fwd, tri_fwd = cuda_scan_fwd(ext, *first), triton_scan_fwd(*first)
    errs = {"out": rel_err(tri_fwd[0], ref_fwd[0]), "last_state": rel_err(tri_fwd[1], ref_fwd[1])}
    ref_bwd, tri_bwd = cuda_scan_fwd_bwd(ext, *first), triton_scan_fwd_bwd(*first)
    names = ["du", "ddelta", "dA", "dB", "dC", "dD", "ddelta_bias"] + (["dz"] if with_z else [])
    for n, r, t in zip(names, ref_bwd, tri_bwd[:7] + ((tri_bwd[7],) if with_z else ())):
        errs[n] = rel_err(t, r)
    row: Row = {"op": name, "dtype": str(dtype).replace("torch.", ""),
                "shape": f"B={batch} D={dim} L={L} N=16" + (f" K={groups}" if groups > 1 else ""),
                "max_rel_err": max(errs.values()), "errors": errs}
    row["cuda_fwd_ms"] = median_ms(lambda *a: cuda_scan_fwd(ext, *a), sets)
    row["triton_fwd_ms"] = median_ms(triton_scan_fwd, sets)
    row["cuda_fwdbwd_ms"] = median_ms(lambda *a: cuda_scan_fwd_bwd(ext, *a), sets, iters=20)
    row["triton_fwdbwd_ms"] = median_ms(triton_scan_fwd_bwd, sets, iters=20)
    row["fwd_ratio"] = row["cuda_fwd_ms"] / row["triton_fwd_ms"]
    row["fwdbwd_ratio"] = row["cuda_fwdbwd_ms"] / row["triton_fwdbwd_ms"]
    return row


# ---------------------------------------------------------------- causal conv1d
def conv_inputs(dtype: torch.dtype, channel_last: bool, seed: int, batch: int = 8, dim: int = 2048,
                L: int = 2048) -> Tuple[torch.Tensor, ...]:
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(batch, L, dim, generator=g, device="cuda").to(dtype).transpose(1, 2) if channel_last else \
        torch.randn(batch, dim, L, generator=g, device="cuda").to(dtype)
    w = torch.randn(dim, 4, generator=g, device="cuda").to(dtype) * 0.5
    b = torch.randn(dim, generator=g, device="cuda").to(dtype)
    dout = torch.randn_like(x)
    return x, w, b, dout


def cuda_conv_fwd(ext: Any, x, w, b, dout):  # noqa: ANN001, ANN201
    out = torch.empty_like(x)
    ext.causal_conv1d_fwd(x, w, b, None, None, out, None, True)
    return out


def cuda_conv_bwd(ext: Any, x, w, b, dout):  # noqa: ANN001, ANN201
    dx = torch.empty_like(x)
    dw = torch.zeros_like(w, dtype=torch.float32)
    db = torch.zeros_like(b, dtype=torch.float32)
    ext.causal_conv1d_bwd(x, w, b, dout, None, None, None, dx, dw, db, None, True)
    return dx, dw, db


def triton_conv_fwd(x, w, b, dout):  # noqa: ANN001, ANN201
    return conv_triton.causal_conv1d_forward(x, w, b, None, None, False, True)[0]


def triton_conv_bwd(x, w, b, dout):  # noqa: ANN001, ANN201
    return conv_triton.causal_conv1d_backward(x, w, b, dout, None, None, None, True)[:3]


def bench_conv(ext: Any, dtype: torch.dtype, channel_last: bool) -> Row:
    sets = [conv_inputs(dtype, channel_last, seed) for seed in range(N_SETS)]
    errs = {"out": rel_err(triton_conv_fwd(*sets[0]), cuda_conv_fwd(ext, *sets[0]))}
    for n, t, r in zip(("dx", "dweight", "dbias"), triton_conv_bwd(*sets[0]), cuda_conv_bwd(ext, *sets[0])):
        errs[n] = rel_err(t, r)
    row: Row = {"op": "causal_conv1d width 4 silu " + ("channel-last" if channel_last else "channel-first"),
                "dtype": str(dtype).replace("torch.", ""), "shape": "B=8 D=2048 L=2048",
                "max_rel_err": max(errs.values()), "errors": errs}
    row["cuda_fwd_ms"] = median_ms(lambda *a: cuda_conv_fwd(ext, *a), sets)
    row["triton_fwd_ms"] = median_ms(triton_conv_fwd, sets)
    row["cuda_bwd_ms"] = median_ms(lambda *a: cuda_conv_bwd(ext, *a), sets)
    row["triton_bwd_ms"] = median_ms(triton_conv_bwd, sets)
    row["fwd_ratio"] = row["cuda_fwd_ms"] / row["triton_fwd_ms"]
    row["bwd_ratio"] = row["cuda_bwd_ms"] / row["triton_bwd_ms"]
    return row


# ---------------------------------------------------------------- config sweep
def sweep(budget_s: float) -> List[Row]:
    """Time each candidate config of each kernel at the target shapes (stops when the budget is spent)."""
    import triton

    t_end = time.time() + budget_s
    rows: List[Row] = []

    def run(kernel: Any, label: str, cfgs: List[Tuple[int, int, int]], keys: Tuple[str, str],
            fn: Callable[..., Any], sets: Sequence[Tuple[Any, ...]]) -> None:
        for a, b, w in cfgs:
            if time.time() > t_end:
                rows.append({"kernel": label, "config": "skipped: sweep budget spent"})
                return
            cfg = triton.Config({keys[0]: a, keys[1]: b}, num_warps=w)
            with only_config(kernel, cfg):
                try:
                    ms = median_ms(fn, sets, warmup=2, iters=10)
                except Exception as exc:  # a config that does not fit (registers, smem) is a result too
                    rows.append({"kernel": label, "config": f"{keys[0]}={a} {keys[1]}={b} w={w}",
                                 "error": str(exc)[:200]})
                    continue
            rows.append({"kernel": label, "config": f"{keys[0]}={a} {keys[1]}={b} w={w}", "ms": ms})
            print(f"  sweep {label:28s} {keys[0]}={a:<3d} {keys[1]}={b:<4d} w={w}: {ms:.3f} ms", flush=True)

    fwd_cfgs = [(1, 64, 2), (1, 128, 4), (1, 256, 4), (1, 256, 8), (2, 64, 4), (2, 128, 4), (4, 32, 4),
                (4, 64, 4), (4, 64, 8), (8, 32, 4), (8, 64, 8), (16, 32, 8)]
    bwd_cfgs = [(1, 32, 2), (1, 64, 4), (1, 128, 4), (2, 32, 4), (2, 64, 4), (4, 32, 4), (4, 32, 8)]
    for dtype in (torch.bfloat16, torch.float32):
        sets = [scan_inputs(8, 2048, 2048, 16, 1, dtype, True, s) for s in range(2)]
        run(scan_triton._fwd, f"scan fwd {dtype}", fwd_cfgs, ("BD", "T"),
            lambda *a: triton_scan_fwd(*a), sets)
    for dtype in (torch.bfloat16, torch.float32):
        sets = [scan_inputs(8, 2048, 2048, 16, 1, dtype, True, s) for s in range(2)]
        triton_scan_fwd(*sets[0])
        run(scan_triton._bwd, f"scan bwd {dtype}", bwd_cfgs, ("BD", "T"),
            lambda *a: scan_triton.selective_scan_backward(*a[:8], True, a[8]), sets)
    sets = [scan_inputs(8, 512, 6400, 16, 4, torch.float32, False, s) for s in range(2)]
    run(scan_triton._fwd, "yolo K=4 fwd float32", fwd_cfgs[:8], ("BD", "T"), lambda *a: triton_scan_fwd(*a), sets)
    conv_cfgs = {"first": [(4, 256, 4), (8, 256, 4), (16, 256, 4), (4, 512, 4), (8, 512, 8), (16, 128, 4),
                           (32, 64, 4), (2, 1024, 8)],
                 "last": [(64, 32, 4), (128, 16, 4), (32, 64, 4), (128, 32, 8), (64, 64, 8), (256, 16, 8),
                          (32, 32, 4), (256, 8, 4)]}
    for layout in ("first", "last"):
        for dtype in (torch.bfloat16, torch.float32):
            sets = [conv_inputs(dtype, layout == "last", s) for s in range(2)]
            run(conv_triton._fwd[layout], f"conv fwd {layout} {dtype}", conv_cfgs[layout], ("BD", "BL"),
                triton_conv_fwd, sets)
            run(conv_triton._bwd[layout], f"conv bwd {layout} {dtype}", conv_cfgs[layout], ("BD", "BL"),
                triton_conv_bwd, sets)
    return rows


# ---------------------------------------------------------------- cold start
COLD = """
import time, torch
t0 = time.time()
from jetson_mamba.ops.selective_scan import triton as s
from jetson_mamba.ops.causal_conv1d import triton as c
t1 = time.time()
u = torch.randn(8, 2048, 2048, device="cuda", dtype=torch.bfloat16)
A = -torch.rand(2048, 16, device="cuda")
B = torch.randn(8, 16, 2048, device="cuda", dtype=torch.bfloat16)
w = torch.randn(2048, 4, device="cuda", dtype=torch.bfloat16)
torch.cuda.synchronize()
t2 = time.time()
s.selective_scan_forward(u, u, A, B, B, None, u, None, True)
torch.cuda.synchronize()
t3 = time.time()
c.causal_conv1d_forward(u, w, None, None, None, False, True)
torch.cuda.synchronize()
t4 = time.time()
print(f"{t1 - t0:.3f} {t3 - t2:.3f} {t4 - t3:.3f}")
"""


def cold_start() -> List[Row]:
    """First-call times (import, scan forward, conv forward) of fresh processes: empty cache, then warm."""
    rows: List[Row] = []
    with tempfile.TemporaryDirectory() as cache:
        for autotune in ("1", "0"):
            for run in ("empty cache", "warm cache"):
                if run == "empty cache":
                    subprocess.run(["rm", "-rf", cache])
                    os.makedirs(cache)
                env = dict(os.environ, TRITON_CACHE_DIR=cache, JETSON_MAMBA_TRITON_AUTOTUNE=autotune)
                proc = subprocess.run([sys.executable, "-c", COLD], env=env, capture_output=True, text=True,
                                      timeout=600)
                if proc.returncode != 0:
                    rows.append({"run": run, "autotune": autotune, "error": proc.stderr[-500:]})
                    continue
                imp, scan, conv = (float(v) for v in proc.stdout.split()[-3:])
                rows.append({"run": run, "autotune": autotune, "import_s": imp, "scan_fwd_first_call_s": scan,
                             "conv_fwd_first_call_s": conv})
                print(f"  cold start ({run}, autotune={autotune}): import {imp:.2f} s, scan fwd {scan:.2f} s, "
                      f"conv fwd {conv:.2f} s", flush=True)
    return rows


def markdown(rows: List[Row]) -> str:
    lines = ["| op | dtype | shape | CUDA fwd ms | Triton fwd ms | CUDA/Triton | CUDA bwd or fwd+bwd ms | "
             "Triton ms | CUDA/Triton | max rel err |", "|" + " --- |" * 10]
    for r in rows:
        second = "fwdbwd" if "cuda_fwdbwd_ms" in r else "bwd"
        lines.append(
            f"| {r['op']} | {r['dtype']} | {r['shape']} | {r['cuda_fwd_ms']:.3f} | {r['triton_fwd_ms']:.3f} | "
            f"{r['fwd_ratio']:.2f} | {r[f'cuda_{second}_ms']:.3f} ({second}) | {r[f'triton_{second}_ms']:.3f} | "
            f"{r[f'{second}_ratio']:.2f} | {r['max_rel_err']:.1e} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="store_true", help="time every candidate launch config")
    parser.add_argument("--sweep-budget", type=float, default=240.0, help="seconds the sweep may take")
    parser.add_argument("--cold-start", action="store_true", help="measure first-call JIT time")
    parser.add_argument("--skip-main", action="store_true", help="only the sweep / cold start")
    parser.add_argument("--json", help="write all results here")
    args = parser.parse_args(argv)
    import causal_conv1d_cuda
    import selective_scan_cuda

    result: Dict[str, Any] = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    import triton

    result["triton"] = triton.__version__
    print(f"{result['device']}  torch {result['torch']}  triton {result['triton']}  {result['date']}", flush=True)
    if args.cold_start:
        result["cold_start"] = cold_start()
    if args.sweep:
        result["sweep"] = sweep(args.sweep_budget)
    rows: List[Row] = []
    if not args.skip_main:
        for dtype in (torch.bfloat16, torch.float32):
            rows.append(bench_scan(selective_scan_cuda, "selective_scan z softplus", 8, 2048, 2048, 1, dtype, True))
            print(markdown(rows[-1:]), flush=True)
        for batch, dim, L in ((8, 512, 6400), (8, 1024, 1600), (1, 512, 6400), (32, 512, 6400)):
            rows.append(bench_scan(selective_scan_cuda, "selective_scan Mamba-YOLO K=4 no z", batch, dim, L, 4,
                                   torch.float32, False))
            print(markdown(rows[-1:]), flush=True)
        for dtype in (torch.bfloat16, torch.float32):
            for channel_last in (False, True):
                rows.append(bench_conv(causal_conv1d_cuda, dtype, channel_last))
                print(markdown(rows[-1:]), flush=True)
        print(markdown(rows))
    result["rows"] = rows
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
