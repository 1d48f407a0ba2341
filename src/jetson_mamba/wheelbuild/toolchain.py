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
from jetson_mamba.probe.python_env import run_script
from jetson_mamba.probe.system import run_quiet
from jetson_mamba.wheelbuild.plan import Toolchain

# torch's headers refuse older standards with e.g. `#error C++20 or later compatible compiler is required`.
_STD_ERROR = re.compile(r"#\s*error\s+\"?C\+\+(\d+) or later")
_STD_HEADERS = ("ATen/ATen.h", "c10/macros/Macros.h", "c10/util/C++17.h", "torch/extension.h")

_TORCH_SCRIPT = """
import importlib.util, json, os, platform, sysconfig
try:
    from importlib.metadata import version
    v = version("torch")
except Exception:
    v = None
spec = importlib.util.find_spec("torch")
inc = None
if spec is not None and spec.submodule_search_locations:
    inc = os.path.join(list(spec.submodule_search_locations)[0], "include")
print(json.dumps({"version": v, "include": inc if inc and os.path.isdir(inc) else None,
                  "machine": platform.machine(), "platform": sysconfig.get_platform()}))
"""


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
    data, _failure = run_script(python, _TORCH_SCRIPT, timeout=60.0)
    data = data or {}
    include = data.get("include")
    return Toolchain(python=python, cuda_home=machine.cuda.home, nvcc=nvcc, cuda_version=machine.cuda.version,
                     nvcc_archs=archs, compress_mode=compress, torch_version=data.get("version"),
                     torch_include=include, torch_cxx_std=required_cxx_std(include),
                     ccache=shutil.which("ccache"), split_compile=split, machine=data.get("machine"),
                     platform_tag=wheel_platform_tag(data.get("platform")))


def wheel_platform_tag(platform: Optional[str]) -> Optional[str]:
    """sysconfig's "linux-x86_64" -> the wheel tag "linux_x86_64" (what `pip wheel` writes for an extension)."""
    return platform.replace("-", "_").replace(".", "_") if platform else None
