"""CPU benchmark: host time of our Triton launch path, up to the call of the compiled kernel's launcher.

At batch 1 on an edge GPU the host path is the latency (issue #18). This times, without a GPU, what
runs on the host per call of the Triton scan forward / backward and conv forward / backward: argument
checks, buffers, launch keys, the memo of tuned configs and compiled kernels (triton_utils.launch_tuned /
launch). Only Triton's own work is replaced, in this process alone: `JITFunction.run` (compile +
launch) returns a stand-in compiled kernel whose launcher does nothing, Triton's device and stream
getters return 0, and the backends' GPU check passes. Tensors are on the CPU (small, so that allocation
costs what the GPU's caching allocator costs: little).

    python benchmarks/bench_cpu_launch_path.py [--calls N] [--repeat R] [--json] [--profile OP] [--only SUBSTR] [--glue]

Three groups of calls. "triton ...": the Triton backend's functions, called directly. "op scan fwd+bwd":
jetson_mamba.ops.selective_scan_fn's forward and backward through autograd (torch.autograd.grad), as
Mamba-YOLO trains, one-pass and chunked (Mamba-YOLO's batch-1 path). "standin ...": the calls
as upstream makes them, from its call of the compiled extension's function down to Triton's launcher:
`causal_conv1d_cuda.causal_conv1d_fwd(x, w, b, None, None, out, None, True)` (causal-conv1d >= 1.5.1's
`cpp_functions`), `causal_conv1d_bwd`, `causal_conv1d_update` (the decode step), `selective_scan_cuda.fwd`
and `.bwd` (mamba_inner_fn's arguments: z, D, delta_bias, softplus; bwd with dz and recompute_out_z), the
stand-in modules put into sys.modules under the extension names (as tests/conformance does) and the
backend chosen with use_backend, as the bench chooses it. The compiled extension's own host cost per call
(~10-25 us on the lab host; benchmarks/gpu/profile_edge.py measures both sides per layer on a GPU) is the
reference: with the launcher a no-op, each number here is our Python per call. `--glue` adds "glue ..." rows:
the stand-in calls again with the backend's functions replaced by ones that return their first results (the
stand-in layer alone: dispatch, buffer checks, the in-place contract).

Microseconds of CPU time per call, the fastest of R rounds of N calls (this 2-core machine is shared). Run it with PYTHONPATH=<other checkout>/src
to measure another version. Must run without TRITON_INTERPRET (the compiled-kernel path is timed).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import time
from typing import Any, Callable, Dict, List

BACKEND = "triton-no-launch"

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
    # the stand-ins dispatch: the Triton modules under a name of their own, whose CPU tensors the dispatch
    # does not send to the interpreter (the built-in "triton" takes CPU tensors only under TRITON_INTERPRET=1)
    from jetson_mamba.ops.backend import register_backend

    register_backend("selective_scan", BACKEND, scan, priority=1)
    register_backend("causal_conv1d", BACKEND, conv, priority=1)


def _cases() -> Dict[str, Callable[[], Any]]:
    """op name -> one call (a Mamba block's shapes, scaled down: the host path does not depend on size)."""
    return {**_backend_cases(), **_op_cases(), **_standin_cases()}


def _backend_cases() -> Dict[str, Callable[[], Any]]:
    """The Triton backend's functions, called directly."""
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

    def scan_fwd() -> Any:
        return scan.selective_scan_forward_x(u, delta, A, B, C, D, z, bias, True, X_CHUNK)

    def scan_bwd() -> Any:
        return scan.selective_scan_backward_out_z(u, delta, A, B, C, D, z, bias, True, dout)

    return {
        "triton scan fwd": scan_fwd,
        "triton scan fwd chunked": forced_chunks(scan_fwd, one_launch=False),
        "triton scan fwd look-back": forced_chunks(scan_fwd, one_launch=True),
        "triton scan bwd": scan_bwd,
        "triton scan bwd chunked": forced_chunks(scan_bwd, one_launch=True),
        "triton conv fwd": lambda: conv.causal_conv1d_forward(x, w, wb, None, None, False, True),
        "triton conv bwd": lambda: conv.causal_conv1d_backward(x, w, wb, dout, None, None, None, True,
                                                                dweight=dw, dbias=db),
    }


def _op_cases() -> Dict[str, Callable[[], Any]]:
    """The public scan op's forward+backward through autograd (Mamba-YOLO's K=4 groups, no z)."""
    import torch

    from jetson_mamba.ops import selective_scan_fn

    g = torch.Generator().manual_seed(0)
    b, d, L, n = 1, 64, 256, 16
    leaves = [torch.randn(b, d, L, generator=g), torch.randn(b, d, L, generator=g), -torch.rand(d, n, generator=g),
              torch.randn(b, 4, n, L, generator=g), torch.randn(b, 4, n, L, generator=g), torch.randn(d),
              torch.randn(d)]
    u, delta, A, B, C, D, bias = (t.requires_grad_() for t in leaves)
    dout = torch.randn(b, d, L, generator=g)

    def fwd_bwd() -> Any:
        out = selective_scan_fn(u, delta, A, B, C, D, None, bias, delta_softplus=True)
        return torch.autograd.grad(out, (u, delta, A, B, C, D, bias), dout)

    return {"op scan fwd+bwd": fwd_bwd, "op scan fwd+bwd chunked": forced_chunks(fwd_bwd, one_launch=True)}


def forced_chunks(call: Callable[[], Any], one_launch: bool) -> Callable[[], Any]:
    """`call` with the scan's sequence-parallel path taken (chunks of 128 steps; the forward in three launches
    or in one, look-back): what it adds to the one-pass kernels' host path."""
    from jetson_mamba.ops.selective_scan import triton_chunked as chunked

    def run() -> Any:
        saved = chunked.chunk_for, chunked.lookback
        chunked.chunk_for = lambda u, forward=False: 128  # type: ignore[assignment]
        chunked.lookback = lambda: one_launch  # type: ignore[assignment]
        try:
            return call()
        finally:
            chunked.chunk_for, chunked.lookback = saved

    return run


def _standin_cases() -> Dict[str, Callable[[], Any]]:
    """Upstream's calls of the compiled extensions, made on our stand-ins: mamba_inner_fn's (the scan on the
    conv's output, z and delta as views of the in_proj result, dz a view into dxz) and causal-conv1d's
    cpp_functions' (out / dx buffers, zeroed fp32 dweight / dbias, the decode step's state)."""
    import sys

    import torch

    from jetson_mamba.ops import standins

    for name in ("selective_scan_cuda", "causal_conv1d_cuda"):
        sys.modules[name] = importlib.import_module(standins.MODULES[name])
    import causal_conv1d_cuda  # type: ignore[import-not-found]
    import selective_scan_cuda  # type: ignore[import-not-found]

    g = torch.Generator().manual_seed(0)
    b, d, L, n = 1, 64, 256, 16
    bf = torch.bfloat16
    xz = torch.randn(b, 2 * d, L, generator=g).to(bf)  # in_proj's output: x and z are its two halves
    x, z = xz.chunk(2, dim=1)
    w, wb = torch.randn(d, 4).to(bf), torch.randn(d).to(bf)
    u = torch.empty_like(x)
    delta = torch.randn(b, L, d, generator=g).to(bf).transpose(1, 2)  # a transposed matmul result
    A = -torch.rand(d, n, generator=g)
    B, C = (torch.randn(b, 1, n, L, generator=g).to(bf) for _ in range(2))
    D, bias = torch.randn(d), torch.randn(d)
    causal_conv1d_cuda.causal_conv1d_fwd(x, w, wb, None, None, u, None, True)
    out, xs, _ = selective_scan_cuda.fwd(u, delta, A, B, C, D, z, bias, True)
    dout = torch.randn(b, d, L, generator=g).to(bf)
    dxz = torch.empty_like(xz)
    _, dz = dxz.chunk(2, dim=1)
    dx = torch.empty_like(x)
    dw, db = torch.zeros(d, 4), torch.zeros(d)
    step, state, step_out = x[:, :, :1].squeeze(-1).contiguous(), torch.zeros(b, d, 3).to(bf), torch.empty(b, d).to(bf)
    return {
        "standin conv fwd": lambda: causal_conv1d_cuda.causal_conv1d_fwd(x, w, wb, None, None, u, None, True),
        "standin conv bwd": lambda: causal_conv1d_cuda.causal_conv1d_bwd(x, w, wb, dout, None, None, None, dx, dw,
                                                                         db, None, True),
        "standin conv update": lambda: causal_conv1d_cuda.causal_conv1d_update(step, state, w, wb, step_out, True,
                                                                               None, None),
        "standin scan fwd": lambda: selective_scan_cuda.fwd(u, delta, A, B, C, D, z, bias, True),
        "standin scan bwd": lambda: selective_scan_cuda.bwd(u, delta, A, B, C, D, z, bias, dout, xs, out, dz,
                                                            True, True),
    }


def _stub_backends() -> None:
    """The backend functions the stand-ins call, replaced by ones that return their first call's results."""
    from jetson_mamba.ops.causal_conv1d import triton as conv
    from jetson_mamba.ops.selective_scan import triton as scan

    for module, names in ((scan, ("selective_scan_forward_x", "selective_scan_backward_out_z")),
                          (conv, ("causal_conv1d_forward", "causal_conv1d_backward", "causal_conv1d_update"))):
        for name in names:
            real, first = getattr(module, name), []

            def stub(*args: Any, _real: Any = real, _first: List[Any] = first, **kwargs: Any) -> Any:
                if not _first:
                    _first.append(_real(*args, **kwargs))
                return _first[0]

            setattr(module, name, stub)


def measure(calls: int, repeat: int, only: str = "", glue: bool = False) -> Dict[str, float]:
    """op -> us per call (CPU time, the fastest round); with `glue`, then the stand-in rows with the backends
    stubbed."""
    result = _measure(_cases(), calls, repeat, only)
    if glue:
        cases = {name.replace("standin", "glue"): fn for name, fn in _standin_cases().items()}
        _stub_backends()
        result.update(_measure(cases, calls, repeat, only))
    return result


def _measure(cases: Dict[str, Callable[[], Any]], calls: int, repeat: int, only: str) -> Dict[str, float]:
    result: Dict[str, float] = {}
    for name, fn in cases.items():
        if only not in name:
            continue
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
    parser.add_argument("--profile", metavar="OP", help="cProfile OP's calls instead (e.g. 'standin scan fwd')")
    parser.add_argument("--only", default="", metavar="SUBSTR", help="only the calls whose name contains SUBSTR")
    parser.add_argument("--glue", action="store_true", help="also the stand-in layer alone (backends stubbed)")
    args = parser.parse_args()
    os.environ.setdefault("JETSON_MAMBA_TRITON_AUTOTUNE", "0")  # one config: no benchmarking of candidates
    import torch

    from jetson_mamba.ops.backend import use_backend

    torch.set_num_threads(1)
    _fake_triton()
    with use_backend(BACKEND):
        _run(args)


def _run(args: argparse.Namespace) -> None:
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
    result = measure(args.calls, args.repeat, args.only, args.glue)
    if args.json:
        print(json.dumps(result))
        return
    for name, us in result.items():
        print(f"{name:19s} {us:7.1f} us/call (host, up to the launcher)")


if __name__ == "__main__":
    main()
