"""CPU timing and peak memory of jetson_mamba's chunked SSD next to mamba-ssm's own PyTorch SSD.

    .venv/bin/python benchmarks/bench_cpu_ssd.py [--seqlen 2048] [--repeats 3] [--sequences K]

Mamba2(d_model=1024) mixer shape: batch 1, 32 heads x headdim 64, dstate 128, ngroups 1, chunk 256,
fp32. The upstream side is `ssd_minimal_discrete` (Listing 1 of the SSD paper) read from the
mamba-ssm 2.2.4 sdist in ../shared, the only upstream SSD that runs without a GPU. Each
measurement runs in a fresh process so its peak RSS is its own; prints one JSON line per run.

--sequences K adds Mamba2's packed prefill: K sequences of seeded random lengths packed in one row, the
output and each sequence's final state (`cu_seqlens`, `return_varlen_states`) in one call, next to
"per_sequence": one call per sequence with its final state (how the states were computed before).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "ops"))
SDIST = Path(os.environ.get("JETSON_MAMBA_SHARED", ROOT.parent / "shared")) / "sdists" / "mamba_ssm-2.2.4.tar.gz"


def _offsets(seqlen: int, sequences: int) -> List[int]:
    """cu_seqlens of `sequences` seeded random lengths (each >= 1) that add up to seqlen."""
    import random

    cuts = sorted(random.Random(0).sample(range(1, seqlen), sequences - 1)) if sequences > 1 else []
    return [0, *cuts, seqlen]


def measure(impl: str, mode: str, seqlen: int, repeats: int, sequences: int = 0) -> Dict[str, Any]:
    import torch
    from upstream_sources import ssd_minimal  # tests/ops: reads the sdist

    from jetson_mamba.ops.ssd import mamba_chunk_scan_combined

    g = torch.Generator().manual_seed(0)
    b, h, p, n = 1, 32, 64, 128
    x = torch.randn(b, seqlen, h, p, generator=g)
    dt = torch.nn.functional.softplus(torch.randn(b, seqlen, h, generator=g) - 3)
    A = -torch.rand(h, generator=g) * 4 - 0.5
    B, C = torch.randn(b, seqlen, 1, n, generator=g), torch.randn(b, seqlen, 1, n, generator=g)
    leaves = [t.requires_grad_(mode != "forward") for t in (x, dt, A, B, C)]
    minimal = ssd_minimal(SDIST) if impl == "ssd_minimal_discrete" else None
    bounds = _offsets(seqlen, sequences)

    def once() -> None:
        x, dt, A, B, C = leaves
        if impl == "varlen":
            mamba_chunk_scan_combined(x, dt, A, B, C, 256, cu_seqlens=torch.tensor(bounds, dtype=torch.int32),
                                      return_varlen_states=True)
        elif impl == "per_sequence":
            for s, e in zip(bounds, bounds[1:]):
                mamba_chunk_scan_combined(x[:, s:e], dt[:, s:e], A, B[:, s:e], C[:, s:e], 256,
                                          return_final_states=True)
        elif minimal is None:
            y = mamba_chunk_scan_combined(x, dt, A, B, C, 256)
        else:
            y, _ = minimal(x * dt[..., None], A * dt, B.expand(-1, -1, h, -1), C.expand(-1, -1, h, -1), 256)
        if mode != "forward":
            y.sum().backward()

    with torch.set_grad_enabled(mode != "forward"):
        once()  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            once()
            times.append(time.perf_counter() - start)
    return {"impl": impl, "mode": mode, "seqlen": seqlen, **({"sequences": sequences} if sequences else {}),
            "best_s": round(min(times), 3),
            "peak_rss_MiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "threads": torch.get_num_threads()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seqlen", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sequences", type=int, default=0, help="also the packed prefill of this many sequences")
    parser.add_argument("--one", nargs=2, metavar=("IMPL", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], args.one[1], args.seqlen, args.repeats, args.sequences)))
        return 0
    print(json.dumps({"load_average": os.getloadavg(), "cpus": os.cpu_count()}))
    runs = [(impl, mode) for impl in ("jetson_mamba", "ssd_minimal_discrete") for mode in ("forward", "forward+backward")]
    if args.sequences > 1:
        runs += [("varlen", "forward"), ("per_sequence", "forward")]
    for impl, mode in runs:
        proc = subprocess.run([sys.executable, __file__, "--seqlen", str(args.seqlen), "--repeats", str(args.repeats),
                               "--sequences", str(args.sequences), "--one", impl, mode], capture_output=True, text=True)
        print(proc.stdout.strip() or json.dumps({"impl": impl, "mode": mode, "error": proc.stderr[-500:]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
