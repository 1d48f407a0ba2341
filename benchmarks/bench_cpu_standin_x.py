"""CPU benchmark: what the selective-scan stand-ins add on top of the backend's own forward.

The stand-ins (`selective_scan_cuda`, VMamba's `selective_scan_cuda_core`) must also return the
compiled kernels' chunk states x. A backend with `selective_scan_forward_x` keeps them in the same
pass; without it they cost a second scan. This times, per shape, the torch backend's forward alone
and the stand-in's forward (backend + x), and prints the ratio: 1.0 means x is free.

    python benchmarks/bench_cpu_standin_x.py [--repeat N] [--json]

Run it with PYTHONPATH=<another checkout>/src to measure that version of jetson-mamba.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from functools import partial
from typing import Any, Callable, Dict, List

# name: (batch, dim, L, dstate, B/C groups (0: variable (batch, dstate, L)), with z)
SHAPES = {
    "mamba layer, L 4096": (1, 768, 4096, 16, 0, True),
    "Mamba-YOLO P3 SS2D (80x80, K=4)": (1, 4 * 64, 6400, 16, 4, False),
    "mamba layer, L 2048 (one chunk)": (1, 768, 2048, 16, 0, True),
}


def _inputs(batch: int, dim: int, L: int, dstate: int, groups: int, with_z: bool) -> Dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(0)
    bc = (batch, dstate, L) if groups == 0 else (batch, groups, dstate, L)
    return {
        "u": torch.randn(batch, dim, L, generator=g), "delta": torch.randn(batch, dim, L, generator=g) * 0.1,
        "A": -torch.arange(1, dstate + 1, dtype=torch.float32).repeat(dim, 1),
        "B": torch.randn(*bc, generator=g), "C": torch.randn(*bc, generator=g), "D": torch.ones(dim),
        "z": torch.randn(batch, dim, L, generator=g) if with_z else None,
        "delta_bias": torch.randn(dim, generator=g) * 0.1 - 4,
    }


def _medians_s(fns: List[Callable[[], Any]], repeat: int) -> List[float]:
    """Median seconds of each function, calls interleaved so load from other jobs hits all alike."""
    for fn in fns:
        fn()  # warm-up
    times: List[List[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, out in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import torch

    from jetson_mamba.ops.selective_scan import torch as portable
    from jetson_mamba.ops.standins import selective_scan_cuda

    torch.set_num_threads(1)
    rows = []
    for name, shape in SHAPES.items():
        t = _inputs(*shape)
        order = [t[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
        backend, standin = _medians_s([partial(portable.selective_scan_forward, *order, delta_softplus=True),
                                       partial(selective_scan_cuda.fwd, *order, True)], args.repeat)
        rows.append({"shape": name, "backend_fwd_s": backend, "standin_fwd_s": standin, "ratio": standin / backend})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("| shape | torch backend fwd | stand-in fwd (with x) | stand-in / backend |")
    print("| --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['shape']} | {r['backend_fwd_s']:.3f} s | {r['standin_fwd_s']:.3f} s | {r['ratio']:.2f}x |")


if __name__ == "__main__":
    main()
