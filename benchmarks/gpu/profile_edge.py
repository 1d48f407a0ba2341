"""Where the batch-1 time goes: upstream's Mamba(1024) forward (B1 L2048 bf16) and the 130M-shaped LM prefill
(B1 L1024 fp16), compiled extensions vs our stand-ins, under torch.profiler (issue 18, the glue).

    PYTHONPATH=src:<compiled wheels' folder> python3 benchmarks/gpu/profile_edge.py [--host-only]   (lab GPU; see edge.sh)

Prints, per workload and side: wall ms per call (CUDA-synchronised), host (CPU) ms per call of the Python
path, GPU ms per call (sum of kernel times), then the kernels by GPU time and the ops by CPU time.
Then (alone with --host-only) the host time of each extension call upstream makes, compiled vs our stand-ins:
us per call of `causal_conv1d_cuda.causal_conv1d_fwd` / `_bwd` / `_update` and `selective_scan_cuda.fwd` /
`bwd`, and us per layer, for the LM prefill, Mamba(1024)'s forward+backward and 32 tokens of `generate`
without CUDA graphs (the decode step's `causal_conv1d_update`). Wall time around each call, no
synchronisation (the launches are asynchronous): the host time, without the profiler's inflation. With
--sync, each timed call starts after a torch.cuda.synchronize() (not timed): an empty launch queue, so that
no call waits for queue space; the difference to the run without it is that waiting.
With --cprofile (after --host-only's table): where our side's host time goes, Python function by function
(cProfile of the prefill and of the decode, compiled and ours: the top functions by own time).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
import types
from collections import Counter
from typing import Any, Callable, Dict, List, Tuple

import torch
from torch.profiler import ProfilerActivity, profile

from jetson_mamba.bench.workloads import (
    COMPILED,
    EXTENSIONS,
    FULL,
    OURS,
    Sides,
    WorkloadSettings,
    _import_upstream,
    _lm_model,
)

STEPS = 10


def per_call(fn: Callable[[], Any]) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(STEPS):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e3 / STEPS


def report(title: str, fn: Callable[[], Any]) -> None:
    wall = per_call(fn)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(STEPS):
            fn()
        torch.cuda.synchronize()
    events = prof.key_averages()
    gpu = sum(e.self_device_time_total for e in events) / 1e3 / STEPS
    host = sum(e.self_cpu_time_total for e in events) / 1e3 / STEPS
    print(f"\n=== {title}: wall {wall:.3f} ms/call, GPU (kernels) {gpu:.3f} ms/call, host (profiled ops) "
          f"{host:.3f} ms/call", flush=True)
    print(events.table(sort_by="self_device_time_total", row_limit=14, max_name_column_width=60))
    print(events.table(sort_by="self_cpu_time_total", row_limit=10, max_name_column_width=60), flush=True)


class HostTimer:
    """Stands in for an extension module that upstream bound: forwards each call, adding up its host time."""

    def __init__(self, module: Any, sync: bool) -> None:
        self.module = module
        self.sync = sync
        self.us: Counter = Counter()
        self.calls: Counter = Counter()

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self.module, name)
        if not callable(fn):
            return fn

        def timed(*args: Any, **kwargs: Any) -> Any:
            if self.sync:
                torch.cuda.synchronize()
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.us[name] += (time.perf_counter() - start) * 1e6
                self.calls[name] += 1

        return timed


def host_per_call(fn: Callable[[], Any], layers: int, sync: bool) -> Dict[str, Tuple[int, float, float]]:
    """entry -> (calls per run of fn, us per call, us per layer) of the extension calls fn makes, on the side
    in effect (Sides.side has pointed upstream's modules at it; here they are wrapped in a HostTimer)."""
    timers: Dict[int, HostTimer] = {}
    for key, module in list(sys.modules.items()):  # Sides.side restores the originals on exit
        if module is None or key.split(".")[0] not in ("mamba_ssm", "causal_conv1d"):
            continue
        for name in EXTENSIONS:
            target = vars(module).get(name)
            if isinstance(target, types.ModuleType):
                setattr(module, name, timers.setdefault(id(target), HostTimer(target, sync)))
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    for timer in timers.values():
        timer.us.clear()
        timer.calls.clear()
    for _ in range(STEPS):
        fn()
    torch.cuda.synchronize()
    result: Dict[str, Tuple[int, float, float]] = {}
    for timer in timers.values():
        prefix = getattr(timer.module, "__name__", "?").split(".")[-1]
        for entry, n in timer.calls.items():
            result[f"{prefix}.{entry}"] = (n // STEPS, timer.us[entry] / n, timer.us[entry] / STEPS / layers)
    return result


def host_report(sides: Sides, workloads: List[Tuple[str, Callable[[], Any], int]], sync: bool) -> None:
    """Host us per extension call and per layer, compiled vs ours, for each workload (`sync`: each call after a
    synchronisation)."""
    for title, fn, layers in workloads:
        rows: Dict[str, Dict[str, Tuple[int, float, float]]] = {}
        for which in (COMPILED, OURS):
            with sides.side(which):
                rows[which] = host_per_call(fn, layers, sync)
        after = ", each after a synchronisation" if sync else ""
        print(f"\n=== host time of the extension calls: {title} ({layers} layers; us, wall around each call{after})")
        print(f"{'entry':40s} {'calls/run':>9s} {'compiled us/call':>17s} {'ours us/call':>13s} "
              f"{'compiled us/layer':>18s} {'ours us/layer':>14s} {'ours/compiled':>14s}")
        for entry in sorted(set(rows[COMPILED]) | set(rows[OURS])):
            c, o = rows[COMPILED].get(entry, (0, 0.0, 0.0)), rows[OURS].get(entry, (0, 0.0, 0.0))
            ratio = f"{o[1] / c[1]:.2f}" if c[1] else "-"
            print(f"{entry:40s} {max(c[0], o[0]):9d} {c[1]:17.1f} {o[1]:13.1f} {c[2]:18.1f} {o[2]:14.1f} {ratio:>14s}",
                  flush=True)


def python_report(sides: Sides, workloads: List[Tuple[str, Callable[[], Any], int]], top: int = 30) -> None:
    """cProfile of each side: the functions with the most own time (the launcher, allocations, our glue)."""
    for title, fn, _layers in workloads:
        for which in (COMPILED, OURS):
            with sides.side(which):
                for _ in range(3):
                    fn()
                torch.cuda.synchronize()
                profiler = cProfile.Profile()
                profiler.enable()
                for _ in range(STEPS):
                    fn()
                torch.cuda.synchronize()
                profiler.disable()
            print(f"\n=== cProfile, {which}: {title} ({STEPS} runs; own time first)", flush=True)
            pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host-only", action="store_true", help="only the host time of the extension calls")
    parser.add_argument("--cprofile", action="store_true", help="then cProfile both sides of the prefill and decode")
    parser.add_argument("--sync", action="store_true", help="synchronise before each timed extension call")
    args = parser.parse_args()
    sides = Sides("triton", compiled=True)
    mamba_simple = _import_upstream("mamba_ssm.modules.mamba_simple")
    torch.manual_seed(0)
    block = mamba_simple.Mamba(d_model=1024).to(device="cuda", dtype=torch.bfloat16)
    x = torch.randn(1, 2048, 1024, device="cuda", dtype=torch.bfloat16)
    settings = WorkloadSettings(device="cuda", batches=[1], sizes=FULL, warmup=3, repeat=10, budget_s=60.0)
    lm = _lm_model(settings)
    ids = torch.randint(0, 50277, (1, 1024), device="cuda")
    if not args.host_only:
        for which in (COMPILED, OURS):
            with sides.side(which), torch.no_grad():
                report(f"Mamba(1024) B1 L2048 bf16 forward, {which}", lambda: block(x))
                report(f"130M LM prefill B1 L1024 fp16, {which}", lambda: lm(ids))
    layers = len(lm.backbone.layers)

    def prefill() -> Any:
        with torch.no_grad():
            return lm(ids)

    def block_train() -> None:
        block(x).float().sum().backward()

    def decode() -> Any:
        return lm.generate(ids[:, :100], max_length=132, top_k=1, cg=False)

    workloads = [("130M LM prefill B1 L1024 fp16", prefill, layers),
                 ("Mamba(1024) B1 L2048 bf16 forward+backward", block_train, 1),
                 ("130M LM generate B1, 32 tokens after 100, no CUDA graphs", decode, layers)]
    host_report(sides, workloads, args.sync)
    if args.cprofile:
        python_report(sides, [workloads[0], workloads[2]])


if __name__ == "__main__":
    main()
