"""`jetson-mamba bench` through the real CLI on tiny CPU shapes: JSON, Markdown, the chart, and refusal."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

TINY = ["--op", "selective_scan", "--op", "causal_conv1d", "--shape", "B=1,D=8,L=16,N=4,W=3",
        "--repeat", "3", "--warmup", "1"]
BROKEN = '''
"""A selective scan that is fast and wrong: it returns its input."""
from jetson_mamba.ops.selective_scan import torch as scan

is_available = scan.is_available
selective_scan_backward = scan.selective_scan_backward


def selective_scan_forward(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    _, _, last = scan.selective_scan_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return u.clone(), None if z is None else u.clone(), last
'''


def bench(*args: str, prelude: str = "", extra_path: str = "") -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("JETSON_MAMBA_BACKEND", "TRITON_INTERPRET")}
    if extra_path:
        env["PYTHONPATH"] = extra_path + os.pathsep + env.get("PYTHONPATH", "")
    script = prelude + "import sys\nfrom jetson_mamba.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run([sys.executable, "-c", script, "bench", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def test_bench_json_and_plot(tmp_path: Path) -> None:
    chart = tmp_path / "bench.png"
    proc = bench(*TINY, "--json", "--plot", str(chart))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["device"] == "cpu" and report["peak_gbps"] is None and report["plot"] == str(chart)
    assert report["schema_version"] == 1
    timed = [r for r in report["results"] if r["status"] == "timed"]
    assert {(r["op"], r["direction"]) for r in timed} == {
        ("selective_scan", "forward"), ("selective_scan", "forward+backward"),
        ("causal_conv1d", "forward"), ("causal_conv1d", "forward+backward")}
    for r in timed:
        assert r["backend"] == "torch" and r["clock"] == "perf_counter" and r["samples"] >= 3
        assert 0 < r["min_ms"] <= r["p10_ms"] <= r["median_ms"] <= r["p90_ms"]
        assert r["ratio_to_fastest"] == 1.0 and r["gbps"] > 0 and r["peak_fraction"] is None
    conv_fwd = next(r for r in timed if r["op"] == "causal_conv1d" and r["direction"] == "forward")
    # x (1, 8, 16), weight (8, 3), bias (8) in fp32 read once, out (1, 8, 16) written once
    assert conv_fwd["bytes"] == 4 * (8 * 16 + 8 * 3 + 8 + 8 * 16)
    assert "W=3" not in conv_fwd["problem"] and "width 3" in conv_fwd["problem"]
    unavailable = {r["backend"]: r["message"] for r in report["results"] if r["status"] == "unavailable"}
    assert "CUDA" in unavailable["cuda"] and "TRITON_INTERPRET=1" in unavailable["triton"]
    png = chart.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 5000
    width, height = struct.unpack(">II", png[16:24])  # IHDR: a page-wide chart, a row per workload and backend
    assert width <= 1200 and 200 <= height <= 1200, (width, height)


def test_plot_without_matplotlib_fails_before_timing_anything(tmp_path: Path) -> None:
    chart = tmp_path / "bench.png"
    proc = bench(*TINY, "--plot", str(chart), prelude="import sys\nsys.modules['matplotlib'] = None\n")
    assert proc.returncode != 0 and not chart.exists()
    assert "--plot needs matplotlib" in proc.stderr and "pip install" in proc.stderr
    assert "selective_scan" not in proc.stdout, "the benchmark ran before the dependency was checked"


def test_bench_refuses_wrong_backend_and_writes_markdown(tmp_path: Path) -> None:
    (tmp_path / "broken_scan.py").write_text(BROKEN)
    prelude = ("from jetson_mamba.ops.backend import register_backend\n"
               "register_backend('selective_scan', 'broken', 'broken_scan', priority=50)\n")
    proc = bench("--op", "selective_scan", "--shape", "B=1,D=8,L=16,N=4", "--repeat", "3", "--warmup", "0",
                 "--backend", "broken,torch", "--markdown", prelude=prelude, extra_path=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert text.startswith("## jetson-mamba bench on cpu (")
    assert "| dtype | direction | backend | median ms | p10-p90 ms | GB/s | % of peak | x fastest | cuda/this |" in text
    rows: List[str] = [line for line in text.splitlines() if line.startswith("| float32")]
    by_backend: Dict[str, List[str]] = {}
    for row in rows:
        by_backend.setdefault(row.split("|")[3].strip(), []).append(row)
    assert len(by_backend["torch"]) == 2 and all(row.split("|")[-3].strip() == "1.00" and row.split("|")[-2].strip() == "-"
                                             for row in by_backend["torch"])
    assert len(by_backend["broken"]) == 2
    assert all("refused: correctness check failed, not timed: forward" in row for row in by_backend["broken"])
    assert "out:" in by_backend["broken"][0]
    assert "cuda" not in by_backend and "Not timed here:" not in text  # --backend leaves the others out
