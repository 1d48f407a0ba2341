"""The executor end to end with real pip on a tiny source tree that fails like a real build would."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from rich.console import Console

from jetson_mamba.errors import BuildError
from jetson_mamba.probe import probe_machine
from jetson_mamba.wheelbuild.executor import build_all
from jetson_mamba.wheelbuild.plan import BuildPlan, Spec, Toolchain

SETUP = '''
import io
import sys
print("[1/2] /usr/local/cuda/bin/nvcc -c csrc/causal_conv1d_fwd.cu", flush=True)
print("csrc/reverse_scan.cuh(132): error: namespace \\"cub\\" has no member \\"LaneId\\"", flush=True)
print("[2/2] /usr/local/cuda/bin/nvcc -c csrc/causal_conv1d_bwd.cu", flush=True)
sys.exit(1)
'''


def test_failed_build_is_diagnosed_with_the_full_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    checkout = tmp_path / "checkout"
    (checkout / "csrc").mkdir(parents=True)
    (checkout / "causal_conv1d").mkdir()
    (checkout / "causal_conv1d" / "__init__.py").write_text('__version__ = "1.6.0"\n')
    (checkout / "setup.py").write_text(SETUP)
    toolchain = Toolchain(python=sys.executable, cuda_home=None, nvcc="nvcc", cuda_version="13.0", nvcc_archs=(),
                          compress_mode=True, torch_version="2.14.1", torch_include="include", torch_cxx_std=20)
    plan = BuildPlan(specs=(Spec("causal-conv1d", "1.6.0"),), archs=("8.7",), jobs=3, jobs_reason="test",
                     label="cu130.torch2.14.sm87", cxx_std=20, toolchain=toolchain)
    with pytest.raises(BuildError) as error:
        build_all(plan, probe_machine(), [checkout], tmp_path / "out", None, Console(file=io.StringIO()))
    assert "CUDA 13" in error.value.message and "cuda13-cub" in error.value.fix
    log = Path(error.value.message.rsplit("full log: ", 1)[1])
    text = log.read_text()
    assert "[2/2]" in text and 'no member "LaneId"' in text  # everything pip printed, in order
    assert not (tmp_path / "out").exists()
