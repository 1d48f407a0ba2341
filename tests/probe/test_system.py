"""Host facts: /proc/meminfo, nvcc, nvidia-smi output, and the whole probe never raising."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from jetson_mamba.probe import probe_machine
from jetson_mamba.probe.system import (
    parse_meminfo,
    parse_nvcc_version,
    parse_nvidia_smi,
    read_cuda,
    read_memory,
)

ROOTS = Path(__file__).parent / "roots"


def test_meminfo_of_a_nano() -> None:
    memory = read_memory(ROOTS / "nano-jp4")
    assert memory is not None
    assert (memory.total_mb, memory.available_mb, memory.swap_total_mb) == (3956, 2832, 1978)


def test_meminfo_garbage() -> None:
    assert parse_meminfo("nothing here") is None


def test_nvcc_version() -> None:
    text = "nvcc: NVIDIA (R) Cuda compiler driver\nCuda compilation tools, release 13.0, V13.0.88\n"
    assert parse_nvcc_version(text) == "13.0"
    assert parse_nvcc_version("") is None


def test_nvidia_smi_rows() -> None:
    gpu = parse_nvidia_smi("NVIDIA H200, 9.0\nNVIDIA H200, 9.0\n")
    assert gpu is not None and (gpu.name, gpu.arch, gpu.count, gpu.source) == ("NVIDIA H200", "9.0", 2, "nvidia-smi")
    assert parse_nvidia_smi("") is None
    assert parse_nvidia_smi("Orin, [N/A]").arch is None


def test_cuda_home_from_environment() -> None:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    home = str(Path(nvcc).resolve().parent.parent)
    cuda = read_cuda(Path("/nonexistent-root"), env={"CUDA_HOME": home, "PATH": ""})
    assert cuda.source == "$CUDA_HOME" and cuda.version is not None


def test_a_device_image_nvcc_is_read_not_run(tmp_path: Path) -> None:
    """`doctor --root IMAGE`: the image's files are untrusted; its nvcc (here a script leaving a mark)
    must not be executed; the toolkit release comes from version.json / version.txt."""
    home = tmp_path / "usr" / "local" / "cuda"
    (home / "bin").mkdir(parents=True)
    mark = tmp_path / "ran"
    (home / "bin" / "nvcc").write_text(f"#!/bin/sh\ntouch {mark}\necho 'release 99.9, V99.9.1'\n")
    (home / "bin" / "nvcc").chmod(0o755)
    (home / "version.json").write_text('{"cuda": {"name": "CUDA SDK", "version": "11.4.19"}}')
    machine = probe_machine(tmp_path)
    assert machine.cuda.version == "11.4" and "not run" in machine.cuda.source and not mark.exists()
    (home / "version.json").unlink()
    (home / "version.txt").write_text("CUDA Version 10.2.89\n")
    assert read_cuda(tmp_path, env={}, run=False).version == "10.2" and not mark.exists()
    assert read_cuda(tmp_path, env={}).version == "99.9" and mark.exists()  # the live machine's own nvcc runs


def test_no_cuda_anywhere(tmp_path: Path) -> None:
    cuda = read_cuda(tmp_path, env={"PATH": str(tmp_path)})
    assert (cuda.nvcc, cuda.version, cuda.source) == (None, None, "not found")


def test_probe_survives_a_missing_interpreter(tmp_path: Path) -> None:
    machine = probe_machine(ROOTS / "orin-agx-jp6", python=str(tmp_path / "no-python"))
    assert machine.torch.version is None and "could not run" in (machine.torch.error or "")
    assert machine.gpu is not None and machine.gpu.arch == "8.7" and machine.gpu.source == "jetson-soc-table"
    assert machine.packages.distributions == {}
