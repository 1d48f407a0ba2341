"""`jetson-mamba bench --op block --op lm --op yolo`: upstream's modules (real mamba-ssm / causal-conv1d from the
sdists, installed by pip without kernels) on our stand-ins; compiled/ratio columns only where the compiled
extensions really run (the GPU test), else a line saying why there is no ratio."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, List

import pytest

WORKLOADS = ["--op", "block", "--op", "lm", "--op", "yolo"]


def bench(python: Path, *args: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("JETSON_MAMBA_BACKEND", "TRITON_INTERPRET")}
    return subprocess.run([str(python), "-m", "jetson_mamba", "bench", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def names(rows: List[dict], batch: int) -> List[str]:
    return [f"{r['workload']}: {r['name']}" for r in rows if r["batch"] == batch]


@pytest.mark.slow
def test_workloads_on_the_cpu_through_upstream_modules(pair_venv: Callable, tmp_path: Path) -> None:
    python = pair_venv("2.3.2.post1", "1.6.0", tag="bench-workloads")
    markdown, partial = tmp_path / "edge.md", tmp_path / "rows.jsonl"
    proc = bench(python, *WORKLOADS, "--batch", "1", "--repeat", "1", "--warmup", "0", "--backend", "torch",
                 "--json", "--markdown", str(markdown), "--partial", str(partial))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert {"device", "peak_gbps", "torch", "python", "results", "plot", "markdown"} <= set(report)
    assert any(r["op"] == "block" and r["status"] == "timed" for r in report["results"]), "today's block rows"
    work = report["workloads"]
    assert work["ours_backend"] == "torch" and "CUDA" in work["compiled_missing"]
    rows = work["rows"]
    assert names(rows, 1) == [
        "block: Mamba(32) L32 forward", "block: Mamba(32) L32 forward+backward",
        "lm: 130M-shaped prefill L32", "lm: generate 4 tokens without CUDA graphs (all sequences)",
        "lm: generate 4 tokens, cg=True (all sequences)", "yolo: Mamba-YOLO-T 32x32 eager",
        "yolo: Mamba-YOLO-T 32x32 ours torch.compile(reduce-overhead) vs compiled eager"]
    for r in rows:
        assert r["compiled"] is None and r["ratio"] is None, r
        if "cg=True" in r["name"] or "reduce-overhead" in r["name"]:
            assert r["status"] == "unavailable" and "CUDA" in r["message"], r
        else:
            assert r["status"] == "timed" and r["ours"] > 0 and r["message"] is None, r
            assert r["unit"] == ("tok/s" if "generate" in r["name"] else "ms")
    # every row was written as it finished, in order
    assert [json.loads(line) for line in partial.read_text().splitlines()] == rows
    text = markdown.read_text()
    assert "\n| workload | batch | dtype | ours (torch) |\n|---|---|---|---|\n" in text  # no compiled, no ratio
    assert "No ratio: the compiled kernels cannot run here (tensors are on cpu" in text
    assert "| block: Mamba(32) L32 forward | 1 | float32 |" in text


@pytest.mark.slow
def test_block_runs_where_mamba_ssm_init_cannot_import(pair_venv: Callable) -> None:
    """The lab's case: mamba_ssm/__init__ pulls in generation, which needs a transformers it cannot import.
    The block still runs (upstream's Mamba without that __init__); lm says why it cannot."""
    python = pair_venv("2.3.2.post1", "1.6.0", tag="bench-workloads")
    code = ("import sys; sys.modules['transformers'] = None\n"
            "from jetson_mamba.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    env = {key: value for key, value in os.environ.items() if key not in ("JETSON_MAMBA_BACKEND", "TRITON_INTERPRET")}
    proc = subprocess.run([str(python), "-c", code, "bench", "--op", "block", "--op", "lm", "--repeat", "1",
                           "--warmup", "0", "--json"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout)["workloads"]["rows"]
    assert [(r["workload"], r["status"]) for r in rows] == [("block", "timed"), ("block", "timed"),
                                                            ("lm", "unavailable")], rows
    assert "transformers" in rows[-1]["message"]


def test_workloads_without_mamba_ssm_say_why(tmp_path: Path) -> None:
    """Without upstream installed the lm workload is one 'unavailable' row naming the missing module."""
    code = ("import sys; sys.modules['mamba_ssm'] = None\n"
            "from jetson_mamba.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, "-c", code, "bench", "--op", "lm", "--json"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = json.loads(proc.stdout)["workloads"]["rows"]
    assert row["workload"] == "lm" and row["status"] == "unavailable" and "mamba_ssm" in row["message"]


@pytest.mark.parametrize("value", ["1,x", "0", ","])
def test_bad_batch_is_one_line_before_timing(value: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "jetson_mamba", "bench", "--op", "lm", "--batch", value],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--batch" in proc.stderr and "e.g. --batch 1,8" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.mark.gpu
def test_workloads_compiled_vs_ours_on_the_gpu(tmp_path: Path) -> None:
    """With the compiled wheels installed (benchmarks/gpu/edge.sh puts them on PYTHONPATH): both sides on
    every eager row and a ratio; without them, skipped (a fake compiled module proves nothing)."""
    from jetson_mamba.bench.workloads import compiled_missing

    why = compiled_missing("cuda")
    if why:
        pytest.skip(why)
    markdown = tmp_path / "edge.md"
    proc = bench(Path(sys.executable), *WORKLOADS, "--small", "--batch", "1", "--json", "--markdown", str(markdown))
    assert proc.returncode == 0, proc.stderr[-3000:]
    work = json.loads(proc.stdout)["workloads"]
    assert work["compiled_missing"] is None and work["ours_backend"] != "cuda"
    for r in work["rows"]:
        assert r["status"] == "timed", r
        assert r["ours"] > 0 and r["compiled"] > 0 and r["ratio"] > 0, r
    assert "| compiled | ratio compiled/ours |" in markdown.read_text()


def test_no_workloads_unless_named() -> None:
    """A run without --op block/lm/yolo costs what it did: no workloads (the key is there, empty)."""
    proc = subprocess.run([sys.executable, "-m", "jetson_mamba", "bench", "--op", "selective_scan", "--shape",
                           "B=1,D=8,L=16,N=4", "--repeat", "1", "--warmup", "0", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["workloads"] is None
