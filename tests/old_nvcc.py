"""An nvcc that still targets the older Jetsons (sm_53, sm_62, sm_72), assembled in a cache without root.

CUDA 13 cannot target sm_50..sm_72, and the package index's nvcc wheels (nvidia-cuda-nvcc-cu11/-cu12)
hold ptxas, libnvvm and headers but no nvcc driver, cicc or cudafe++. So the compilers come from
Debian bookworm: `nvidia-cuda-toolkit` 11.8 (component non-free) and g++ 11 (nvcc 11.8's newest host
compiler), fetched by `apt-get download` with a private state folder and unpacked by `dpkg-deb -x`:
the system's apt sources and installed packages are never touched. The CUDA 11.8 runtime, crt and
CCCL headers (Debian ships them in a 774 MB package) come from the nvidia-*-cu11 wheels, and torch
2.1.2's headers (C++17, as JetPack 5's torch 2.0/2.1; torch >= 2.14 demands C++20, which nvcc 11
lacks) from its 84 MB aarch64 wheel. Assembled in a temporary folder and renamed under a lock:
idempotent, about a minute cold, nothing warm.
"""

from __future__ import annotations

import ast
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

SUITE = "bookworm"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
DEBS = ("nvidia-cuda-toolkit", "g++-11", "gcc-11", "cpp-11", "gcc-11-base", "libgcc-11-dev", "libstdc++-11-dev")
CUDA_WHEELS = ("nvidia-cuda-runtime-cu11==11.8.89", "nvidia-cuda-nvcc-cu11==11.8.89", "nvidia-cuda-cccl-cu11==11.8.89.*")
TORCH = "torch==2.1.2"
# The tools nvcc runs (the deb's /usr/bin/nvcc is a wrapper script: the real driver is in its lib folder).
TOOLS = ("cudafe++", "ptxas", "fatbinary", "nvlink", "bin2c", "cuobjdump", "nvprune")
# The nvcc.profile of NVIDIA's own toolkits, for a folder laid out like /usr/local/cuda.
PROFILE = """TOP              = $(_HERE_)/..
NVVMIR_LIBRARY_DIR = $(TOP)/nvvm/libdevice
PATH            += $(_HERE_):
INCLUDES        +=  "-I$(TOP)/include" $(_SPACE_)
LIBRARIES        =+ $(_SPACE_) "-L$(TOP)/lib64"
CUDAFE_FLAGS    +=
PTXAS_FLAGS     +=
"""
# CMake writes this header into torch's CUDA builds (from c10/cuda/impl/cuda_cmake_macros.h.in,
# whose one `#cmakedefine` is set for shared builds); the aarch64 CPU wheel leaves it out.
CUDA_CMAKE_MACROS = "#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n"
SMOKE = "#include <cuda_bf16.h>\n__global__ void k(__nv_bfloat16 *x) { x[threadIdx.x] = __float2bfloat16(1.f); }\n"


@dataclass(frozen=True)
class OldToolkit:
    cuda_home: Path  # laid out like /usr/local/cuda: bin/nvcc, include/, nvvm/libdevice
    ccbin: Path  # g++ 11
    torch_include: Path  # torch 2.1.2's include/
    torch_cpp_extension: Path  # torch 2.1.2's torch/utils/cpp_extension.py, for its nvcc flags

    @property
    def nvcc(self) -> Path:
        return self.cuda_home / "bin" / "nvcc"

    def common_nvcc_flags(self) -> List[str]:
        """torch 2.1.2's COMMON_NVCC_FLAGS, read from its cpp_extension.py (not imported: it needs torch)."""
        tree = ast.parse(self.torch_cpp_extension.read_text())
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "COMMON_NVCC_FLAGS" for t in node.targets):
                return [ast.literal_eval(e) for e in node.value.elts]  # type: ignore[attr-defined]
        raise AssertionError(f"no COMMON_NVCC_FLAGS in {self.torch_cpp_extension}")


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "jetson-mamba" / "test-material" / "cuda-11.8"


def _layout(root: Path) -> OldToolkit:
    return OldToolkit(root / "cuda", root / "gcc" / "usr" / "bin" / "g++-11", root / "torch" / "include",
                      root / "torch" / "cpp_extension.py")


def _run(command: List[str], cwd: Path, timeout: float) -> Tuple[bool, str]:
    try:
        done = subprocess.run(command, cwd=str(cwd), capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        return False, str(error)
    return done.returncode == 0, (done.stderr or done.stdout)[-600:]


def _apt_download(work: Path) -> Optional[str]:
    """The debs into work/debs via a private apt state (bookworm main + non-free); None or why not."""
    state = work / "apt"
    for sub in ("lists/partial", "archives/partial", "parts"):
        (state / sub).mkdir(parents=True)
    (state / "sources.list").write_text(
        f"deb [signed-by={KEYRING}] http://deb.debian.org/debian {SUITE} main non-free\n"
        f"deb [signed-by={KEYRING}] http://deb.debian.org/debian {SUITE}-updates main non-free\n")
    options = ["-q", "-o", f"Dir::State::Lists={state / 'lists'}", "-o", f"Dir::Cache::Archives={state / 'archives'}",
               "-o", f"Dir::Etc::SourceList={state / 'sources.list'}", "-o", f"Dir::Etc::SourceParts={state / 'parts'}",
               "-o", "Debug::NoLocking=1"]
    if os.geteuid() == 0:  # apt would hand the downloads to its _apt user, who cannot write our folder
        options += ["-o", "APT::Sandbox::User=root"]
    ok, output = _run(["apt-get", *options, "update"], work, 300)
    if not ok:
        return f"apt-get update of Debian {SUITE} non-free failed: {output.strip()[-300:]}"
    debs = work / "debs"
    debs.mkdir()
    ok, output = _run(["apt-get", *options, "download", *DEBS], debs, 600)
    return None if ok else f"apt-get download {' '.join(DEBS)} failed: {output.strip()[-300:]}"


def _pip_download(work: Path) -> Optional[str]:
    base = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.10"]
    ok, output = _run([*base, "--platform", "manylinux2014_x86_64", "-d", str(work / "wheels"), *CUDA_WHEELS], work, 600)
    if ok:
        ok, output = _run([*base, "--platform", "manylinux2014_aarch64", "-d", str(work / "torch-wheel"), TORCH], work, 600)
    return None if ok else f"pip download of the CUDA 11.8 header wheels / {TORCH} failed: {output.strip()[-300:]}"


def _assemble(work: Path) -> None:
    """The debs and wheels downloaded into `work` -> work/{cuda,gcc,torch}."""
    unpacked = work / "unpacked"
    for deb in sorted((work / "debs").glob("*.deb")):
        target = work / "gcc" if not deb.name.startswith("nvidia-cuda-toolkit") else unpacked
        subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True)
    cuda, lib = work / "cuda", unpacked / "usr/lib/nvidia-cuda-toolkit"
    (cuda / "nvvm").mkdir(parents=True)
    shutil.copytree(lib / "bin", cuda / "bin", symlinks=True, ignore=shutil.ignore_patterns("g++", "gcc", "nvcc.profile"))
    for tool in TOOLS:
        shutil.copy2(unpacked / "usr/bin" / tool, cuda / "bin" / tool)
    (cuda / "bin" / "nvcc.profile").write_text(PROFILE)
    shutil.copytree(lib / "libdevice", cuda / "nvvm" / "libdevice")
    for wheel in sorted((work / "wheels").glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                head, sep, rest = name.partition("/include/")
                if sep and head.startswith("nvidia/") and rest and not name.endswith("/") and rest != "__init__.py":
                    target = cuda / "include" / rest
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(archive.read(name))
    torch = work / "torch"
    with zipfile.ZipFile(next((work / "torch-wheel").glob("torch-*.whl"))) as archive:
        for name in archive.namelist():
            if name.startswith("torch/include/") and not name.endswith("/"):
                target = torch / "include" / name[len("torch/include/"):]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(name))
        (torch / "cpp_extension.py").write_bytes(archive.read("torch/utils/cpp_extension.py"))
    macros = torch / "include" / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h"
    macros.parent.mkdir(parents=True, exist_ok=True)
    macros.write_text(CUDA_CMAKE_MACROS)
    for folder in ("unpacked", "debs", "wheels", "torch-wheel", "apt"):
        shutil.rmtree(work / folder)


def _smoke(toolkit: OldToolkit, work: Path) -> Optional[str]:
    source = work / "smoke.cu"
    source.write_text(SMOKE)
    ok, output = _run([str(toolkit.nvcc), "-ccbin", str(toolkit.ccbin), "-std=c++17", "-c", str(source), "-o",
                       str(work / "smoke.o"), "-gencode", "arch=compute_72,code=sm_72"], work, 300)
    source.unlink()
    (work / "smoke.o").unlink(missing_ok=True)
    return None if ok else f"the assembled nvcc 11.8 + g++ 11 cannot compile a kernel for sm_72: {output.strip()}"


def old_toolkit() -> Tuple[Optional[OldToolkit], str]:
    """(the cached toolkit, "") or (None, why it cannot be had here); assembles it on first use."""
    root = cache_dir()
    if (root / "READY").is_file():
        return _layout(root), ""
    missing = [tool for tool in ("apt-get", "dpkg-deb") if shutil.which(tool) is None]
    if missing:
        return None, f"no {' / '.join(missing)} here: nvcc 11.8 comes from Debian {SUITE}'s non-free archive"
    if not KEYRING.is_file():
        return None, f"no Debian archive keyring ({KEYRING}) to check Debian {SUITE}'s packages with"
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / "cuda-11.8.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / "READY").is_file():  # another process assembled it while we waited
            return _layout(root), ""
        with tempfile.TemporaryDirectory(dir=root.parent, prefix="cuda-11.8.") as temp:
            work = Path(temp)
            why = _apt_download(work) or _pip_download(work)
            if why:
                return None, why
            _assemble(work)
            why = _smoke(_layout(work), work)
            if why:
                return None, why
            (work / "READY").write_text(f"Debian {SUITE} {' '.join(DEBS)}; {' '.join(CUDA_WHEELS)}; {TORCH} headers\n")
            shutil.rmtree(root, ignore_errors=True)
            os.rename(work, root)
            work.mkdir()  # TemporaryDirectory removes it again on exit
    return _layout(root), ""
