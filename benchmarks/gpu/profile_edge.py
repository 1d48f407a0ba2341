"""Where the batch-1 time goes: upstream's Mamba(1024) forward (B1 L2048 bf16) and the 130M-shaped LM prefill
(B1 L1024 fp16), compiled extensions vs our stand-ins, under torch.profiler (issue 18, the glue).

    PYTHONPATH=src:<compiled wheels' folder> python3 benchmarks/gpu/profile_edge.py     (lab GPU; see edge.sh)

Prints, per workload and side: wall ms per call (CUDA-synchronised), host (CPU) ms per call of the Python
path, GPU ms per call (sum of kernel times), then the kernels by GPU time and the ops by CPU time.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch
from torch.profiler import ProfilerActivity, profile

from jetson_mamba.bench.workloads import (
    COMPILED,
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


def main() -> None:
    sides = Sides("triton", compiled=True)
    mamba_simple = _import_upstream("mamba_ssm.modules.mamba_simple")
    torch.manual_seed(0)
    block = mamba_simple.Mamba(d_model=1024).to(device="cuda", dtype=torch.bfloat16)
    x = torch.randn(1, 2048, 1024, device="cuda", dtype=torch.bfloat16)
    settings = WorkloadSettings(device="cuda", batches=[1], sizes=FULL, warmup=3, repeat=10, budget_s=60.0)
    lm = _lm_model(settings)
    ids = torch.randint(0, 50277, (1, 1024), device="cuda")
    for which in (COMPILED, OURS):
        with sides.side(which), torch.no_grad():
            report(f"Mamba(1024) B1 L2048 bf16 forward, {which}", lambda: block(x))
            report(f"130M LM prefill B1 L1024 fp16, {which}", lambda: lm(ids))


if __name__ == "__main__":
    main()
