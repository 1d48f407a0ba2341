"""The real build: causal-conv1d 1.6.0 + mamba-ssm 2.2.5 for Orin (sm_87) with nvcc 13 and torch 2.14.

About 10 minutes on 2 cores. Compiles the real upstream sdists with every build patch (arch list,
CUDA 13 cub, C++20, compression) and the runtime fixes baked in, then checks the wheels' GPU
code, their metadata, the archive entries, that their Python parts import, and that a rebuild
of unchanged sources compiles nothing. Its stderr is a pipe, as in CI: the log must show both
packages compiling at the same time, a line per finished unit and a heartbeat while units run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import pytest

from jetson_mamba.archive import load_manifest
from jetson_mamba.probe.fatbin import archs_of_wheel
from jetson_mamba.wheelbuild.wheel import check_wheel


def _nvcc() -> str:
    home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    found = shutil.which("nvcc") or (f"{home}/bin/nvcc" if Path(home, "bin", "nvcc").is_file() else None)
    if found is None:
        pytest.skip("nvcc (the CUDA toolkit) is not installed: the real build needs it "
                    "(install CUDA 13.0 or set CUDA_HOME)")
    return found


def _build(args: List[str], cache: Path) -> Tuple[Dict[str, Any], str]:
    """(the --json report, the progress log on stderr)."""
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    done = subprocess.run([sys.executable, "-m", "jetson_mamba", "build", *args, "--json"], capture_output=True,
                          text=True, env=env, timeout=3000, check=False)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return json.loads(done.stdout), done.stderr


def _check_progress_log(report: Dict[str, Any], log: str) -> None:
    """Both packages at once; every unit's line (name, seconds, k/N); heartbeats; the slowest unit named."""
    assert report["schedule"]["parallel"], report["schedule"]
    first, second = report["results"]
    assert first["started_s"] < second["finished_s"] and second["started_s"] < first["finished_s"]
    assert "compiling at the same time: causal-conv1d 1.6.0 (4 units" in log
    lines = re.findall(r"^(causal-conv1d 1\.6\.0|mamba-ssm 2\.2\.5): (\S+\.o) (\d+\.\d) s \((\d+)/(\d+) units\)$",
                       log, re.MULTILINE)
    assert sorted((p.split()[0], u) for p, u, *_ in lines) == sorted((r["package"], r["unit"]) for r in report["units"])
    assert len(lines) == 14 and {(p, n) for p, _, _, _, n in lines} == {("causal-conv1d 1.6.0", "4"),
                                                                        ("mamba-ssm 2.2.5", "10")}
    beats = re.findall(r"^\.\.\. (\d+) s: (.*)$", log, re.MULTILINE)
    assert len(beats) >= 3 and any("causal-conv1d 1.6.0 0/4 units at" in b and "unfinished: " in b for _, b in beats), \
        log[-3000:]
    slowest = report["slowest_unit"]
    assert slowest == report["units"][0] and slowest["seconds"] == max(u["seconds"] for u in report["units"])
    assert f"slowest unit: {slowest['package']} {slowest['unit']} {slowest['seconds']:.1f} s" in log


@pytest.mark.slow
def test_build_the_tested_pair_for_orin(shared: Path, tmp_path: Path,
                                        venv_factory: Callable[[str], Path]) -> None:
    _nvcc()
    cache, out, archive = tmp_path / "cache", tmp_path / "wheels", tmp_path / "archive"
    report, log = _build(["causal-conv1d==1.6.0", "mamba-ssm==2.2.5", "--arch", "8.7", "--source",
                          str(shared / "sdists"), "--out", str(out), "--archive", str(archive)], cache)
    _check_progress_log(report, log)
    results = {r["name"]: r for r in report["results"]}
    assert list(results) == ["causal-conv1d", "mamba-ssm"]
    assert {"cuda13-cub", "cxx20-for-torch-headers", "gencode-requested-archs",
            "transformers5-generation-output"} <= set(results["mamba-ssm"]["patches"])
    wheels = sorted(out.glob("*.whl"))
    assert [w.name.split("-")[:2] for w in wheels] == [["causal_conv1d", "1.6.0+cu130.torch2.14.sm87"],
                                                      ["mamba_ssm", "2.2.5+cu130.torch2.14.sm87"]]
    for wheel in wheels:
        binaries = archs_of_wheel(wheel)
        assert binaries, f"{wheel.name} has no GPU code"
        assert all(a.sass == ("8.7",) and a.ptx == () for a in binaries.values()), (wheel.name, binaries)
        assert check_wheel(wheel) == []
        assert wheel.stat().st_size < 20e6
    manifest = load_manifest(archive)
    assert manifest is not None and sorted(w.filename for w in manifest.wheels) == [w.name for w in wheels]

    python = venv_factory("built-pair")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", *map(str, wheels)],
                   check=True)
    probe = ("import causal_conv1d, mamba_ssm, mamba_ssm.modules.mamba_simple, mamba_ssm.utils.generation; "
             "print(causal_conv1d.__file__, mamba_ssm.__version__)")
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert str(python.parent.parent) in done.stdout  # the built wheel, not some other copy

    again, log = _build(["causal-conv1d==1.6.0", "--arch", "8.7", "--source", str(shared / "sdists"), "--out",
                         str(tmp_path / "again")], cache)
    assert again["results"][0]["reused_tree"] and again["results"][0]["compiled_units"] == 0
    assert again["units"] == [] and "causal-conv1d 1.6.0: every object up to date" in log
