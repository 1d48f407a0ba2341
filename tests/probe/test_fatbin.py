"""The fatbin reader on real binaries: one compiled here with nvcc, and the lab GPU wheels."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from jetson_mamba.probe.fatbin import archs_of_elf, archs_of_file, archs_of_wheel, merge, runs_on
from jetson_mamba.probe.model import FatbinArchs

KERNEL = "__global__ void add(float* x) { x[threadIdx.x] += 1.0f; }\nvoid launch(float* x) { add<<<1, 32>>>(x); }\n"


@pytest.fixture(scope="module")
def two_arch_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    if not Path(nvcc).exists():
        pytest.skip("nvcc is not installed")
    work = tmp_path_factory.mktemp("cu")
    (work / "k.cu").write_text(KERNEL)
    library = work / "k.so"
    subprocess.run([nvcc, "-shared", "-Xcompiler", "-fPIC",
                    "-gencode", "arch=compute_80,code=sm_80",
                    "-gencode", "arch=compute_90,code=[sm_90,compute_90]",
                    "-o", str(library), str(work / "k.cu")], check=True)
    return library


def test_reads_what_nvcc_compiled(two_arch_library: Path) -> None:
    assert archs_of_file(two_arch_library) == FatbinArchs(sass=("8.0", "9.0"), ptx=("9.0",))


def test_lab_wheels_contain_exactly_sm90(wheelhouse: Path) -> None:
    wheels = sorted(wheelhouse.glob("*.whl"))
    assert len(wheels) == 2
    for wheel in wheels:
        found = archs_of_wheel(wheel)
        assert len(found) == 1, found
        assert merge(list(found.values())) == FatbinArchs(sass=("9.0",), ptx=())


def test_binary_without_gpu_code(tmp_path: Path) -> None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    (tmp_path / "x.c").write_text("int f(void) { return 1; }\n")
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(tmp_path / "x.so"), str(tmp_path / "x.c")], check=True)
    assert archs_of_file(tmp_path / "x.so") is None


def test_not_elf() -> None:
    with pytest.raises(ValueError, match="not an ELF"):
        archs_of_elf(b"PK\x03\x04 this is a zip")


def test_truncated_library_does_not_crash(two_arch_library: Path) -> None:
    data = two_arch_library.read_bytes()
    assert archs_of_elf(data[: len(data) // 3]) is None  # section table cut off: no GPU code seen


@pytest.mark.parametrize(
    "archs, gpu, ok",
    [
        (FatbinArchs(("9.0",), ()), "9.0", True),
        (FatbinArchs(("9.0",), ()), "8.7", False),
        (FatbinArchs(("8.0",), ()), "8.7", True),  # same major, lower minor: binary compatible
        (FatbinArchs(("8.7",), ()), "8.0", False),
        (FatbinArchs((), ("8.0",)), "9.0", True),  # PTX is JIT-compiled for newer GPUs
        (FatbinArchs((), ("9.0",)), "8.7", False),
    ],
)
def test_runs_on(archs: FatbinArchs, gpu: str, ok: bool) -> None:
    assert runs_on(archs, gpu)[0] is ok
