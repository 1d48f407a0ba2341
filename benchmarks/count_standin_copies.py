"""CPU tool: every copy, cast, clone and zero-fill in upstream's `mamba_inner_fn` forward + backward on the stand-ins.

Issue #18's glue: a `Mamba` block on the stand-ins ran copies and clones that the compiled extensions
do not. This runs upstream's own `mamba_inner_fn` (mamba-ssm 2.3.2.post1, causal-conv1d 1.6.0, their
Python sources from ../shared/sdists) at a tiny shape under a TorchDispatchMode, and lists each
copy_ / clone (.contiguous()) / _to_copy (.to, .float()) / fill with its Python origin: `ours`
(a frame in jetson_mamba) or `upstream`. The Triton interpreter's own host copies are left out.

    TRITON_INTERPRET=1 JETSON_MAMBA_BACKEND=triton python benchmarks/count_standin_copies.py [--dtype bfloat16] [--json]
    JETSON_MAMBA_BACKEND=torch python benchmarks/count_standin_copies.py

tests/ops/test_standin_glue.py pins the counts (`--json`: {"ours": {op: n}, "upstream": {...}, "rows": [...]}).
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import sys
import tarfile
import tempfile
import traceback
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parent.parent
SDISTS = ("mamba_ssm-2.3.2.post1", "causal_conv1d-1.6.0")
WATCHED = frozenset({"copy_", "clone", "_to_copy", "zero_", "fill_", "zeros", "zeros_like", "new_zeros"})


def _load_mamba_inner_fn(sdists: Path, workdir: Path) -> Any:
    """Upstream's mamba_inner_fn from the sdists' sources, on the stand-ins (no compiled extension)."""
    for name in SDISTS:
        with tarfile.open(sdists / f"{name}.tar.gz") as archive:
            archive.extractall(workdir, filter="data")
        sys.path.insert(0, str(workdir / name))
    from jetson_mamba.ops import standins

    standins.install(["selective_scan_cuda", "causal_conv1d_cuda"])
    # mamba_ssm/__init__ imports the models (and transformers): the package without its __init__
    sys.modules["mamba_ssm"] = importlib.util.module_from_spec(importlib.util.find_spec("mamba_ssm"))
    from mamba_ssm.ops.selective_scan_interface import mamba_inner_fn  # type: ignore[import-not-found]

    return mamba_inner_fn


def count(dtype_name: str, sdists: Path) -> Dict[str, Any]:
    """{"ours": {op: calls}, "upstream": {op: calls}, "rows": [[calls, op, who, origin]]} for one
    forward + backward (after a warm-up one)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    rows: Dict[tuple, int] = collections.Counter()

    class Spy(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            name = func.__name__.split(".")[0]
            if name in WATCHED:
                frames = [f for f in traceback.extract_stack()[:-1] if "/torch/" not in f.filename]
                if not any("triton/runtime/interpreter" in f.filename for f in frames):
                    ours = [f for f in frames if "jetson_mamba" in f.filename]
                    where = (ours or frames)[-1]
                    origin = f"{Path(where.filename).name}:{where.lineno} {(where.line or '').strip()}"
                    rows[(name, "ours" if ours else "upstream", origin)] += 1
            return func(*args, **(kwargs or {}))

    with tempfile.TemporaryDirectory() as tmp:
        inner = _load_mamba_inner_fn(sdists, Path(tmp))
        dtype = getattr(torch, dtype_name)
        torch.manual_seed(0)
        b, d, L, n, r = 2, 16, 64, 4, 2
        params = [torch.randn(b, 2 * d, L, dtype=dtype), torch.randn(d, 1, 4, dtype=dtype),
                  torch.randn(d, dtype=dtype), torch.randn(r + 2 * n, d, dtype=dtype) / 3,
                  torch.randn(d, r, dtype=dtype), torch.randn(d, d, dtype=dtype), None,
                  -torch.rand(d, n) - 0.5, None, None, torch.randn(d), torch.randn(d)]
        leaves = [p.requires_grad_(True) if p is not None else None for p in params]
        grad = torch.randn(b, L, d, dtype=dtype)

        def step() -> None:
            inner(*leaves, delta_softplus=True).backward(grad)

        step()
        with Spy():
            step()
    totals: Dict[str, Dict[str, int]] = {"ours": collections.Counter(), "upstream": collections.Counter()}
    for (name, who, _), calls in rows.items():
        totals[who][name] += calls
    listing: List[list] = [[calls, *key] for key, calls in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][2]))]
    return {"ours": dict(totals["ours"]), "upstream": dict(totals["upstream"]), "rows": listing}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--sdists", type=Path, default=ROOT.parent / "shared" / "sdists")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = count(args.dtype, args.sdists)
    if args.json:
        print(json.dumps(result))
        return
    for calls, name, who, origin in result["rows"]:
        print(f"{calls:3d} {name:10s} {who:8s} {origin}")
    print("ours:", result["ours"], " upstream:", result["upstream"])


if __name__ == "__main__":
    main()
