"""The copies, casts and zero-fills our stand-ins add to upstream's mamba_inner_fn (issue #18's glue),
counted by benchmarks/count_standin_copies.py in a fresh process (the Triton backend under
TRITON_INTERPRET=1) and pinned, so that glue removed cannot come back unnoticed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "benchmarks" / "count_standin_copies.py"

# Per forward + backward of a bf16 mamba_inner_fn. Triton: one zero-fill for the five fp32 gradient
# buffers the backward adds into atomically (dA, dB, dC, dD, ddelta_bias; was five fills) and one
# cast of dB and dC together to bf16 (was two), as the compiled kernel's dB.to / dC.to; nothing else.
# The torch backend (the CPU fallback) copies as part of its chunked algorithm: pinned as measured.
PINNED = {
    "triton": {"zeros": 1, "_to_copy": 1},
    "torch": {"_to_copy": 22, "copy_": 34, "clone": 13, "zeros": 4, "zero_": 9},
}


def _count(backend: str, shared: Path) -> Dict[str, Dict[str, int]]:
    env = {**os.environ, "TRITON_INTERPRET": "1", "JETSON_MAMBA_BACKEND": backend}
    proc = subprocess.run([sys.executable, str(TOOL), "--json", "--sdists", str(shared / "sdists")],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("backend", sorted(PINNED))
def test_standins_add_no_glue_to_mamba_inner_fn(backend: str, shared: Path) -> None:
    counts = _count(backend, shared)
    listing = "\n".join(f"{c:3d} {n} {who} {origin}" for c, n, who, origin in counts["rows"] if who == "ours")
    assert counts["ours"] == PINNED[backend], f"our copies/casts/fills changed:\n{listing}"
    # upstream's own glue is the same on every backend (a stand-in returning other layouts would add clones)
    assert counts["upstream"].get("copy_") == 3 and counts["upstream"].get("_to_copy") == 2, counts["upstream"]
