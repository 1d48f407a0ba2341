"""CPU benchmark: what torch's custom-op wrapper costs per call, as a function of the Python run inside it.

causal-conv1d >= 1.5.1 wraps each extension call in a `torch.library.custom_op` (`cpp_functions.py`,
mutates_args out / conv_state). On the lab H100 (torch 2.11) cProfile put 113 us of own time per call on that
wrapper (`custom_ops.py:backend_impl`) with jetson-mamba's stand-in inside it and 36 us with the compiled
extension (issue 18, RESULTS.md "Edge latency"). This times, without the profiler, the same wrapper around
a body of 0 to 1000 Python calls against the body called directly: if the wrapper's cost grew with the
Python inside it, our stand-in would pay for it; if it stays flat, the profile's number is the profiler's.

    python benchmarks/bench_custom_op_wrapper.py [--calls N] [--repeat R] [--json]

Microseconds per call, the fastest of R rounds of N calls.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Callable, Dict, List, Optional

import torch

FRAMES = (0, 10, 50, 200, 1000)  # Python calls in the body (the stand-in's conv update makes ~40)
_BODY: List[Callable[[], int]] = [lambda: 0]


def _leaf(a: int) -> int:
    return a + 1


def _body(frames: int) -> Callable[[], int]:
    def run() -> int:
        s = 0
        for _ in range(frames):
            s = _leaf(s)
        return s
    return run


@torch.library.custom_op("jetson_mamba_bench::wrapped_update", mutates_args={"out", "conv_state"})
def _wrapped(x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
             out: torch.Tensor, silu_activation: bool) -> None:
    """causal-conv1d 1.6.0's `_causal_conv1d_update_cpp` signature; the body stands for the extension call."""
    _BODY[0]()


def _best(fn: Callable[[], object], calls: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls * 1e6)
    return best


def measure(calls: int, repeat: int) -> Dict[int, Dict[str, float]]:
    """{frames: {"direct": us, "wrapped": us, "wrapper": us}} for each body size in FRAMES."""
    x, out = torch.zeros(1, 8), torch.zeros(1, 8)
    state, weight = torch.zeros(1, 8, 4), torch.zeros(8, 4)
    rows: Dict[int, Dict[str, float]] = {}
    for frames in FRAMES:
        _BODY[0] = _body(frames)
        direct = _best(_BODY[0], calls, repeat)
        wrapped = _best(lambda: _wrapped(x, state, weight, None, out, True), calls, repeat)
        rows[frames] = {"direct": direct, "wrapped": wrapped, "wrapper": wrapped - direct}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = measure(args.calls, args.repeat)
    if args.json:
        print(json.dumps({"torch": torch.__version__, "rows": rows}))
        return
    print(f"torch {torch.__version__}: us per call")
    print(f"{'python calls in the body':>24} {'direct':>8} {'through custom_op':>18} {'wrapper':>8}")
    for frames, row in rows.items():
        print(f"{frames:>24} {row['direct']:8.2f} {row['wrapped']:18.2f} {row['wrapper']:8.2f}")


if __name__ == "__main__":
    main()
