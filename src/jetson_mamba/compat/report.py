"""`doctor`'s report: the machine as doctor shows it, the patches in effect and the findings (frozen).

`doctor_report` is a pure function of a probed `MachineInfo` and the patches in effect, so the text
(`cli/doctor.py`) and `--json` (`results.document(report)`) are made from the same object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import AbstractSet, Dict, Optional, Tuple

from jetson_mamba.compat.findings import Finding, diagnose_machine
from jetson_mamba.probe.model import CudaInfo, GpuInfo, JetsonInfo, MachineInfo, MemoryInfo, TorchInfo


@dataclass(frozen=True)
class HostSummary:
    """The host part of `MachineInfo` under doctor's JSON names (its `machine` is `arch` here)."""

    system: str  # platform.system()
    arch: str  # x86_64, aarch64
    cpu_count: int
    memory: Optional[MemoryInfo] = None  # None: /proc/meminfo unreadable


@dataclass(frozen=True)
class ExtensionSummary:
    """One compiled extension: whether it imports, and its GPU code ("9.0" strings; None: unreadable)."""

    module: str
    path: Optional[str]
    importable: bool
    error: Optional[str]
    archs: Optional[Tuple[str, ...]]  # real machine code (sass)
    ptx: Optional[Tuple[str, ...]]


@dataclass(frozen=True)
class PackagesSummary:
    distributions: Dict[str, Optional[str]]  # installed distribution -> version, sorted by name
    extensions: Tuple[ExtensionSummary, ...]
    source: str
    patches_applied: Tuple[str, ...]  # runtime patches in effect, sorted


@dataclass(frozen=True)
class DoctorReport:
    """Everything `doctor` prints; field names are the `--json` keys."""

    machine: HostSummary
    jetson: Optional[JetsonInfo]
    gpu: Optional[GpuInfo]
    cuda: CudaInfo
    torch: TorchInfo
    packages: PackagesSummary
    findings: Tuple[Finding, ...]

    @property
    def has_errors(self) -> bool:
        """An error finding makes `doctor` exit 1."""
        return any(f.severity == "error" for f in self.findings)


def doctor_report(machine: MachineInfo, patches: AbstractSet[str]) -> DoctorReport:
    """Diagnose `machine` (with `patches` in effect, so no applied fix is offered again) into a report."""
    packages = machine.packages
    extensions = tuple(ExtensionSummary(e.module, e.path, e.importable, e.error,
                                        e.archs.sass if e.archs else None, e.archs.ptx if e.archs else None)
                       for e in packages.extensions)
    return DoctorReport(
        machine=HostSummary(machine.system, machine.machine, machine.cpu_count, machine.memory),
        jetson=machine.jetson, gpu=machine.gpu, cuda=machine.cuda, torch=machine.torch,
        packages=PackagesSummary({name: p.version for name, p in sorted(packages.distributions.items())},
                                 extensions, packages.source, tuple(sorted(patches))),
        findings=tuple(diagnose_machine(machine, patches)))
