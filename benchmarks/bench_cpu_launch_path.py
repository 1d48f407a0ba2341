"""CPU benchmark: host time of our Triton launch path, up to the call of the compiled kernel's launcher.

At batch 1 on an edge GPU the host path is the latency (issue #18). This times, without a GPU, what
runs on the host per call of the Triton scan forward / backward and conv forward / backward: argument
checks, buffers, launch keys, the memo of tuned configs and compiled kernels (triton_utils.launch_tuned /
launch). Only Triton's own work is replaced, in this process alone: `JITFunction.run` (compile +
launch) returns a stand-in compiled kernel whose launcher does nothing, Triton's device and stream
getters return 0, and the backends' GPU check passes. Tensors are on the CPU (small, so that allocation
costs what the GPU's caching allocator costs: little).

    python benchmarks/bench_cpu_launch_path.py [--calls N] [--repeat R] [--json] [--profile OP]

Microseconds of CPU time per call, the fastest of R rounds of N calls (this 2-core machine is shared). Run it with PYTHONPATH=<other checkout>/src
to measure another version. Must run without TRITON_INTERPRET (the compiled-kernel path is timed).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Callable, Dict, List


class _Compiled:
    """What launch() needs of a compiled kernel: a launcher that does nothing here."""

    packed_metadata = None
    function = None

    @staticmethod
    def run(*args: Any) -> None:
        return None


def _fake_triton() -> None:
    """Replace Triton's compile + launch, its device/stream getters and the GPU check, in this process."""
    from triton.runtime.jit import JITFunction

    from jetson_mamba.ops import triton_utils as tu
    from jetson_mamba.ops.causal_conv1d import triton as conv
    from jetson_mamba.ops.selective_scan import triton as scan

    if tu.INTERPRET:
        raise SystemExit("run without TRITON_INTERPRET=1: this times the compiled-kernel launch path")
    JITFunction.run = lambda self, *a, **k: _Compiled()  # type: ignore[method-assign]
    tu._device_and_stream.cache_clear()
    tu._device_and_stream = lambda: (lambda: 0, lambda device: 0)  # type: ignore[assignment]
    for module in (scan, conv):
        module.is_available = lambda device, dtype: None  # type: ignore[attr-defined]


def _cases() -> Dict[str, Callable[[], Any]]:
    """op name -> one call (a Mamba block's shapes, scaled down: the host path does not depend on size)."""
    import torch

    from jetson_mamba.ops.causal_conv1d import triton as conv
    from jetson_mamba.ops.selective_scan import triton as scan
    from jetson_mamba.ops.selective_scan.cuda import X_CHUNK

    g = torch.Generator().manual_seed(0)
    b, d, L, n = 1, 64, 256, 16
    bf = torch.bfloat16
    u, delta, z, dout = (torch.randn(b, d, L, generator=g).to(bf) for _ in range(4))
    A = -torch.rand(d, n, generator=g)
    B, C = (torch.randn(b, 1, n, L, generator=g).to(bf) for _ in range(2))
    D, bias = torch.randn(d), torch.randn(d)
    x = torch.randn(b, d, L, generator=g).to(bf)
    w, wb = torch.randn(d, 4).to(bf), torch.randn(d).to(bf)
    dw, db = torch.zeros(d, 4), torch.zeros(d)
    return {
        "scan fwd": lambda: scan.selective_scan_forward_x(u, delta, A, B, C, D, z, bias, True, X_CHUNK),
        "scan bwd": lambda: scan.selective_scan_backward_out_z(u, delta, A, B, C, D, z, bias, True, dout),
        "conv fwd": lambda: conv.causal_conv1d_forward(x, w, wb, None, None, False, True),
        "conv bwd": lambda: conv.causal_conv1d_backward(x, w, wb, dout, None, None, None, True,
                                                         dweight=dw, dbias=db),
    }


def measure(calls: int, repeat: int) -> Dict[str, float]:
    """op -> median us per call."""
    result: Dict[str, float] = {}
    for name, fn in _cases().items():
        for _ in range(3):
            fn()  # first calls: the tuner and the compiled-kernel memo fill
        rounds: List[float] = []
        for _ in range(repeat):
            t0 = time.process_time()
            for _ in range(calls):
                fn()
            rounds.append((time.process_time() - t0) / calls * 1e6)
        result[name] = round(min(rounds), 1)  # CPU time, fastest round: the least disturbed by other jobs
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--profile", metavar="OP", help="cProfile OP's calls instead (e.g. 'scan fwd')")
    args = parser.parse_args()
    os.environ.setdefault("JETSON_MAMBA_TRITON_AUTOTUNE", "0")  # one config: no benchmarking of candidates
    import torch

    torch.set_num_threads(1)
    _fake_triton()
    if args.profile:
        import cProfile
        import pstats

        fn = _cases()[args.profile]
        for _ in range(3):
            fn()
        profile = cProfile.Profile()
        profile.runcall(lambda: [fn() for _ in range(args.calls)])
        pstats.Stats(profile).sort_stats("tottime").print_stats(18)
        return
    result = measure(args.calls, args.repeat)
    if args.json:
        print(json.dumps(result))
        return
    for name, us in result.items():
        print(f"{name:9s} {us:7.1f} us/call (host, up to the launcher)")


if __name__ == "__main__":
    main()
