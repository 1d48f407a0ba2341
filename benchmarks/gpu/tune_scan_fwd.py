"""Which tile of the Triton scan forward is fastest at the shapes our users run at batch 1 (issue #18)?

The autotuner picks among `_FWD_CONFIGS` (ops/selective_scan/triton.py); at the LM shapes (bf16, z, D
1536-2048, B1) the pick took ~2x the compiled kernel's GPU time. This times the forward kernel alone
under every candidate of a wider grid (BD x T x num_warps x num_stages), the compiled kernel beside it
in the same process, and prints the best few per shape, so the table can gain what wins:

    python benchmarks/gpu/tune_scan_fwd.py [--wide] [--json FILE]     (on the GPU machine; the sm_90 wheels
                                                                           on PYTHONPATH give the compiled row)

Times: median of triton.testing.do_bench (ms). A candidate that does not compile or gives another
result than the table's first config (max abs difference > 1e-2 relative) is listed as failed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_triton_gpu import cuda_scan_fwd, scan_inputs  # noqa: E402

from jetson_mamba.ops.selective_scan import triton as scan  # noqa: E402

# (name, batch, dim, L, groups, dtype, with z): the LM prefill's (130M: d_inner 1536; 370M: 2048),
# upstream's Mamba(1024) block at batch 1 and 8, and Mamba-YOLO's scan at batch 1.
SHAPES = [
    ("lm130m B1 L1024", 1, 1536, 1024, 1, torch.bfloat16, True),
    ("lm370m B1 L1024", 1, 2048, 1024, 1, torch.bfloat16, True),
    ("block B1 L2048", 1, 2048, 2048, 1, torch.bfloat16, True),
    ("block B8 L2048", 8, 2048, 2048, 1, torch.bfloat16, True),
    ("yolo B1 L6400", 1, 512, 6400, 4, torch.float32, False),
]


def candidates(wide: bool) -> List[Tuple[int, int, int, int]]:
    """(BD, T, num_warps, num_stages), each tile at least one element a thread (every compile costs ~1 s)."""
    bds, ts, warps, stages = ([1, 2, 4, 8, 16], [4, 8, 16, 32, 64], [1, 2, 4], [1, 2, 3]) if wide else \
        ([1, 2, 4, 8], [8, 16, 32], [1, 2], [1, 2])
    return [c for c in itertools.product(bds, ts, warps, stages) if c[0] * c[1] * 16 >= 32 * c[2]]


def run_config(cfg: Tuple[int, int, int, int], inputs: Tuple[torch.Tensor, ...]) -> Any:
    """The forward through jetson-mamba's wrapper with the autotuner held to one config."""
    bd, t, w, s = cfg
    scan._fwd.configs = [triton.Config({"BD": bd, "T": t}, num_warps=w, num_stages=s)]
    scan._fwd.cache = {}
    u, delta, A, B, C, D, z, bias, _ = inputs
    return lambda: scan.selective_scan_forward(u, delta, A, B, C, D, z, bias, True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wide", action="store_true", help="a wider grid (~4x the compiles)")
    ap.add_argument("--json", type=Path, help="write every row here")
    ap.add_argument("--top", type=int, default=6)
    args = ap.parse_args()
    try:
        import selective_scan_cuda as ext  # type: ignore[import-not-found]
    except ImportError:
        ext = None
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, "
          f"compiled kernel: {'yes' if ext is not None else 'no'}", flush=True)
    original = scan._fwd.configs
    table_first = scan._FWD_CONFIGS
    rows: List[Dict[str, Any]] = []
    for name, batch, dim, L, groups, dtype, with_z in SHAPES:
        inputs = scan_inputs(batch, dim, L, 16, groups, dtype, with_z, 0)
        compiled_ms: Optional[float] = None
        if ext is not None:
            compiled_ms = triton.testing.do_bench(lambda i=inputs: cuda_scan_fwd(ext, *i), return_mode="median")
        scan._fwd.configs = original  # the autotuner's own pick, as users get it
        scan._fwd.cache = {}
        ref = scan.selective_scan_forward(*inputs[:8], True)
        ref_out = ref[1] if with_z else ref[0]
        tuned_ms = triton.testing.do_bench(
            lambda i=inputs: scan.selective_scan_forward(*i[:8], True), return_mode="median")
        pick = getattr(scan._fwd, "best_config", None)
        results: List[Tuple[float, Tuple[int, int, int, int]]] = []
        for cfg in candidates(args.wide):
            try:
                fn = run_config(cfg, inputs)
                got = fn()
                out = got[1] if with_z else got[0]
                err = ((out.float() - ref_out.float()).abs().max() / ref_out.float().abs().max()).item()
                if not err <= 1e-2:
                    rows.append({"shape": name, "config": cfg, "error": f"rel diff {err:.3g}"})
                    continue
                ms = triton.testing.do_bench(fn, return_mode="median")
            except Exception as exc:  # a tile that does not compile (registers, shared memory)
                rows.append({"shape": name, "config": cfg, "error": str(exc).splitlines()[0][:120]})
                continue
            results.append((ms, cfg))
            rows.append({"shape": name, "config": cfg, "ms": ms})
        results.sort()
        print(f"\n{name}: compiled {compiled_ms if compiled_ms is None else round(compiled_ms, 4)} ms, "
              f"ours as tuned today {tuned_ms:.4f} ms (pick {pick}), table {table_first[:3]}...", flush=True)
        for ms, cfg in results[: args.top]:
            ratio = f"{compiled_ms / ms:.2f}" if compiled_ms else "-"
            print(f"  BD={cfg[0]:<3} T={cfg[1]:<3} warps={cfg[2]} stages={cfg[3]}: {ms:.4f} ms  compiled/ours {ratio}")
        rows.append({"shape": name, "compiled_ms": compiled_ms, "tuned_ms": tuned_ms, "pick": str(pick)})
    scan._fwd.configs = original
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
