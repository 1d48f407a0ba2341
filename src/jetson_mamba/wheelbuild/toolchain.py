"""Probe the compilers and headers a build uses: nvcc's targets and flags, torch's C++ standard.

Read from the tools and the headers themselves, not from version tables, so a JetPack
nvcc or a torch nightly is judged by what it really does.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path
from typing import Optional, Tuple

from jetson_mamba.probe.model import MachineInfo
from jetson_mamba.probe.python_env import target_facts
from jetson_mamba.probe.system import run_quiet
from jetson_mamba.wheelbuild.plan import Toolchain

# torch's headers refuse older standards with e.g. `#error C++20 or later compatible compiler is required`.
_STD_ERROR = re.compile(r"#\s*error\s+\"?C\+\+(\d+) or later")
_STD_HEADERS = ("ATen/ATen.h", "c10/macros/Macros.h", "c10/util/C++17.h", "torch/extension.h")


def parse_gpu_archs(listing: str) -> Tuple[str, ...]:
    """`nvcc --list-gpu-arch` output (compute_75 ...) -> ("7.5", ...)."""
    sms = sorted({int(m) for m in re.findall(r"compute_(\d+)", listing)})
    return tuple(f"{sm // 10}.{sm % 10}" for sm in sms)


def required_cxx_std(include_dir: Optional[str]) -> int:
    """The C++ standard torch's headers demand, from their `#error C++NN or later` guards."""
    if include_dir is None:
        return 17
    found = [17]
    for header in _STD_HEADERS:
        path = Path(include_dir) / header
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        found.extend(int(m) for m in _STD_ERROR.findall(text))
    return max(found)


def probe_toolchain(machine: MachineInfo, python: Optional[str] = None) -> Toolchain:
    """The toolchain the build would use on this machine (never raises; missing parts are None)."""
    python = python or sys.executable
    nvcc = machine.cuda.nvcc
    archs: Tuple[str, ...] = ()
    compress = split = False
    if nvcc:
        archs = parse_gpu_archs(run_quiet([nvcc, "--list-gpu-arch"]) or "")
        usage = run_quiet([nvcc, "--help"]) or ""
        compress, split = "--compress-mode" in usage, "--split-compile " in usage
    data, _failure = target_facts(python, {"interpreter": True, "distributions": {"names": ["torch"]},
                                           "torch_headers": True}, timeout=60.0)
    data = data or {"interpreter": {}, "distributions": {}, "torch_headers": None}
    include, machine_name = data["torch_headers"], data["interpreter"].get("machine")
    torch_version = data["distributions"].get("torch", {}).get("version")
    return Toolchain(python=python, cuda_home=machine.cuda.home, nvcc=nvcc, cuda_version=machine.cuda.version,
                     nvcc_archs=archs, compress_mode=compress, torch_version=torch_version,
                     torch_include=include, torch_cxx_std=required_cxx_std(include),
                     ccache=shutil.which("ccache"), split_compile=split, machine=machine_name,
                     platform_tag=wheel_platform_tag(data["interpreter"].get("platform")))


def wheel_platform_tag(platform: Optional[str]) -> Optional[str]:
    """sysconfig's "linux-x86_64" -> the wheel tag "linux_x86_64" (what `pip wheel` writes for an extension)."""
    return platform.replace("-", "_").replace(".", "_") if platform else None
