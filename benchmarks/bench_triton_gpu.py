"""Triton kernels vs the compiled CUDA kernels, side by side in one process, on one GPU.

    python benchmarks/bench_triton_gpu.py [--sweep [--sweep-groups scan,conv,rows]] [--cold-start]
                                          [--block [--block-profile]]
                                          [--graph] [--standin] [--host] [--skip-scan] [--skip-conv]
                                          [--json results.json]

Times are medians of CUDA-event-timed calls after warm-up, cycling through several input sets
so that no call finds its inputs in L2. The compiled kernels are the `selective_scan_cuda` and
`causal_conv1d_cuda` extensions of the mamba-ssm / causal-conv1d wheels, called directly (the
mamba_ssm package itself need not import). Every timed pair is also compared numerically.
`--sweep` times every candidate launch config of each kernel (to pick the defaults);
`--cold-start` measures the first call of a fresh process with an empty and a warm Triton cache.
`--graph` also times each call replayed from a CUDA graph: GPU time without the host's launch cost
(a Triton launch from Python costs tens of microseconds, the size of the conv kernels themselves);
`--host` measures that host cost per call and profiles it.
`--edge` times Mamba-YOLO's scan at batch 1 (issue 18): the compiled kernel, ours one-pass and chunked
(sequence-parallel), and ours through the public custom op, eager and torch.compile(mode="reduce-overhead").
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
from unittest import mock

import torch

from jetson_mamba.ops import use_backend
from jetson_mamba.ops.causal_conv1d import triton as conv_triton
from jetson_mamba.ops.selective_scan import triton as scan_triton
from jetson_mamba.ops.triton_utils import jit_function

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


def graph_ms(fn: Callable[..., Any], sets: Sequence[Tuple[Any, ...]], iters: int = 30) -> Optional[float]:
    """Median time of one replay of fn(*set) captured in a CUDA graph (None when capture fails: the
    reason is printed). Call after median_ms, so autotuning and JIT happened outside the capture."""
    try:
        graphs = []
        for args in sets:
            fn(*args)
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                fn(*args)
            graphs.append(graph)
        return median_ms(lambda g: g.replay(), [(g,) for g in graphs], iters=iters)
    except Exception as exc:  # a benchmark row must not die with its optional column
        print(f"graph capture failed: {type(exc).__name__}: {exc}", flush=True)
        return None


def time_pair(row: Row, key: str, fn: Callable[..., Any], sets: Sequence[Tuple[Any, ...]], graph: bool,
              iters: int = 30) -> None:
    """row[key + '_ms'] (per-call events) and, with `graph` (--graph), row[key + '_graph_ms']."""
    row[f"{key}_ms"] = median_ms(fn, sets, iters=iters)
    if graph:
        row[f"{key}_graph_ms"] = graph_ms(fn, sets, iters=iters)


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
               with_z: bool, graph: bool = False) -> Row:
    sets = [scan_inputs(batch, dim, L, 16, groups, dtype, with_z, seed) for seed in range(N_SETS)]
    first = sets[0]
    triton_scan_fwd_bwd(*first)  # tunes: the outputs compared below come from remembered launches (launch_tuned)
    ref_fwd, tri_fwd = cuda_scan_fwd(ext, *first), triton_scan_fwd(*first)
    errs = {"out": rel_err(tri_fwd[0], ref_fwd[0]), "last_state": rel_err(tri_fwd[1], ref_fwd[1])}
    ref_bwd, tri_bwd = cuda_scan_fwd_bwd(ext, *first), triton_scan_fwd_bwd(*first)
    names = ["du", "ddelta", "dA", "dB", "dC", "dD", "ddelta_bias"] + (["dz"] if with_z else [])
    for n, r, t in zip(names, ref_bwd, tri_bwd[:7] + ((tri_bwd[7],) if with_z else ())):
        errs[n] = rel_err(t, r)
    row: Row = {"op": name, "dtype": str(dtype).replace("torch.", ""),
                "shape": f"B={batch} D={dim} L={L} N=16" + (f" K={groups}" if groups > 1 else ""),
                "max_rel_err": max(errs.values()), "errors": errs}
    time_pair(row, "cuda_fwd", lambda *a: cuda_scan_fwd(ext, *a), sets, graph)
    time_pair(row, "triton_fwd", triton_scan_fwd, sets, graph)
    time_pair(row, "cuda_fwdbwd", lambda *a: cuda_scan_fwd_bwd(ext, *a), sets, graph, iters=20)
    time_pair(row, "triton_fwdbwd", triton_scan_fwd_bwd, sets, graph, iters=20)
    row["configs"] = {"fwd": str(getattr(scan_triton._fwd, "best_config", None)),
                      "bwd": str(getattr(scan_triton._bwd, "best_config", None))}
    row["fwd_ratio"] = row["cuda_fwd_ms"] / row["triton_fwd_ms"]
    row["fwdbwd_ratio"] = row["cuda_fwdbwd_ms"] / row["triton_fwdbwd_ms"]
    return row


def env(**values: str) -> Any:
    """os.environ with `values` set, restored afterwards (JETSON_MAMBA_SCAN_CHUNKED is read per call)."""
    return mock.patch.dict(os.environ, values)


def _public_scan(u, delta, A, B, C, D, z, bias):  # noqa: ANN001, ANN201
    from jetson_mamba.ops import selective_scan_fn

    return selective_scan_fn(u, delta, A, B, C, D, z, bias, True)


def _fwd_bwd_of(forward: Callable[..., Any]) -> Callable[..., Any]:
    """fwd + bwd through autograd: the gradients of u, delta, A, B, C, D and delta_bias for dout."""
    def run(u, delta, A, B, C, D, z, bias, dout):  # noqa: ANN001, ANN202
        torch.compiler.cudagraph_mark_step_begin()
        leaves = (u, delta, A, B, C, D, bias)
        out = forward(u, delta, A, B, C, D, z, bias)
        return torch.autograd.grad(out, leaves, dout)
    return run


def _fwd_of(forward: Callable[..., Any]) -> Callable[..., Any]:
    def run(u, delta, A, B, C, D, z, bias, dout):  # noqa: ANN001, ANN202
        torch.compiler.cudagraph_mark_step_begin()
        with torch.no_grad():
            return forward(u, delta, A, B, C, D, z, bias)
    return run


def edge_scan(ext: Any, graph: bool, batch: int = 1) -> List[Row]:
    """Mamba-YOLO's scan (K=4, K*D=512, L=6400, N=16, fp32) at `batch`: the compiled kernel next to ours
    one-pass, chunked, and through the public custom op eager and under torch.compile(reduce-overhead)."""
    from jetson_mamba.ops.selective_scan import triton_chunked

    shape = f"B={batch} D=512 L=6400 N=16 K=4"
    sets = [scan_inputs(batch, 512, 6400, 16, 4, torch.float32, False, seed) for seed in range(N_SETS)]
    grad_sets = [tuple(t.detach().clone().requires_grad_() if t is not None and i < 8 else t
                       for i, t in enumerate(s)) for s in sets]
    ref = cuda_scan_fwd(ext, *sets[0])
    ref_grads = cuda_scan_fwd_bwd(ext, *sets[0])[:7]
    rows: List[Row] = []

    def add(name: str, fwd: Callable[..., Any], fwdbwd: Callable[..., Any], inputs: Sequence[Tuple[Any, ...]],
            out: Optional[torch.Tensor] = None, capture: bool = True, grads: Sequence[torch.Tensor] = ()) -> None:
        row: Row = {"variant": name, "shape": shape}
        try:
            time_pair(row, "fwd", fwd, inputs, graph and capture)
            time_pair(row, "fwdbwd", fwdbwd, inputs, graph and capture, iters=20)
        except Exception as exc:  # one variant failing (a compile error) must not lose the others
            row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        if out is not None:
            row["rel_err"] = rel_err(out, ref[0])
        if grads:  # du, ddelta, dA, dB, dC, dD, ddelta_bias against the compiled kernel's
            row["grad_rel_err"] = max(rel_err(g, r) for g, r in zip(grads, ref_grads))
        rows.append(row)
        print(row, flush=True)

    def chunked_fwd_one_pass_bwd(*a: Any) -> Any:  # the chunked path before its backward (#18 batch 1)
        with env(**{triton_chunked.ENV_VAR: "1", triton_chunked.LOOKBACK_VAR: "0"}):
            triton_scan_fwd(*a)
        with env(**{triton_chunked.ENV_VAR: "0"}):
            return scan_triton.selective_scan_backward(*a[:8], True, a[8])

    add("compiled kernel (selective_scan_cuda)", lambda *a: cuda_scan_fwd(ext, *a),
        lambda *a: cuda_scan_fwd_bwd(ext, *a), sets, ref[0])
    for label, setting in (("ours one-pass", "0"), ("ours chunked (3 launches) fwd+bwd", "1")):
        with env(**{triton_chunked.ENV_VAR: setting, triton_chunked.LOOKBACK_VAR: "0"}):
            chunk = triton_chunked.chunk_for(sets[0][0])
            add(f"{label} (chunk {chunk})", triton_scan_fwd, triton_scan_fwd_bwd, sets, triton_scan_fwd(*sets[0])[0],
                grads=triton_scan_fwd_bwd(*sets[0])[:7])
    add("ours chunked fwd, one-pass bwd", triton_scan_fwd, chunked_fwd_one_pass_bwd, sets,
        grads=chunked_fwd_one_pass_bwd(*sets[0])[:7])
    with env(**{triton_chunked.LOOKBACK_VAR: "1"}):  # the default: eagerly where eager_forward_chunks says so
        chunk = triton_chunked.chunk_for(sets[0][0], forward=True)
        add(f"ours look-back fwd (one launch, chunk {chunk}), chunked bwd", triton_scan_fwd, triton_scan_fwd_bwd,
            sets, triton_scan_fwd(*sets[0])[0], grads=triton_scan_fwd_bwd(*sets[0])[:7])
    with use_backend("triton"):
        add("ours, public op, eager (auto)", _fwd_of(_public_scan), _fwd_bwd_of(_public_scan), grad_sets,
            _fwd_of(_public_scan)(*sets[0]))
        torch._dynamo.reset()
        compiled = torch.compile(_public_scan, mode="reduce-overhead", fullgraph=True)
        start = time.perf_counter()
        first = _fwd_of(compiled)(*sets[0]).clone()
        compile_s = time.perf_counter() - start
        add("ours, public op, torch.compile reduce-overhead (auto)", _fwd_of(compiled), _fwd_bwd_of(compiled),
            grad_sets, first, capture=False)  # it captures its own CUDA graphs
        rows[-1]["first_call_s"] = compile_s
    base = rows[0]
    for row in rows:
        for key in ("fwd", "fwdbwd"):
            if f"{key}_ms" in row and f"{key}_ms" in base:
                row[f"{key}_ratio"] = base[f"{key}_ms"] / row[f"{key}_ms"]
    return rows


def edge_markdown(rows: List[Row]) -> str:
    lines = ["| variant | shape | fwd ms | compiled/ours | fwd+bwd ms | compiled/ours | graph fwd | graph fwd+bwd | "
             "rel err | grad rel err |", "|" + " --- |" * 10]

    def f(v: Any, spec: str = ".3f") -> str:
        return "-" if v is None else format(v, spec)

    for r in rows:
        lines.append(f"| {r['variant']} | {r['shape']} | {f(r.get('fwd_ms'))} | {f(r.get('fwd_ratio'), '.2f')} | "
                     f"{f(r.get('fwdbwd_ms'))} | {f(r.get('fwdbwd_ratio'), '.2f')} | {f(r.get('fwd_graph_ms'))} | "
                     f"{f(r.get('fwdbwd_graph_ms'))} | {f(r.get('rel_err'), '.1e')} | "
                     f"{f(r.get('grad_rel_err'), '.1e')} |"
                     + (f" {r['error']}" if "error" in r else ""))
    return "\n".join(lines)


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
    """As cuda_conv_bwd (and causal-conv1d, and the stand-in): zeroed fp32 buffers the kernel adds into."""
    dw = torch.zeros_like(w, dtype=torch.float32)
    db = torch.zeros_like(b, dtype=torch.float32)
    return conv_triton.causal_conv1d_backward(x, w, b, dout, None, None, None, True, dweight=dw, dbias=db)[:3]


def bench_conv(ext: Any, dtype: torch.dtype, channel_last: bool, graph: bool = False) -> Row:
    sets = [conv_inputs(dtype, channel_last, seed) for seed in range(N_SETS)]
    triton_conv_fwd(*sets[0]), triton_conv_bwd(*sets[0])  # tunes, as in bench_scan
    errs = {"out": rel_err(triton_conv_fwd(*sets[0]), cuda_conv_fwd(ext, *sets[0]))}
    for n, t, r in zip(("dx", "dweight", "dbias"), triton_conv_bwd(*sets[0]), cuda_conv_bwd(ext, *sets[0])):
        errs[n] = rel_err(t, r)
    row: Row = {"op": "causal_conv1d width 4 silu " + ("channel-last" if channel_last else "channel-first"),
                "dtype": str(dtype).replace("torch.", ""), "shape": "B=8 D=2048 L=2048",
                "max_rel_err": max(errs.values()), "errors": errs}
    time_pair(row, "cuda_fwd", lambda *a: cuda_conv_fwd(ext, *a), sets, graph)
    time_pair(row, "triton_fwd", triton_conv_fwd, sets, graph)
    time_pair(row, "cuda_bwd", lambda *a: cuda_conv_bwd(ext, *a), sets, graph)
    time_pair(row, "triton_bwd", triton_conv_bwd, sets, graph)
    # channel-first, unit time stride: the rows kernels run; channel-last: the general forward and the
    # backward that walks time
    fwd, bwd = (conv_triton._fwd["last"], conv_triton._bwd_steps) if channel_last else \
        (conv_triton._fwd_rows, conv_triton._bwd_rows)
    row["configs"] = {"fwd": str(getattr(fwd, "best_config", None)), "bwd": str(getattr(bwd, "best_config", None))}
    row["fwd_ratio"] = row["cuda_fwd_ms"] / row["triton_fwd_ms"]
    row["bwd_ratio"] = row["cuda_bwd_ms"] / row["triton_bwd_ms"]
    return row


# ---------------------------------------------------------------- config sweep
SWEEP_GROUPS = ("scan", "conv", "rows")


def sweep(budget_s: float, groups: Sequence[str] = SWEEP_GROUPS, graph: bool = False) -> List[Row]:
    """Time each candidate config of each kernel at the target shapes (stops when the budget is spent);
    `groups`: scan, conv (the general conv kernels), rows (the channel-first rows kernels); `graph`: also
    as CUDA-graph replays, the kernel's own time without the host's launch cost."""
    import triton

    t_end = time.time() + budget_s
    rows: List[Row] = []

    def run(kernel: Any, label: str, cfgs: List[Tuple[int, ...]], keys: Tuple[str, ...],
            fn: Callable[..., Any], sets: Sequence[Tuple[Any, ...]]) -> None:
        """cfgs: (one value per key..., num_warps)."""
        for *values, w in cfgs:
            if time.time() > t_end:
                rows.append({"kernel": label, "config": "skipped: sweep budget spent"})
                return
            cfg = triton.Config(dict(zip(keys, values)), num_warps=w)
            text = " ".join(f"{k}={v}" for k, v in zip(keys, values)) + f" w={w}"
            row: Row = {"kernel": label, "config": text}
            with only_config(kernel, cfg):
                try:
                    row["ms"] = median_ms(fn, sets, warmup=2, iters=10)
                    if graph:
                        row["graph_ms"] = graph_ms(fn, sets, iters=10)
                except Exception as exc:  # a config that does not fit (registers, smem) is a result too
                    rows.append(dict(row, error=str(exc)[:200]))
                    continue
            rows.append(row)
            replay = f", graph {row['graph_ms']:.3f} ms" if row.get("graph_ms") else ""
            print(f"  sweep {label:28s} {text:24s}: {row['ms']:.3f} ms{replay}", flush=True)

    if "rows" in groups:
        # neighbours: fp32 rows hold 4 steps, so longer tiles (R) give fp32 the steps bf16 has per program
        fwd_rows = sorted(set(conv_triton._FWD_ROWS_CONFIGS) | {(8, 32, 8), (2, 128, 8), (1, 256, 8), (2, 128, 4)})
        bwd_rows = sorted(set(conv_triton._BWD_ROWS_CONFIGS) | {(2, 64, 1, 4), (2, 64, 8, 4), (4, 32, 16, 4),
                                                                (8, 16, 8, 4), (16, 8, 4, 4), (4, 64, 4, 8),
                                                                (1, 128, 2, 4), (1, 128, 8, 4), (1, 256, 2, 8),
                                                                (1, 64, 16, 2), (1, 32, 4, 1), (1, 32, 16, 1),
                                                                (2, 32, 8, 2), (2, 128, 2, 4), (2, 128, 4, 8)})
        for dtype in (torch.bfloat16, torch.float32):
            sets = [conv_inputs(dtype, False, s) for s in range(2)]
            run(conv_triton._fwd_rows, f"conv fwd rows {dtype}", fwd_rows, ("BD", "R"), triton_conv_fwd, sets)
            run(conv_triton._bwd_rows, f"conv bwd rows {dtype}", bwd_rows, ("BD", "R", "S"), triton_conv_bwd, sets)
    if "scan" in groups:
        scan_sweep(run)
    if "conv" in groups:
        conv_sweep(run)
    return rows


def scan_sweep(run: Callable[..., None]) -> None:
    """The selective scan's candidate configs (forward, backward, Mamba-YOLO forward): the kernels' own
    tables plus a few neighbours that are not in them (a sweep that finds one faster says to add it)."""
    fwd_cfgs = sorted(set(scan_triton._FWD_CONFIGS) | {(16, 8, 1), (8, 4, 1), (32, 2, 1), (4, 32, 1)})
    bwd_cfgs = sorted(set(scan_triton._BWD_CONFIGS) | {(16, 8, 2), (8, 16, 1), (32, 2, 1), (2, 8, 1)})
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
    run(scan_triton._fwd, "yolo K=4 fwd float32", fwd_cfgs, ("BD", "T"), lambda *a: triton_scan_fwd(*a), sets)


def conv_sweep(run: Callable[..., None]) -> None:
    """The channel-last conv kernels' candidate configs (the general forward, the backward that walks
    time): each kernel's own table plus the neighbours below. (The general kernels' channel-first configs
    serve only initial states and seq_idx.)"""
    fwd_extra = {(256, 8, 4), (64, 32, 8), (16, 16, 2)}
    steps_extra = {(1024, 8, 4), (2048, 32, 8), (256, 16, 1), (512, 64, 4)}
    for dtype in (torch.bfloat16, torch.float32):
        sets = [conv_inputs(dtype, True, s) for s in range(2)]
        run(conv_triton._fwd["last"], f"conv fwd last {dtype}", sorted(set(conv_triton._FWD_CONFIGS["last"]) | fwd_extra),
            ("BD", "BL"), triton_conv_fwd, sets)
        run(conv_triton._bwd_steps, f"conv bwd steps {dtype}",
            sorted(set(conv_triton._BWD_STEPS_CONFIGS) | steps_extra), ("BD", "T"), triton_conv_bwd, sets)


# ---------------------------------------------------------------- host cost
def host_cost(conv_ext: Any, scan_ext: Any, calls: int = 500) -> Row:
    """Host (CPU) microseconds per call on tiny tensors, where the GPU work is negligible: what the launch
    path alone costs, Triton (through jetson-mamba's wrapper) vs the compiled extensions; plus where the
    Triton launches' host time goes (cProfile, by own time)."""
    import cProfile
    import io
    import pstats

    cx = conv_inputs(torch.float32, False, 0, batch=1, dim=64, L=64)
    sx = scan_inputs(1, 64, 64, 16, 1, torch.float32, True, 0)
    fns = {"cuda conv fwd": lambda: cuda_conv_fwd(conv_ext, *cx), "triton conv fwd": lambda: triton_conv_fwd(*cx),
           "cuda conv bwd": lambda: cuda_conv_bwd(conv_ext, *cx), "triton conv bwd": lambda: triton_conv_bwd(*cx),
           "cuda scan fwd": lambda: cuda_scan_fwd(scan_ext, *sx), "triton scan fwd": lambda: triton_scan_fwd(*sx)}
    # the conv target shape too: fewer calls than the GPU's launch queue holds, so the host is what is timed
    big = conv_inputs(torch.bfloat16, False, 0)
    fns.update({"cuda conv fwd B=8 D=2048 L=2048 bf16": lambda: cuda_conv_fwd(conv_ext, *big),
                "triton conv fwd B=8 D=2048 L=2048 bf16": lambda: triton_conv_fwd(*big),
                "cuda conv bwd B=8 D=2048 L=2048 bf16": lambda: cuda_conv_bwd(conv_ext, *big),
                "triton conv bwd B=8 D=2048 L=2048 bf16": lambda: triton_conv_bwd(*big)})
    # the chunked forward's three launches and its one launch (look-back) against the one-pass kernel (issue 18:
    # 0.381 vs 0.336 ms eager at Mamba-YOLO's B1 shape, where the chunked path needs 0.133 ms of GPU time); the
    # path switched by attributes (~1 us), not os.environ (a mock.patch.dict of it cost ~300 us a call)
    from bench_cpu_launch_path import forced_chunks

    lx = scan_inputs(1, 64, 512, 16, 1, torch.float32, True, 0)
    fns["triton scan fwd L=512 one-pass"] = lambda: triton_scan_fwd(*lx)
    for label, one in (("chunked", False), ("look-back", True)):
        fns[f"triton scan fwd L=512 {label}"] = forced_chunks(lambda: triton_scan_fwd(*lx), one_launch=one)
    row: Row = {"op": "host cost per call (us), B=1 D=64 L=64 unless named"}
    jit = [jit_function(k) for k in (conv_triton._fwd_rows, conv_triton._bwd_rows, scan_triton._fwd)]
    for name, fn in fns.items():
        for _ in range(20):
            fn()
        torch.cuda.synchronize()
        n = 200 if "L=2048" in name else calls
        with counted_runs(jit) as runs:
            start = time.perf_counter()
            for _ in range(n):
                fn()
            row[name] = (time.perf_counter() - start) / n * 1e6
        torch.cuda.synchronize()
        row[name + ": Triton's own launch path taken"] = runs[0]
        print(f"  host cost {name:40s}: {row[name]:.1f} us per call ({runs[0]} of Triton's own launches)", flush=True)
    for name in ("triton conv fwd", "triton conv bwd", "triton scan fwd", "triton scan fwd L=512 chunked",
                 "triton scan fwd L=512 look-back"):
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(calls):
            fns[name]()
        profile.disable()
        torch.cuda.synchronize()
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(14)
        row[name.replace(" ", "_") + "_profile"] = text.getvalue()
        print(text.getvalue(), flush=True)
    return row


@contextmanager
def counted_runs(functions: Sequence[Any]) -> Iterator[List[int]]:
    """Counts the calls of these JIT functions' own run (Triton's launch path: a launch that triton_utils.launch
    could not take through the compiled kernel's launcher)."""
    runs = [0]
    for fn in functions:
        original = fn.run

        def counted(*args: Any, original: Any = original, **kwargs: Any) -> Any:
            runs[0] += 1
            return original(*args, **kwargs)

        fn.run = counted
    try:
        yield runs
    finally:
        for fn in functions:
            del fn.run


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
        for autotune, run in (("1", "empty cache"), ("1", "warm cache"), ("0", "empty cache")):
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


# ---------------------------------------------------------------- whole Mamba block
BLOCK = """
import importlib, importlib.util, statistics, sys, types, torch
mode, path, profile = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
if mode == "triton":  # the stand-ins (dispatching to Triton) replace the compiled extensions
    from jetson_mamba.ops import standins
    for name in ("selective_scan_cuda", "causal_conv1d_cuda"):
        sys.modules[name] = importlib.import_module(standins.MODULES[name])
spec = importlib.util.find_spec("mamba_ssm")  # skip mamba_ssm/__init__ (it needs transformers < 5)
pkg = types.ModuleType("mamba_ssm")
pkg.__path__ = list(spec.submodule_search_locations)
sys.modules["mamba_ssm"] = pkg
from mamba_ssm.modules.mamba_simple import Mamba
torch.manual_seed(0)
model = Mamba(d_model=1024).cuda().to(torch.bfloat16)
xs = [torch.randn(8, 2048, 1024, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3)]
def step(x):
    model.zero_grad(set_to_none=True)
    out = model(x)
    out.backward(torch.ones_like(out))
    return out
for i in range(3):
    step(xs[i % 3])
times = []
for i in range(15):
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record(); step(xs[i % 3]); e.record(); torch.cuda.synchronize(); times.append(s.elapsed_time(e))
table = ""
if profile:  # where one step's GPU time goes, kernel by kernel
    from torch.profiler import ProfilerActivity, profile as profiler
    with profiler(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for i in range(3):
            step(xs[i % 3])
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25)
out = step(xs[0])
torch.save({"out": out.float().cpu(), "dx": xs[0].grad.float().cpu(), "dA_log": model.A_log.grad.float().cpu(),
            "din_proj": model.in_proj.weight.grad.float().cpu(), "ms": statistics.median(times),
            "profile": table}, path)
"""


def whole_block(profile: bool = False) -> Row:
    """Mamba(d_model=1024) forward+backward, B=8 L=2048 bf16: compiled kernels vs Triton (via the stand-ins);
    `profile`: also each mode's torch.profiler table of 3 steps (GPU time per kernel)."""
    got: Dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("cuda", "triton"):
            path = os.path.join(tmp, mode + ".pt")
            env = dict(os.environ, JETSON_MAMBA_BACKEND=mode if mode == "triton" else "")
            proc = subprocess.run([sys.executable, "-c", BLOCK, mode, path, "1" if profile else "0"], env=env,
                                  capture_output=True, text=True, timeout=300)
            if proc.returncode != 0:
                return {"op": "Mamba block", "error": f"{mode}: {proc.stderr[-1500:]}"}
            got[mode] = torch.load(path)
    cu, tr = got["cuda"], got["triton"]
    row: Row = {"op": "Mamba(d_model=1024) block fwd+bwd", "dtype": "bfloat16", "shape": "B=8 L=2048",
                "cuda_ms": cu["ms"], "triton_ms": tr["ms"], "ratio": cu["ms"] / tr["ms"],
                "errors": {k: rel_err(tr[k], cu[k]) for k in ("out", "dx", "dA_log", "din_proj")}}
    print(f"  Mamba block: compiled {cu['ms']:.3f} ms, Triton {tr['ms']:.3f} ms, ratio {row['ratio']:.2f}, "
          f"errors {row['errors']}", flush=True)
    if profile:
        row["profile"] = {"cuda": cu["profile"], "triton": tr["profile"]}
        for mode in ("cuda", "triton"):
            print(f"  Mamba block, {mode}: GPU time per kernel over 3 steps\n{row['profile'][mode]}", flush=True)
    return row


def standin_forward(ext: Any) -> Row:
    """Upstream Mamba-YOLO's scan call, VMamba's `selective_scan_cuda_core.fwd`, as jetson-mamba's stand-in
    on the Triton backend (it must also return the chunk states x: 4 chunks at L=6400), next to the Triton
    forward alone and the compiled mamba kernel (which keeps x in its own pass)."""
    from jetson_mamba.ops.standins import selective_scan_cuda_core as core

    sets = [scan_inputs(8, 512, 6400, 16, 4, torch.float32, False, seed) for seed in range(N_SETS)]
    row: Row = {"op": "stand-in selective_scan_cuda_core.fwd (with x)", "shape": "B=8 D=512 L=6400 N=16 K=4"}
    u, delta, A, B, C, D, _, bias, _ = sets[0]
    with use_backend("triton"):  # else the stand-in would dispatch to the compiled kernel installed here
        time_pair(row, "standin_fwd", lambda u, delta, A, B, C, D, z, bias, dout:
                  core.fwd(u, delta, A, B, C, D, bias, True, 1), sets, graph=False)
        x_standin = core.fwd(u, delta, A, B, C, D, bias, True, 1)[1]
    time_pair(row, "triton_fwd", triton_scan_fwd, sets, graph=False)
    time_pair(row, "cuda_fwd", lambda *a: cuda_scan_fwd(ext, *a), sets, graph=False)
    row["x_rel_err_vs_compiled"] = rel_err(x_standin, ext.fwd(u, delta, A, B, C, D, None, bias, True)[1])
    print(f"  {row['op']} {row['shape']}: stand-in {row['standin_fwd_ms']:.3f} ms, Triton forward "
          f"{row['triton_fwd_ms']:.3f} ms, compiled {row['cuda_fwd_ms']:.3f} ms, x rel err "
          f"{row['x_rel_err_vs_compiled']:.1e}", flush=True)
    return row


def markdown(rows: List[Row]) -> str:
    lines = ["| op | dtype | shape | CUDA fwd ms | Triton fwd ms | CUDA/Triton | CUDA bwd or fwd+bwd ms | "
             "Triton ms | CUDA/Triton | max rel err |", "|" + " --- |" * 10]
    for r in rows:
        second = "fwdbwd" if "cuda_fwdbwd_ms" in r else "bwd"
        lines.append(
            f"| {r['op']} | {r['dtype']} | {r['shape']} | {r['cuda_fwd_ms']:.3f} | {r['triton_fwd_ms']:.3f} | "
            f"{r['fwd_ratio']:.2f} | {r[f'cuda_{second}_ms']:.3f} ({second}) | {r[f'triton_{second}_ms']:.3f} | "
            f"{r[f'{second}_ratio']:.2f} | {r['max_rel_err']:.1e} |")
    graphed = [r for r in rows if "triton_fwd_graph_ms" in r]
    if graphed:
        lines += ["", "CUDA-graph replays (no host launch cost), ms:", "",
                  "| op | dtype | shape | CUDA fwd | Triton fwd | CUDA/Triton | CUDA 2nd | Triton 2nd | CUDA/Triton |",
                  "|" + " --- |" * 9]
        for r in graphed:
            second = "fwdbwd" if "cuda_fwdbwd_ms" in r else "bwd"
            cells = [r.get(k) for k in ("cuda_fwd_graph_ms", "triton_fwd_graph_ms",
                                        f"cuda_{second}_graph_ms", f"triton_{second}_graph_ms")]
            text = ["-" if v is None else f"{v:.3f}" for v in cells]
            ratios = ["-" if a is None or b is None else f"{a / b:.2f}" for a, b in ((cells[0], cells[1]), (cells[2], cells[3]))]
            lines.append(f"| {r['op']} | {r['dtype']} | {r['shape']} | {text[0]} | {text[1]} | {ratios[0]} | "
                         f"{text[2]} ({second}) | {text[3]} | {ratios[1]} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="store_true", help="time every candidate launch config")
    parser.add_argument("--sweep-budget", type=float, default=240.0, help="seconds the sweep may take")
    parser.add_argument("--sweep-groups", default=",".join(SWEEP_GROUPS),
                        help=f"comma-separated, of {', '.join(SWEEP_GROUPS)}")
    parser.add_argument("--host", action="store_true", help="host time per call (the launch path) and its profile")
    parser.add_argument("--cold-start", action="store_true", help="measure first-call JIT time")
    parser.add_argument("--block", action="store_true", help="whole Mamba block, compiled vs Triton")
    parser.add_argument("--block-profile", action="store_true", help="with --block: GPU time per kernel")
    parser.add_argument("--skip-conv", action="store_true", help="leave the causal conv1d rows out")
    parser.add_argument("--skip-scan", action="store_true", help="leave the selective scan rows out")
    parser.add_argument("--skip-main", action="store_true", help="only the sweep / cold start")
    parser.add_argument("--graph", action="store_true", help="also time CUDA-graph replays (no launch cost)")
    parser.add_argument("--standin", action="store_true", help="the stand-in's forward with chunk states x")
    parser.add_argument("--edge", action="store_true",
                        help="Mamba-YOLO's scan at batch 1 (and --edge-batch): compiled vs ours one-pass, chunked, "
                             "custom op eager and torch.compile(reduce-overhead)")
    parser.add_argument("--edge-batch", type=int, nargs="*", default=[1], help="batches for --edge (default 1)")
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
    if args.block:
        result["block"] = whole_block(args.block_profile)
    if args.standin:
        result["standin"] = standin_forward(selective_scan_cuda)
    if args.edge:
        result["edge"] = [r for b in args.edge_batch for r in edge_scan(selective_scan_cuda, args.graph, b)]
        print(edge_markdown(result["edge"]), flush=True)
    if args.host:
        result["host"] = host_cost(causal_conv1d_cuda, selective_scan_cuda)
    if args.sweep:
        result["sweep"] = sweep(args.sweep_budget, args.sweep_groups.split(","), args.graph)
    rows: List[Row] = []
    if not args.skip_main:
        for dtype in () if args.skip_scan else (torch.bfloat16, torch.float32):
            rows.append(bench_scan(selective_scan_cuda, "selective_scan z softplus", 8, 2048, 2048, 1, dtype, True,
                                   args.graph))
            print(markdown(rows[-1:]).splitlines()[2], rows[-1]["configs"], flush=True)
        for batch, dim, L in () if args.skip_scan else ((8, 512, 6400), (8, 1024, 1600), (1, 512, 6400),
                                                        (32, 512, 6400)):
            rows.append(bench_scan(selective_scan_cuda, "selective_scan Mamba-YOLO K=4 no z", batch, dim, L, 4,
                                   torch.float32, False, args.graph))
            print(markdown(rows[-1:]).splitlines()[2], rows[-1]["configs"], flush=True)
        for dtype in () if args.skip_conv else (torch.bfloat16, torch.float32):
            for channel_last in (False, True):
                rows.append(bench_conv(causal_conv1d_cuda, dtype, channel_last, args.graph))
                print(markdown(rows[-1:]).splitlines()[2], rows[-1]["configs"], flush=True)
        print(markdown(rows))
    result["rows"] = rows
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
