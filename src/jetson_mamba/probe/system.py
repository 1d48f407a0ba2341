"""Host facts outside Python: memory, the CUDA toolkit and nvidia-smi. Never raises."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from jetson_mamba.probe.jetson import SMALL_FILE_LIMIT
from jetson_mamba.probe.model import CudaInfo, GpuInfo, MemoryInfo
from jetson_mamba.untrusted import read_within


def run_quiet(argv: Sequence[str], timeout: float = 20.0) -> Optional[str]:
    """stdout of a command, or None if it is missing, fails or hangs."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def parse_meminfo(text: str) -> Optional[MemoryInfo]:
    values: Dict[str, int] = {}
    for line in text.splitlines():
        match = re.match(r"(\w+):\s+(\d+)\s*kB", line)
        if match:
            values[match.group(1)] = int(match.group(2)) // 1024
    if "MemTotal" not in values:
        return None
    return MemoryInfo(
        total_mb=values["MemTotal"],
        available_mb=values.get("MemAvailable", values.get("MemFree", 0)),
        swap_total_mb=values.get("SwapTotal", 0),
        swap_free_mb=values.get("SwapFree", 0),
    )


def read_memory(root: Path) -> Optional[MemoryInfo]:
    data = read_within(root, "proc/meminfo", SMALL_FILE_LIMIT)
    return None if data is None else parse_meminfo(data.decode("utf-8", "replace"))


def parse_nvcc_version(text: str) -> Optional[str]:
    """`Cuda compilation tools, release 13.0, V13.0.88` -> "13.0"."""
    match = re.search(r"release (\d+\.\d+)", text)
    return match.group(1) if match else None


def _candidate_homes(env: Mapping[str, str], root: Path) -> List[tuple]:
    homes = [(env[var], f"${var}") for var in ("CUDA_HOME", "CUDA_PATH") if env.get(var)]
    homes.append((str(root / "usr/local/cuda"), "/usr/local/cuda"))
    versioned = sorted((root / "usr/local").glob("cuda-*"), reverse=True) if (root / "usr/local").is_dir() else []
    homes.extend((str(path), str(path)) for path in versioned)
    return homes


def _toolkit_release(root: Path, home: Path) -> Optional[str]:
    """major.minor from the toolkit's version.json (CUDA 11.1+) or version.txt (older), read, never run."""
    data = read_within(root, home / "version.json", SMALL_FILE_LIMIT)
    if data:
        try:
            version = json.loads(data.decode("utf-8", "replace"))["cuda"]["version"]
        except (ValueError, KeyError, TypeError):
            version = ""
        found = re.match(r"(\d+\.\d+)", str(version))
        if found:
            return found.group(1)
    text = read_within(root, home / "version.txt", SMALL_FILE_LIMIT)
    found = re.search(r"CUDA Version (\d+\.\d+)", text.decode("utf-8", "replace")) if text else None
    return found.group(1) if found else None


def read_cuda(root: Path, env: Optional[Mapping[str, str]] = None, run: bool = True) -> CudaInfo:
    """The toolkit: $CUDA_HOME/$CUDA_PATH, /usr/local/cuda*, then nvcc on PATH.

    With run=False (a device image given by `doctor --root`: its files are untrusted) the image's
    nvcc is never executed; the release comes from the toolkit's version file."""
    env = os.environ if env is None else env
    for home, source in _candidate_homes(env, root):
        nvcc = Path(home) / "bin" / "nvcc"
        if nvcc.is_file():
            if not run:
                return CudaInfo(home=home, nvcc=str(nvcc), version=_toolkit_release(root, Path(home)),
                                source=f"{source} (version file; the image's nvcc is not run)")
            output = run_quiet([str(nvcc), "--version"])
            return CudaInfo(home=home, nvcc=str(nvcc), version=parse_nvcc_version(output or ""), source=source)
    nvcc_path = shutil.which("nvcc", path=env.get("PATH")) if run else None
    if nvcc_path:
        output = run_quiet([nvcc_path, "--version"])
        home = str(Path(os.path.realpath(nvcc_path)).parent.parent)
        return CudaInfo(home=home, nvcc=nvcc_path, version=parse_nvcc_version(output or ""), source="nvcc on PATH")
    return CudaInfo(home=None, nvcc=None, version=None, source="not found")


def parse_nvidia_smi(text: str) -> Optional[GpuInfo]:
    """`NVIDIA H200, 9.0` lines -> the first GPU, with the count of GPUs."""
    rows = [line.split(",") for line in text.strip().splitlines() if "," in line]
    if not rows:
        return None
    name, arch = rows[0][0].strip(), rows[0][1].strip()
    return GpuInfo(name=name, arch=arch if re.fullmatch(r"\d+\.\d+", arch) else None,
                   source="nvidia-smi", count=len(rows))


def read_nvidia_smi() -> Optional[GpuInfo]:
    output = run_quiet(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"])
    return parse_nvidia_smi(output) if output else None
