"""CPU benchmark: jetson-mamba's torch selective scan next to upstream's selective_scan_ref.

Both run in this one invocation, each measurement in a fresh subprocess (so peak memory is the
call's own): forward time and peak memory, forward+backward time and peak memory, at the shape
of one Mamba-1.4B-like layer (fp32, batch 1, dim 1536, L 1024, dstate 16, with z, D,
delta_bias and softplus, as Mamba calls it). upstream's selective_scan_ref is imported from
the mamba-ssm 2.2.4 sdist, unmodified (its package __init__, which pulls in the models, is
skipped; `selective_scan_cuda` resolves to jetson-mamba's stand-in so the module imports).

    python benchmarks/bench_cpu_selective_scan.py [--sdist PATH] [--threads N] [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SDIST = ROOT.parent / "shared" / "sdists" / "mamba_ssm-2.2.4.tar.gz"
SHAPE = {"batch": 1, "dim": 1536, "L": 1024, "dstate": 16}


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def _inputs(batch: int, dim: int, L: int, dstate: int, grad: bool) -> Dict[str, Any]:
    """Mamba's initialisation: A = -(1..dstate), dt_bias so softplus(dt) is in [0.001, 0.1]."""
    import torch

    g = torch.Generator().manual_seed(0)
    dt = torch.exp(torch.rand(dim, generator=g) * (torch.log(torch.tensor(0.1)) - torch.log(torch.tensor(1e-3)))
                   + torch.log(torch.tensor(1e-3)))
    tensors = {
        "u": torch.randn(batch, dim, L, generator=g), "delta": torch.randn(batch, dim, L, generator=g) * 0.1,
        "A": -torch.arange(1, dstate + 1, dtype=torch.float32).repeat(dim, 1),
        "B": torch.randn(batch, dstate, L, generator=g), "C": torch.randn(batch, dstate, L, generator=g),
        "D": torch.ones(dim), "z": torch.randn(batch, dim, L, generator=g),
        "delta_bias": dt + torch.log(-torch.expm1(-dt)),
    }
    return {k: v.requires_grad_(grad) for k, v in tensors.items()}


def _load_upstream_ref(sdist: Path, workdir: Path) -> Callable[..., Any]:
    """upstream's selective_scan_ref, from the real sdist's selective_scan_interface.py."""
    with tarfile.open(sdist) as tar:
        tar.extractall(workdir)
    root = next(workdir.glob("mamba_ssm-*"))
    sys.path.insert(0, str(root))
    from jetson_mamba.ops import standins

    standins.install(["selective_scan_cuda"])
    sys.modules["mamba_ssm"] = importlib.util.module_from_spec(importlib.util.find_spec("mamba_ssm"))
    from mamba_ssm.ops.selective_scan_interface import selective_scan_ref  # type: ignore[import-not-found]

    return selective_scan_ref


def _worker(impl: str, mode: str, threads: int, repeats: int, sdist: Path) -> Dict[str, Any]:
    """One measurement in this (fresh) process: median time over `repeats`, peak RSS growth of the first call."""
    import torch

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        if impl == "upstream_ref":
            fn = _load_upstream_ref(sdist, Path(tmp))
        else:
            from jetson_mamba.ops import selective_scan_fn, use_backend

            def fn(*args: Any, **kwargs: Any) -> Any:
                with use_backend("torch"):
                    return selective_scan_fn(*args, **kwargs)
        grad = mode == "fwd+bwd"

        def once(shape: Dict[str, int]) -> None:
            x = _inputs(**shape, grad=grad)
            out = fn(x["u"], x["delta"], x["A"], x["B"], x["C"], D=x["D"], z=x["z"],
                     delta_bias=x["delta_bias"], delta_softplus=True)
            if grad:
                out.backward(torch.ones_like(out))

        once({"batch": 1, "dim": 8, "L": 16, "dstate": 4})  # load libraries, JIT paths
        x = _inputs(**SHAPE, grad=grad)
        base = _status_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the high-water mark to the current RSS
        times: List[float] = []
        for _ in range(repeats):
            start = time.perf_counter()
            out = fn(x["u"], x["delta"], x["A"], x["B"], x["C"], D=x["D"], z=x["z"],
                     delta_bias=x["delta_bias"], delta_softplus=True)
            if grad:
                out.backward(torch.ones_like(out))
            times.append(time.perf_counter() - start)
            if not times[1:]:
                peak_mib = (_status_kib("VmHWM") - base) / 1024
            del out
            for t in x.values():
                t.grad = None
    return {"impl": impl, "mode": mode, "median_s": statistics.median(times), "min_s": min(times),
            "repeats": repeats, "peak_mib": peak_mib, "threads": threads}


def _run_worker(impl: str, mode: str, repeats: int, exact_memory: bool, args: argparse.Namespace
                ) -> Dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", impl, mode, "--threads", str(args.threads),
           "--repeats", str(repeats), "--sdist", str(args.sdist)]
    env = dict(os.environ)
    if exact_memory:
        # Every allocation above 128 KiB gets its own mapping and goes back to the OS when freed,
        # so RSS follows live memory rather than what glibc's heap keeps (same for both sides;
        # it costs page faults, so forward times are taken in a separate, normal run).
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{impl} {mode} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _measure(impl: str, mode: str, args: argparse.Namespace) -> Dict[str, Any]:
    """Forward: times from `--repeats` normal calls, memory from one exact-memory call.
    Forward+backward (upstream's takes minutes): time and memory from `--bwd-repeats` exact-memory calls."""
    if mode == "fwd+bwd":
        return _run_worker(impl, mode, args.bwd_repeats, True, args)
    timed = _run_worker(impl, mode, args.repeats, False, args)
    timed["peak_mib"] = _run_worker(impl, mode, 1, True, args)["peak_mib"]
    return timed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdist", type=Path, default=DEFAULT_SDIST, help="mamba_ssm 2.2.4 sdist")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for both sides (default 1: steady numbers on a shared machine)")
    parser.add_argument("--repeats", type=int, default=5, help="timed forward calls per side")
    parser.add_argument("--bwd-repeats", type=int, default=1,
                        help="timed forward+backward calls per side (upstream's takes minutes)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--worker", nargs=2, metavar=("IMPL", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker[0], args.worker[1], args.threads, args.repeats, args.sdist)))
        return 0
    if not args.sdist.is_file():
        raise SystemExit(f"{args.sdist} not found; pass --sdist PATH to a mamba_ssm-2.2.4.tar.gz")
    rows = []
    for mode in ("fwd", "fwd+bwd"):
        ref = _measure("upstream_ref", mode, args)
        ours = _measure("jetson_mamba_torch", mode, args)
        rows.append({"mode": mode, "upstream_ref": ref, "jetson_mamba_torch": ours,
                     "speedup": ref["median_s"] / ours["median_s"],
                     "memory_ratio": ref["peak_mib"] / max(ours["peak_mib"], 1e-3)})
    if args.json:
        print(json.dumps({"shape": SHAPE, "threads": args.threads, "rows": rows}, indent=2))
        return 0
    print(f"shape {SHAPE}, fp32, z + D + delta_bias + softplus, torch threads {args.threads}")
    print(f"{'pass':8} {'upstream ref s':>15} {'ours s':>9} {'speedup':>8} {'ref MiB':>9} {'ours MiB':>9} {'less mem':>9}")
    for r in rows:
        a, b = r["upstream_ref"], r["jetson_mamba_torch"]
        print(f"{r['mode']:8} {a['median_s']:15.4f} {b['median_s']:9.4f} {r['speedup']:7.1f}x "
              f"{a['peak_mib']:9.1f} {b['peak_mib']:9.1f} {r['memory_ratio']:8.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
