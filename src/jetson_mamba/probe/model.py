"""The machine description: frozen dataclasses, each fact with the source it came from.

Everything the rest of the project decides (findings, wheel selection, build plans) is a
pure function of a `MachineInfo`, so tests build one by hand instead of probing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple


@dataclass(frozen=True)
class JetsonInfo:
    model: Optional[str]
    soc: Optional[str]  # tegra210, tegra186, tegra194, tegra234, tegra264
    l4t: Optional[str]  # "36.4.0"
    jetpack: Optional[str]  # "6.1"; "6.x" when only the L4T major is known
    cuda_arch: Optional[str]  # "8.7"
    board: Optional[str] = None
    sources: Dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GpuInfo:
    name: Optional[str]
    arch: Optional[str]  # compute capability "9.0"
    source: str  # "torch.cuda", "nvidia-smi", "jetson-soc-table"
    count: int = 1
    smem_per_block: Optional[int] = None  # bytes of shared memory a block may opt in to (torch.cuda); None: unknown


@dataclass(frozen=True)
class CudaInfo:
    home: Optional[str]
    nvcc: Optional[str]
    version: Optional[str]  # "13.0" from nvcc --version
    source: str


@dataclass(frozen=True)
class MemoryInfo:
    total_mb: int
    available_mb: int
    swap_total_mb: int
    swap_free_mb: int
    source: str = "/proc/meminfo"


@dataclass(frozen=True)
class TorchInfo:
    python: str  # the interpreter that was probed
    python_version: Optional[str]
    version: Optional[str]  # None: torch not importable
    cuda: Optional[str]  # torch.version.cuda; None for a CPU build
    cuda_available: bool = False
    cxx11_abi: Optional[bool] = None
    jetpack_build: bool = False
    distributed_available: Optional[bool] = None
    distributed_missing: Tuple[str, ...] = ()
    triton: Optional[str] = None
    glibc: Optional[str] = None  # "2.31" (JetPack 5), "2.35" (JetPack 6); None: unknown or another libc
    error: Optional[str] = None
    source: str = "subprocess"


@dataclass(frozen=True)
class FatbinArchs:
    """GPU code in one binary: real machine code (sass) and embeddable PTX, as "9.0" strings."""

    sass: Tuple[str, ...]
    ptx: Tuple[str, ...]


@dataclass(frozen=True)
class ExtensionInfo:
    module: str  # selective_scan_cuda, causal_conv1d_cuda, selective_scan_cuda_core
    path: Optional[str]
    importable: bool
    error: Optional[str] = None
    archs: Optional[FatbinArchs] = None


@dataclass(frozen=True)
class PackageInfo:
    name: str  # distribution name, "mamba-ssm"
    version: Optional[str]
    location: Optional[str] = None


@dataclass(frozen=True)
class PackagesInfo:
    distributions: Dict[str, PackageInfo]  # only the installed ones, by distribution name
    extensions: Tuple[ExtensionInfo, ...]
    source: str = "importlib.metadata"
    mamba3: bool = False  # mamba_ssm has modules/mamba3.py (mamba-ssm main)
    mamba3_imports: Dict[str, Optional[str]] = field(default_factory=dict)  # module -> None or its import error

    def version(self, name: str) -> Optional[str]:
        info = self.distributions.get(name)
        return info.version if info else None

    def extension(self, module: str) -> Optional[ExtensionInfo]:
        return next((e for e in self.extensions if e.module == module), None)


@dataclass(frozen=True)
class MachineInfo:
    system: str  # platform.system()
    machine: str  # x86_64, aarch64
    cpu_count: int
    memory: Optional[MemoryInfo]
    jetson: Optional[JetsonInfo]
    gpu: Optional[GpuInfo]
    cuda: CudaInfo
    torch: TorchInfo
    packages: PackagesInfo

    def to_json(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)
