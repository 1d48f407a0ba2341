"""Read a failed build log and say what went wrong and the exact fix.

The rules come from failures really met (../shared/measurements/build-breakages.md) and the
usual nvcc/gcc/ninja wordings; the first rule whose pattern matches wins, in this order, because
a killed compiler also produces secondary "ninja: build stopped" noise further down the log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional, Pattern, Tuple


@dataclass(frozen=True)
class Diagnosis:
    kind: str
    message: str
    fix: str
    evidence: Optional[str]  # the log line that decided it


_RULES: Tuple[Tuple[str, Pattern[str], str, str], ...] = (
    ("oom",
     re.compile(r"died due to signal 9|Killed signal terminated program|signal 9 \(Kill|"
                r"^\s*Killed\s*$|std::bad_alloc|virtual memory exhausted|cannot allocate memory|out of memory",
                re.IGNORECASE | re.MULTILINE),
     "the compiler was killed for lack of memory (the kernel's OOM killer)",
     "build with fewer parallel jobs (--jobs {fewer}) or add swap: sudo fallocate -l 8G /swapfile && "
     "sudo chmod 600 /swapfile && sudo mkswap /swapfile && sudo swapon /swapfile"),
    ("arch",
     re.compile(r"Unsupported gpu architecture '?(compute|sm)_\d+'?|nvcc fatal.*(gpu-architecture|arch)",
                re.IGNORECASE),
     "nvcc was asked for a GPU architecture it cannot compile",
     "pass only archs this toolkit supports (`nvcc --list-gpu-arch`), e.g. --arch 8.7; "
     "nvcc 13 has no sm_50..sm_72 (use a CUDA 12 toolkit for Xavier/Nano)"),
    ("cuda-missing",
     re.compile(r"CUDA_HOME environment variable is not set|nvcc: (command )?not found|"
                r"No such file or directory: '[^']*/bin/nvcc'|bare_metal_version.*not defined|"
                r"cannot find nvcc|nvcc was not found", re.IGNORECASE),
     "the CUDA toolkit (nvcc) was not found",
     "install the CUDA toolkit (on Jetson: sudo apt install nvidia-jetpack) and "
     "export CUDA_HOME=/usr/local/cuda PATH=/usr/local/cuda/bin:$PATH"),
    ("cub-cuda13",
     re.compile(r"namespace \"?cub\"? has no member|'cub::\w+' has not been declared|cub::(LaneId|CTA_SYNC)"),
     "the sources use cub functions CUDA 13 (CCCL 3) removed (mamba-ssm <= 2.2.5)",
     "build with jetson-mamba build (its cuda13-cub patch rewrites csrc/selective_scan/reverse_scan.cuh), "
     "or use mamba-ssm >= 2.2.6, or a CUDA 12 toolkit"),
    ("cxx20",
     re.compile(r"C\+\+20 or later compatible compiler is required|"
                r"'strong_ordering' in namespace 'std' does not name a type"),
     "torch's headers need C++20 but setup.py compiles with -std=c++17",
     "build with jetson-mamba build (it raises -std to what torch's headers demand); by hand: "
     "replace -std=c++17 with -std=c++20 in setup.py"),
    ("torch-abi",
     re.compile(r"undefined (symbol|reference to)\W+_ZN(3c10|2at|5torch)\S*"),
     "the extension does not match the torch it links against (C++ ABI or torch version mismatch)",
     "build with the same python/torch that will import it (no build isolation: "
     "pip wheel --no-build-isolation), and rebuild after every torch upgrade"),
    ("torch-missing",
     re.compile(r"No module named '?torch'?"),
     "the build's python cannot import torch",
     "run jetson-mamba from the environment that has torch (the build never installs torch)"),
    ("network",
     re.compile(r"urlopen error|Name or service not known|Guessing wheel URL"),
     "setup.py tried to download a prebuilt wheel instead of compiling",
     "set MAMBA_FORCE_BUILD=TRUE / CAUSAL_CONV1D_FORCE_BUILD=TRUE (jetson-mamba build does)"),
    ("disk",
     re.compile(r"No space left on device"),
     "the disk is full",
     "free space or point the work directory elsewhere (XDG_CACHE_HOME=/bigdisk/cache)"),
)

_ERROR_LINE = re.compile(r"error|fatal", re.IGNORECASE)


def diagnose(log: str, jobs: int = 1) -> Diagnosis:
    """The most likely cause of a failed build, from its full log."""
    for kind, pattern, message, fix in _RULES:
        match = pattern.search(log)
        if match:
            line = _line_of(log, match.start())
            return Diagnosis(kind, message, fix.format(fewer=max(1, jobs // 2)), line)
    errors = first_errors(log, 1)
    return Diagnosis("unknown", "the build failed", "read the full log; the first compiler error is usually the cause",
                     errors[0] if errors else None)


def _line_of(text: str, offset: int) -> str:
    start = text.rfind("\n", 0, offset) + 1
    end = text.find("\n", offset)
    return text[start:end if end >= 0 else len(text)].strip()


def progress_of(line: str) -> Optional[Tuple[int, int]]:
    """ninja's `[3/11] /usr/local/cuda/bin/nvcc ...` -> (3, 11)."""
    match = _PROGRESS.match(line)
    return (int(match.group(1)), int(match.group(2))) if match else None


_PROGRESS = re.compile(r"^\s*\[(\d+)/(\d+)\]")


def first_errors(log: str, limit: int = 3) -> List[str]:
    return [line.strip() for line in log.splitlines() if _ERROR_LINE.search(line)][:limit]


def unit_times(ninja_log: str) -> List[Tuple[str, float]]:
    """(object file, seconds) of each step in a `.ninja_log`, the latest run of each, slowest first."""
    latest = {}
    for line in ninja_log.splitlines():
        fields = line.split("\t")
        if len(fields) >= 4 and fields[0].isdigit() and fields[1].isdigit():
            latest[fields[3].rsplit("/", 1)[-1]] = (int(fields[1]) - int(fields[0])) / 1000.0
    return sorted(latest.items(), key=lambda item: -item[1])
