"""The build environment's nvcc flags, with the real nvcc of this machine (no GPU needed): nvcc reads
NVCC_APPEND_FLAGS itself and hands --split-compile on to ptxas, so one unit uses several cores."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from jetson_mamba.probe import probe_machine
from jetson_mamba.wheelbuild.plan import PACKAGES, make_build_plan
from jetson_mamba.wheelbuild.toolchain import probe_toolchain

KERNEL = "__global__ void scale(float *x, float a) { x[threadIdx.x] *= a; }\n"


def test_split_compile_reaches_the_real_nvcc(tmp_path: Path) -> None:
    machine = probe_machine()
    if machine.cuda.nvcc is None:
        pytest.skip("no nvcc on this machine")
    toolchain = probe_toolchain(machine)
    if not toolchain.split_compile:
        pytest.skip(f"nvcc {toolchain.cuda_version} has no --split-compile")
    plan = make_build_plan(machine, toolchain, [], "8.7", 1)
    env = plan.env(PACKAGES["causal-conv1d"])
    if machine.cpu_count > 1:
        assert env["NVCC_APPEND_FLAGS"].endswith(f"--split-compile={machine.cpu_count}")
    else:
        pytest.skip("one core: no split threads to give")
    source = tmp_path / "k.cu"
    source.write_text(KERNEL)
    done = subprocess.run([toolchain.nvcc, "-c", str(source), "-o", str(tmp_path / "k.o"), "--dryrun"],
                          capture_output=True, text=True, env={**os.environ, **env}, timeout=120)
    assert done.returncode == 0, done.stderr
    ptxas = [line for line in done.stderr.splitlines() if line.startswith("#$ ptxas")]
    assert ptxas and all(f"-split-compile={machine.cpu_count}" in line for line in ptxas), done.stderr[-2000:]
    compiled = subprocess.run([toolchain.nvcc, "-c", str(source), "-o", str(tmp_path / "k.o"),
                               "-gencode", "arch=compute_87,code=sm_87"],
                              capture_output=True, text=True, env={**os.environ, **env}, timeout=300)
    assert compiled.returncode == 0 and (tmp_path / "k.o").stat().st_size > 0, compiled.stderr
