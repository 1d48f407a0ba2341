"""Exported Mamba-YOLO on ONNX Runtime next to PyTorch eager, batch 1, on the CPU.

    JETSON_MAMBA_BACKEND=torch .venv/bin/python benchmarks/bench_cpu_yolo_onnx.py \
        [--scales t,b,l] [--imgsz 320,640] [--chunks 64] [--threads 2] [--repeats 5]

For each scale, size and chunk: export (`export_onnx`, the path of `jetson-mamba yolo export`),
then time onnxruntime and PyTorch alternately in one process (the same load on both: this machine
is shared), median of --repeats. Prints one JSON line per case and a Markdown table row.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List


def measure(scale: str, imgsz: int, chunk: int, threads: int, repeats: int, workdir: Path) -> Dict[str, Any]:
    import torch

    from jetson_mamba.models.mamba_yolo import load_yolo
    from jetson_mamba.models.mamba_yolo.export import (
        check_onnx,
        export_onnx,
        export_ready,
        op_counts,
        ort_session,
    )

    model = load_yolo(scale).model
    file = workdir / f"mamba-yolo-{scale}-{imgsz}-c{chunk}.onnx"
    start = time.perf_counter()
    export_onnx(model, file, imgsz=imgsz, chunk=chunk)
    export_s = time.perf_counter() - start
    images = torch.rand(1, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0))
    error = check_onnx(file, model, images)
    torch.set_num_threads(threads)
    session = ort_session(file, threads)
    eager = export_ready(model)
    feed = {"images": images.numpy()}
    onnx_t: List[float] = []
    torch_t: List[float] = []
    with torch.no_grad():
        eager(images)
        session.run(None, feed)
        for _ in range(repeats):  # alternate, so both see the same load
            t0 = time.perf_counter()
            session.run(None, feed)
            t1 = time.perf_counter()
            eager(images)
            onnx_t.append(t1 - t0)
            torch_t.append(time.perf_counter() - t1)
    onnx_ms, torch_ms = statistics.median(onnx_t) * 1e3, statistics.median(torch_t) * 1e3
    return {"scale": scale, "imgsz": imgsz, "chunk": chunk, "threads": threads, "export_s": round(export_s, 1),
            "mb": round(file.stat().st_size / 1e6, 1), "nodes": sum(op_counts(file).values()),
            "onnxruntime_ms": round(onnx_ms, 1), "torch_ms": round(torch_ms, 1),
            "ratio": round(onnx_ms / torch_ms, 3), "relative_error": error,
            "onnx_runs_ms": [round(t * 1e3) for t in onnx_t], "torch_runs_ms": [round(t * 1e3) for t in torch_t],
            "loadavg": [round(v, 1) for v in os.getloadavg()],
            "backend": os.environ.get("JETSON_MAMBA_BACKEND", "auto")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", default="t")
    parser.add_argument("--imgsz", default="320,640")
    parser.add_argument("--chunks", default="64", help="comma list of scan chunk sizes to compare")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("YOLO_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="jm-onnx-bench-") as tmp:
        for scale in args.scales.split(","):
            for imgsz in (int(s) for s in args.imgsz.split(",")):
                for chunk in (int(c) for c in args.chunks.split(",")):
                    row = measure(scale, imgsz, chunk, args.threads, args.repeats, Path(tmp))
                    print(json.dumps(row), flush=True)
                    print(f"| {scale.upper()} | {imgsz} | {chunk} | {row['torch_ms']:.0f} | {row['onnxruntime_ms']:.0f} "
                          f"| {row['ratio']:.2f} | {row['relative_error']:.1e} | {row['export_s']:.0f} s, "
                          f"{row['mb']} MB, {row['nodes']} nodes |", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
