"""The build as data: what to build, for which GPUs, with how many jobs, under which label.

Everything here is a pure function of its arguments (a `Toolchain`, a `MachineInfo`,
strings from the command line), so tests check every decision without a compiler.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from jetson_mamba.compat.knowledge import (
    CUDA13_DROPPED_ARCHS,
    NVCC_PEAK_MB,
    TESTED_PAIR,
    nvcc_arch_range,
    nvcc_max_cxx_std,
    parse_version,
    recommended_max_jobs,
)
from jetson_mamba.errors import UsageError
from jetson_mamba.probe.jetson import JETSON_ARCH_FAMILY
from jetson_mamba.probe.model import MachineInfo
from jetson_mamba.wheelbuild.schedule import Share, split_threads

# Every compute capability NVIDIA has shipped (10.1 was renamed 11.0 in CUDA 13).
KNOWN_ARCHS = ("5.0", "5.2", "5.3", "6.0", "6.1", "6.2", "7.0", "7.2", "7.5", "8.0", "8.6", "8.7", "8.8",
               "8.9", "9.0", "10.0", "10.1", "10.3", "11.0", "12.0", "12.1")


@dataclass(frozen=True)
class PackageKind:
    """What we know about building one upstream package."""

    name: str  # distribution name, canonical
    module: str  # top-level import package
    force_build_env: str  # without it setup.py tries to download a prebuilt wheel (breakage #4)
    cuda_source_dir: str  # an sdist without this directory cannot be compiled


PACKAGES: Dict[str, PackageKind] = {
    "causal-conv1d": PackageKind("causal-conv1d", "causal_conv1d", "CAUSAL_CONV1D_FORCE_BUILD", "csrc"),
    "mamba-ssm": PackageKind("mamba-ssm", "mamba_ssm", "MAMBA_FORCE_BUILD", "csrc"),
}


@dataclass(frozen=True)
class Toolchain:
    """The compilers and headers a build will use, probed once (`wheelbuild.toolchain.probe_toolchain`)."""

    python: str
    cuda_home: Optional[str]
    nvcc: Optional[str]
    cuda_version: Optional[str]  # "13.0"
    nvcc_archs: Tuple[str, ...]  # what this nvcc can compile ("8.7", ...); empty = unknown
    compress_mode: bool  # nvcc accepts --compress-mode=size
    torch_version: Optional[str]  # "2.14.1+cu130"
    torch_include: Optional[str]
    torch_cxx_std: int  # the C++ standard torch's headers demand (20 for torch >= 2.14)
    ccache: Optional[str] = None
    split_compile: bool = False  # nvcc accepts --split-compile (optimizes one translation unit on N threads)
    machine: Optional[str] = None  # the build python's platform.machine(): "x86_64", "aarch64"
    platform_tag: Optional[str] = None  # the wheels' platform tag: "linux_x86_64"


@dataclass(frozen=True)
class Spec:
    name: str
    version: Optional[str]  # None: the newest available

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}=={self.version}"


@dataclass(frozen=True)
class BuildPlan:
    specs: Tuple[Spec, ...]
    archs: Tuple[str, ...]
    jobs: int
    jobs_reason: str
    label: str  # local version label, "cu130.torch2.14.sm87"
    cxx_std: int  # the -std=c++NN the patched setup.py uses
    toolchain: Toolchain
    warnings: Tuple[str, ...] = field(default_factory=tuple)
    split_threads: int = 1  # nvcc --split-compile threads per job: the cores the jobs leave idle

    def env(self, kind: PackageKind, share: Optional[Share] = None) -> Dict[str, str]:
        """What `pip wheel` needs set on top of the caller's environment: forced local build, jobs, toolkit,
        ccache; with `share`, that package's part of the jobs (packages compiled at the same time)."""
        jobs, split_threads = (share.jobs, share.split_threads) if share else (self.jobs, self.split_threads)
        env = {kind.force_build_env: "TRUE"}
        env["MAX_JOBS"] = str(jobs)
        # One nvcc thread per job: memory per job stays the measured 2.1 GB.
        env["NVCC_THREADS"] = "1"
        env["TORCH_CUDA_ARCH_LIST"] = ";".join(self.archs)
        if split_threads > 1:
            # nvcc reads NVCC_APPEND_FLAGS itself: no setup.py change. The slowest unit (causal-conv1d's
            # backward, alone ~90% of its package) then optimizes on several cores instead of one.
            appended = os.environ.get("NVCC_APPEND_FLAGS", "")
            env["NVCC_APPEND_FLAGS"] = f"{appended} --split-compile={split_threads}".strip()
        if self.toolchain.cuda_home:
            env["CUDA_HOME"] = self.toolchain.cuda_home
        if self.toolchain.ccache and self.toolchain.nvcc:
            # torch's cpp_extension honours PYTORCH_NVCC and CXX in the ninja file it writes.
            env["PYTORCH_NVCC"] = f"{self.toolchain.ccache} {self.toolchain.nvcc}"
            env["CXX"] = f"{self.toolchain.ccache} {os.environ.get('CXX', 'c++')}"
        return env

    def command(self, tree: Path, wheel_dir: Path) -> List[str]:
        return [self.toolchain.python, "-m", "pip", "wheel", "-v", "--no-build-isolation", "--no-deps",
                "--no-index", "-w", str(wheel_dir), str(tree)]

    def to_json(self) -> Dict[str, object]:
        return {"specs": [str(s) for s in self.specs], "archs": list(self.archs), "jobs": self.jobs,
                "jobs_reason": self.jobs_reason, "split_threads": self.split_threads, "label": self.label, "cxx_std": self.cxx_std,
                "warnings": list(self.warnings), "toolchain": dataclasses.asdict(self.toolchain)}


def arch_flag(arch: str) -> str:
    """"8.7" -> "87" (the number in sm_87 / compute_87)."""
    return arch.replace(".", "")


def _arch_key(arch: str) -> Tuple[int, ...]:
    return tuple(int(x) for x in arch.split("."))


def parse_arch(token: str) -> str:
    """`8.7`, `sm_87`, `compute_87`, `87` -> "8.7"; raises UsageError for anything else."""
    text = token.strip().lower()
    match = re.fullmatch(r"(?:sm_|compute_)?(\d+)", text)
    if match:
        digits = match.group(1)
        text = f"{digits[:-1]}.{digits[-1]}" if len(digits) >= 2 else digits
    if text not in KNOWN_ARCHS:
        raise UsageError(f"unknown GPU architecture {token!r}",
                         "give a compute capability like 8.7 (Orin), 9.0 (H100/H200) or sm_87; known: "
                         + ", ".join(KNOWN_ARCHS))
    return text


def parse_archs(text: str, toolchain: Toolchain) -> Tuple[str, ...]:
    """A comma/semicolon/space separated arch list, checked against what this nvcc compiles."""
    tokens = [t for t in re.split(r"[,;\s]+", text) if t]
    if not tokens:
        raise UsageError("empty --arch list", "give at least one arch, e.g. --arch 8.7")
    archs = sorted({parse_arch(t) for t in tokens}, key=_arch_key)
    unsupported = [a for a in archs if toolchain.nvcc_archs and a not in toolchain.nvcc_archs]
    if unsupported:
        cuda = toolchain.cuda_version or "?"
        dropped = [a for a in unsupported if a in CUDA13_DROPPED_ARCHS]
        why = " (nvcc 13 dropped sm_50..sm_72: Maxwell, Pascal, Volta and Xavier)" if dropped else ""
        raise UsageError(
            f"nvcc {cuda} ({toolchain.nvcc}) cannot compile for "
            + ", ".join(f"sm_{arch_flag(a)}" for a in unsupported) + why,
            "pick archs this toolkit supports (" + ", ".join(toolchain.nvcc_archs)
            + "), or build those GPUs with a CUDA 12 or 11 toolkit (CUDA_HOME=/usr/local/cuda-12.x), or write the "
            "tree for the board's own toolkit: --prepare-only DIR --cuda-version 11.4")
    return tuple(archs)


def default_archs(machine: MachineInfo, toolchain: Toolchain) -> Tuple[str, ...]:
    """The probed GPU's arch (torch, nvidia-smi or the Jetson SoC table)."""
    if machine.gpu is None or not machine.gpu.arch:
        raise UsageError("no GPU found on this machine to build for",
                         "name the target GPU: --arch 8.7 (Orin), 8.6 (RTX 30), 9.0 (H100/H200), ...")
    return parse_archs(machine.gpu.arch, toolchain)


def parse_spec(text: str) -> Spec:
    """`mamba-ssm==2.2.5` or `mamba-ssm` (newest); only the packages we know how to build."""
    try:
        requirement = Requirement(text)
    except InvalidRequirement as error:
        raise UsageError(f"cannot parse package spec {text!r}: {error}",
                         "write it like mamba-ssm==2.2.5 or causal-conv1d==1.6.0") from None
    name = canonicalize_name(requirement.name)
    if name not in PACKAGES:
        raise UsageError(f"jetson-mamba builds only {', '.join(PACKAGES)}, not {requirement.name!r}",
                         "build one of: " + ", ".join(PACKAGES))
    pinned = [s.version for s in requirement.specifier if s.operator in ("==", "===")]
    if len(requirement.specifier) and not pinned:
        raise UsageError(f"{text!r}: only exact versions can be built",
                         f"pin one version, e.g. {name}==" + dict(TESTED_PAIR).get(name, "1.0"))
    return Spec(name, pinned[0] if pinned else None)


def parse_specs(texts: Sequence[str]) -> Tuple[Spec, ...]:
    """The given specs in dependency order (causal-conv1d first); default: the tested pair."""
    specs = [parse_spec(t) for t in texts] if texts else [Spec(n, v) for n, v in TESTED_PAIR]
    order = list(PACKAGES)
    return tuple(sorted(specs, key=lambda s: order.index(s.name)))


def choose_jobs(machine: MachineInfo, requested: Optional[int]) -> Tuple[int, str, List[str]]:
    """(MAX_JOBS, why, warnings): from cores and available RAM + swap unless given."""
    warnings: List[str] = []
    memory = machine.memory
    if requested is not None:
        if requested < 1:
            raise UsageError(f"--jobs {requested} is not a positive number", "use --jobs 1 or more")
        return requested, "--jobs", warnings
    if memory is None:
        return 1, "memory unknown: one nvcc process at a time", warnings
    jobs = recommended_max_jobs(machine.cpu_count, memory.available_mb, memory.swap_free_mb)
    reason = (f"{machine.cpu_count} cores, {memory.available_mb} MB available RAM + {memory.swap_free_mb} MB "
              f"free swap, ~{NVCC_PEAK_MB} MB per nvcc process")
    if memory.available_mb + memory.swap_free_mb < NVCC_PEAK_MB:
        warnings.append(f"only {memory.available_mb + memory.swap_free_mb} MB of RAM + swap free; one nvcc "
                        f"process needs ~{NVCC_PEAK_MB} MB: add swap first (sudo fallocate -l 8G /swapfile && "
                        "sudo chmod 600 /swapfile && sudo mkswap /swapfile && sudo swapon /swapfile)")
    return jobs, reason, warnings


def local_label(toolchain: Toolchain, archs: Sequence[str]) -> str:
    """`cu130.torch2.14.sm87`: the toolkit, torch minor and GPU archs the wheel is for."""
    parts = []
    if toolchain.cuda_version:
        parts.append("cu" + toolchain.cuda_version.replace(".", ""))
    if toolchain.torch_version:
        match = re.match(r"(\d+)\.(\d+)", toolchain.torch_version)
        if match:
            parts.append(f"torch{match.group(1)}.{match.group(2)}")
    parts.extend(f"sm{arch_flag(a)}" for a in archs)
    return ".".join(parts)


def foreign_target_warning(toolchain: Toolchain, archs: Sequence[str]) -> Optional[str]:
    """Jetson archs built on a host that is not aarch64: wheels the Jetson cannot install, and how to get one."""
    jetson = [a for a in archs if a in JETSON_ARCH_FAMILY]
    if not jetson or toolchain.machine in (None, "aarch64"):
        return None
    gpus = ", ".join(f"sm_{arch_flag(a)} ({JETSON_ARCH_FAMILY[a]})" for a in jetson)
    tag = toolchain.platform_tag or f"linux_{toolchain.machine}"
    return (f"{gpus} is a Jetson GPU, and Jetsons run aarch64 (linux_aarch64 wheels); this host is {toolchain.machine}, "
            f"so these wheels are tagged {tag} and cannot be installed or run on a Jetson (they only show that the "
            "sources compile). For the Jetson, build on the Jetson itself (jetson-mamba build there), or write the "
            "patched trees with --prepare-only DIR and build them with an aarch64 toolchain: on the Jetson or in "
            "an arm64 JetPack container (docker run --platform linux/arm64 nvcr.io/nvidia/l4t-jetpack:<your L4T "
            "release>, emulated and slow)")


def for_target_cuda(toolchain: Toolchain, cuda_version: str) -> Toolchain:
    """The toolchain a tree prepared here will meet elsewhere: that nvcc's archs and flags, this torch's headers.

    Used by `--prepare-only DIR --cuda-version 11.4` to write trees for a JetPack 5 board from a
    machine with another toolkit (or none): its own nvcc says nothing about the target's.
    """
    span = nvcc_arch_range(cuda_version) if re.fullmatch(r"\d+\.\d+", cuda_version.strip()) else None
    if span is None:
        raise UsageError(f"--cuda-version {cuda_version!r} is not a CUDA release like 11.4",
                         "give the target toolkit's major.minor, e.g. --cuda-version 11.4 (JetPack 5) or 12.6 (JetPack 6)")
    low, high = _arch_key(span[0]), _arch_key(span[1])
    renamed = "10.1" if _arch_key(cuda_version.strip()) >= (13, 0) else "11.0"  # CUDA 13 renamed sm_101 to sm_110
    archs = tuple(a for a in KNOWN_ARCHS if low <= _arch_key(a) <= high and a != renamed)
    version = parse_version(cuda_version.strip())
    return dataclasses.replace(toolchain, cuda_home=None, nvcc=None, cuda_version=cuda_version.strip(),
                               nvcc_archs=archs, compress_mode=version is not None and version >= parse_version("12.8"),
                               split_compile=False)


def choose_cxx_std(toolchain: Toolchain, prepare_only: bool) -> Tuple[int, List[str]]:
    """(-std=c++NN, warnings): what torch's headers demand, unless this nvcc cannot take it.

    nvcc 11.x stops at C++17 while torch >= 2.14 demands C++20: a real build refuses that pair; a
    prepared tree is for another machine's torch (JetPack 5's torch 2.0/2.1 is C++17), so it gets
    the newest standard the target nvcc accepts, with a warning.
    """
    wanted = max(17, toolchain.torch_cxx_std)
    limit = nvcc_max_cxx_std(toolchain.cuda_version)
    if limit is None or wanted <= limit:
        return wanted, []
    cuda, torch = toolchain.cuda_version, toolchain.torch_version or "?"
    if limit < 17:
        raise UsageError(f"nvcc {cuda} accepts at most C++{limit}; causal-conv1d and mamba-ssm need C++17",
                         "compile with CUDA 11 or newer (JetPack 5+); on JetPack 4 (CUDA 10.2) use the portable "
                         "kernels instead: jetson-mamba patch")
    if not prepare_only:
        raise UsageError(f"nvcc {cuda} accepts at most C++{limit}, but torch {torch}'s headers demand C++{wanted}",
                         "build with a CUDA 12+ toolkit (CUDA_HOME=/usr/local/cuda-12.x), or with a torch whose "
                         "headers take C++17 (JetPack 5's torch 2.0/2.1), or write the tree for that machine: "
                         "--prepare-only DIR")
    return limit, [f"nvcc {cuda} accepts at most C++{limit}: the tree is written for -std=c++{limit}, so the torch "
                   f"it is built against must accept it (JetPack 5's torch 2.0/2.1 does; this torch {torch} "
                   f"demands C++{wanted})"]


def make_build_plan(machine: MachineInfo, toolchain: Toolchain, spec_texts: Sequence[str],
              arch_text: Optional[str], jobs: Optional[int], prepare_only: bool = False) -> BuildPlan:
    """Decide everything about a build from the probed machine and the command line."""
    specs = parse_specs(spec_texts)
    archs = parse_archs(arch_text, toolchain) if arch_text else default_archs(machine, toolchain)
    cxx_std, warnings = choose_cxx_std(toolchain, prepare_only)
    chosen, reason, job_warnings = choose_jobs(machine, jobs)
    warnings += job_warnings
    if toolchain.torch_version is None:
        warnings.append(f"torch is not importable by {toolchain.python}: the build needs its headers")
    foreign = foreign_target_warning(toolchain, archs)
    if foreign:
        warnings.append(foreign)
    return BuildPlan(specs=specs, archs=archs, jobs=chosen, jobs_reason=reason,
                     label=local_label(toolchain, archs), cxx_std=cxx_std,
                     toolchain=toolchain, warnings=tuple(warnings),
                     split_threads=split_threads(machine.cpu_count or 1, chosen, toolchain.split_compile))
