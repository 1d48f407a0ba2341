"""Which archived wheels fit a machine: a pure function with exactly one reason per rejection.

Modelled on pypa/packaging's tag matching (a wheel fits when one of its tags is in the
interpreter's supported set, and the best-ranked supported tag wins) and on huggingface
kernels' build variants (torch major.minor, C++ ABI and CUDA major must match the installed
torch). The checks run in a fixed order and the first failure is the wheel's only reason:
requested spec, python tag (and Requires-Python), platform, torch version or C++ ABI, CUDA
major, GPU arch missing from the binary (read from its fatbin), file hash.
"""

from __future__ import annotations

import os
import platform as _platform
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import compatible_tags, cpython_tags, parse_tag, platform_tags
from packaging.utils import canonicalize_name
from packaging.version import Version

from jetson_mamba.archive.manifest import Manifest, WheelRecord
from jetson_mamba.archive.wheel import label_archs
from jetson_mamba.compat.knowledge import TESTED_PAIR, parse_version
from jetson_mamba.errors import NoMatchingWheelError, UsageError
from jetson_mamba.probe.fatbin import runs_on
from jetson_mamba.probe.model import FatbinArchs, MachineInfo

# manylinux_X_Y_<arch> needs glibc >= X.Y (PEP 600); the legacy names are aliases of it (PEP 513/571/599).
_MANYLINUX = re.compile(r"manylinux_(\d+)_(\d+)_(\w+)")
_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}

CHECKS = ("requested", "python", "platform", "torch", "cuda", "gpu-arch", "hash", "preference")


@dataclass(frozen=True)
class Target:
    """The facts selection compares against, taken from a MachineInfo."""

    python_version: Optional[str]  # "3.11.7"
    tags: Tuple[str, ...]  # supported wheel tags, best first
    machine: str
    torch_version: Optional[str]
    cxx11_abi: Optional[bool]
    torch_cuda: Optional[str]
    gpu_arch: Optional[str]
    gpu_name: Optional[str] = None

    @classmethod
    def from_machine(cls, machine: MachineInfo, platforms: Optional[Sequence[str]] = None) -> Target:
        """Supported tags of the probed interpreter; `platforms` default to this host's (glibc aware)."""
        python = machine.torch.python_version
        tags: Tuple[str, ...] = ()
        if python:
            if platforms is None:
                platforms = list(platform_tags()) if machine.machine == _platform.machine() else \
                    [f"linux_{machine.machine}"]
            major, minor = (int(p) for p in python.split(".")[:2])
            version = (major, minor)
            found = list(cpython_tags(version, platforms=platforms)) + list(compatible_tags(version, platforms=platforms))
            tags = tuple(str(t) for t in found)
        return cls(python_version=python, tags=tags, machine=machine.machine,
                   torch_version=machine.torch.version, cxx11_abi=machine.torch.cxx11_abi,
                   torch_cuda=machine.torch.cuda, gpu_arch=machine.gpu.arch if machine.gpu else None,
                   gpu_name=machine.gpu.name if machine.gpu else None)

    @property
    def glibc(self) -> Optional[Tuple[int, int]]:
        """The newest glibc its manylinux tags accept (None without any: musl, or tags not probed)."""
        found = [g[0] for g in map(_glibc_needed, {t.platform for text in self.tags for t in parse_tag(text)})
                 if g and g[1] == self.machine]
        return max(found, default=None)

    @property
    def python_tag(self) -> str:
        if not self.python_version:
            return "unknown"
        major, minor = self.python_version.split(".")[:2]
        return f"cp{major}{minor}"


@dataclass(frozen=True)
class Rejection:
    filename: str
    name: str
    version: str
    check: str  # one of CHECKS
    expected: str
    actual: str

    def line(self) -> str:
        return f"{self.filename}: {self.check}: expected {self.expected}, actual {self.actual}"


@dataclass(frozen=True)
class Choice:
    record: WheelRecord
    notes: Tuple[str, ...] = ()


@dataclass(frozen=True)
class Selection:
    chosen: List[Choice]
    rejected: List[Rejection]
    missing: List[str] = field(default_factory=list)  # requested distributions with no fitting wheel

    def to_json(self) -> Dict[str, Any]:
        return {
            "chosen": [{"filename": c.record.filename, "name": c.record.name, "version": c.record.version,
                        "sha256": c.record.sha256, "notes": list(c.notes)} for c in self.chosen],
            "rejected": [asdict(r) for r in self.rejected],
            "missing": list(self.missing),
        }

    def explain(self) -> List[str]:
        lines = [f"choose {c.record.filename}" + (f" ({'; '.join(c.notes)})" if c.notes else "") for c in self.chosen]
        lines += [f"reject {r.line()}" for r in self.rejected]
        lines += [f"nothing fits for {name}" for name in self.missing]
        return lines


def parse_requests(specs: Sequence[str]) -> List[Requirement]:
    try:
        return [Requirement(spec) for spec in specs]
    except (InvalidRequirement, InvalidSpecifier) as error:
        raise UsageError(f"not a package spec: {error}", "write specs like mamba-ssm==2.2.5 or causal-conv1d") from None


def _python_reason(record: WheelRecord, target: Target) -> Optional[Tuple[str, str]]:
    supported = {(t.interpreter, t.abi) for text in target.tags for t in parse_tag(text)}
    wheel = [t for text in record.tags for t in parse_tag(text)]
    if not any((t.interpreter, t.abi) in supported for t in wheel):
        expected = f"{target.python_tag} (Python {target.python_version or 'unknown'})"
        return expected, ", ".join(sorted({f"{t.interpreter}-{t.abi}" for t in wheel}))
    if record.requires_python and target.python_version:
        try:
            allowed = SpecifierSet(record.requires_python)
        except InvalidSpecifier:
            return "a valid Requires-Python", record.requires_python
        if Version(target.python_version) not in allowed:
            return f"Python {target.python_version}", f"Requires-Python {record.requires_python}"
    return None


def _glibc_needed(platform: str) -> Optional[Tuple[Tuple[int, int], str]]:
    """((major, minor), arch) of a manylinux platform tag; None for other platforms."""
    match = _MANYLINUX.fullmatch(platform)
    if match:
        return (int(match.group(1)), int(match.group(2))), match.group(3)
    legacy, _, arch = platform.partition("_")
    return (_LEGACY_MANYLINUX[legacy], arch) if legacy in _LEGACY_MANYLINUX and arch else None


def _platform_reason(record: WheelRecord, target: Target) -> Optional[Tuple[str, str]]:
    supported = set(target.tags)
    if any(str(t) in supported for text in record.tags for t in parse_tag(text)):
        return None
    platforms = sorted({t.platform for text in record.tags for t in parse_tag(text)})
    needed = [_glibc_needed(p) for p in platforms]
    have = target.glibc
    if have and all(n and n[1] == target.machine and n[0] > have for n in needed):
        # the right CPU, a newer C library: say which glibc it needs (e.g. glibc 2.34 wheels on JetPack 5's 2.31)
        lowest = min(n[0] for n in needed if n)
        return f"glibc >= {lowest[0]}.{lowest[1]} ({', '.join(platforms)})", f"glibc {have[0]}.{have[1]}"
    return f"a {target.machine} platform tag (linux_{target.machine}, manylinux_*_{target.machine})", ", ".join(platforms)


def _minor(version: Optional[str]) -> Optional[Tuple[int, int]]:
    parsed = parse_version(version)
    return None if parsed is None else (parsed.major, parsed.minor)


def _torch_reason(record: WheelRecord, target: Target) -> Optional[Tuple[str, str]]:
    torch = record.torch or {}
    if not torch.get("linked"):
        return None
    wanted = torch.get("version")
    if target.torch_version is None:
        return f"torch {wanted or '(the build torch)'} installed", "no importable torch"
    if wanted and _minor(wanted) != _minor(target.torch_version):
        return f"a wheel built against torch {'.'.join(map(str, _minor(target.torch_version) or ()))}", \
            f"built against torch {wanted}"
    abi = torch.get("cxx11_abi")
    if abi is not None and target.cxx11_abi is not None and abi != target.cxx11_abi:
        return f"C++11 ABI={target.cxx11_abi} (installed torch)", f"C++11 ABI={abi}"
    return None


def _cuda_reason(record: WheelRecord, target: Target) -> Optional[Tuple[str, str]]:
    wanted = (record.cuda or {}).get("version")
    if not wanted:
        return None
    if not target.torch_cuda:
        return f"a CUDA {wanted.split('.')[0]} build of torch", f"torch {target.torch_version or 'missing'} without CUDA"
    if wanted.split(".")[0] != target.torch_cuda.split(".")[0]:
        return f"CUDA {target.torch_cuda.split('.')[0]} (torch {target.torch_version} uses CUDA {target.torch_cuda})", \
            f"built for CUDA {wanted}"
    return None


def _arch_text(archs: FatbinArchs) -> str:
    parts = [f"sm_{a.replace('.', '')}" for a in archs.sass] + [f"compute_{a.replace('.', '')} PTX" for a in archs.ptx]
    return " + ".join(parts) or "no GPU code"


def binary_archs(record: WheelRecord) -> Dict[str, FatbinArchs]:
    """The GPU code of each binary of a wheel ({}: none, it runs on any GPU): read from its fatbins, else
    the archs its local label names (`+cu130.torch2.14.sm87`, a wheel recorded without fatbin facts)."""
    if not record.gpu_archs:
        named = label_archs(record.version)
        return {"": FatbinArchs(sass=named, ptx=())} if named else {}
    binaries = record.gpu_archs.get("binaries") or {"": record.gpu_archs}
    return {member: FatbinArchs(sass=tuple(found.get("sass", ())), ptx=tuple(found.get("ptx", ())))
            for member, found in sorted(binaries.items())}


def unfit_binary(record: WheelRecord, gpu_arch: str) -> Optional[Tuple[str, FatbinArchs]]:
    """The first binary of a wheel without code that runs on `gpu_arch` (member, its archs); None: all run."""
    for member, archs in binary_archs(record).items():
        if not runs_on(archs, gpu_arch)[0]:
            return member, archs
    return None


def _arch_reason(record: WheelRecord, target: Target) -> Optional[Tuple[str, str]]:
    binaries = binary_archs(record)
    if not binaries:
        return None
    if target.gpu_arch is None:
        return "a CUDA GPU", f"code for {_arch_text(next(iter(binaries.values())))}, but no GPU was found here"
    unfit = unfit_binary(record, target.gpu_arch)
    if unfit is None:
        return None
    member, archs = unfit
    where = f" in {member}" if member else ""
    return f"code for sm_{target.gpu_arch.replace('.', '')} ({target.gpu_name or 'this GPU'})", \
        f"{_arch_text(archs)}{where}"


def _hash_reason(record: WheelRecord, digests: Mapping[str, Optional[str]]) -> Optional[Tuple[str, str]]:
    if record.filename not in digests:
        return None
    actual = digests[record.filename]
    if actual is None:
        return f"the file (sha256 {record.sha256[:16]}...)", "file missing"
    if actual != record.sha256:
        return f"sha256 {record.sha256}", f"sha256 {actual}"
    return None


def _requested_reason(record: WheelRecord, requests: Sequence[Requirement]) -> Optional[Tuple[str, str]]:
    for request in requests:
        if canonicalize_name(request.name) == record.name and request.specifier and \
                not request.specifier.contains(Version(record.version), prereleases=True):
            return f"{request.name}{request.specifier}", record.version
    return None


def _first_reason(record: WheelRecord, target: Target, digests: Mapping[str, Optional[str]],
                  requests: Sequence[Requirement]) -> Optional[Tuple[str, str, str]]:
    checks = (
        ("requested", lambda: _requested_reason(record, requests)),
        ("python", lambda: _python_reason(record, target)),
        ("platform", lambda: _platform_reason(record, target)),
        ("torch", lambda: _torch_reason(record, target)),
        ("cuda", lambda: _cuda_reason(record, target)),
        ("gpu-arch", lambda: _arch_reason(record, target)),
        ("hash", lambda: _hash_reason(record, digests)),
    )
    for check, reason in checks:
        found = reason()
        if found:
            return check, found[0], found[1]
    return None


def _notes(record: WheelRecord, target: Target) -> Tuple[str, ...]:
    notes = []
    torch = record.torch or {}
    if torch.get("linked") and not torch.get("version"):
        notes.append("torch version it was built against is unknown (no local version label): not checked")
    if record.gpu_archs and target.gpu_arch:
        archs = FatbinArchs(sass=tuple(record.gpu_archs.get("sass", ())), ptx=tuple(record.gpu_archs.get("ptx", ())))
        notes.append(f"runs on sm_{target.gpu_arch.replace('.', '')} via {runs_on(archs, target.gpu_arch)[1]}")
    if not record.gpu_archs:
        notes.append("no GPU code (pure Python or CPU only)")
    return tuple(notes)


def _arch_score(record: WheelRecord, target: Target) -> int:
    """3: machine code for exactly this GPU, 2: for an older minor, 1: PTX only, 0: no GPU code."""
    if not record.gpu_archs or not target.gpu_arch:
        return 0
    if target.gpu_arch in record.gpu_archs.get("sass", ()):
        return 3
    archs = FatbinArchs(sass=tuple(record.gpu_archs.get("sass", ())), ptx=())
    return 2 if runs_on(archs, target.gpu_arch)[0] else 1


def _rank(record: WheelRecord, target: Target) -> Tuple[Version, int, int, Version]:
    """Newest public version, then the best GPU code, the interpreter's best-ranked tag, the label."""
    positions = {tag: index for index, tag in enumerate(target.tags)}
    best = min((positions.get(str(t), len(positions)) for text in record.tags for t in parse_tag(text)),
               default=len(positions))
    version = Version(record.version)
    return Version(version.public), _arch_score(record, target), -best, version


def select_wheels(target: Target, manifest: Manifest, digests: Optional[Mapping[str, Optional[str]]] = None,
                  requests: Sequence[Requirement] = ()) -> Selection:
    """One wheel per distribution (the requested ones, else all in the archive), with every rejection explained.

    `digests` maps file names to their actual sha256 (None: file missing); files not in it
    are not hash-checked (a remote archive hashes only what it downloads).
    """
    digests = digests or {}
    wanted = [canonicalize_name(r.name) for r in requests] or sorted({w.name for w in manifest.wheels})
    fitting: Dict[str, List[WheelRecord]] = {}
    rejected: List[Rejection] = []
    for record in manifest.wheels:
        if record.name not in wanted:
            continue
        reason = _first_reason(record, target, digests, requests)
        if reason:
            rejected.append(Rejection(record.filename, record.name, record.version, *reason))
        else:
            fitting.setdefault(record.name, []).append(record)
    chosen: List[Choice] = []
    for name in wanted:
        candidates = sorted(fitting.get(name, []), key=lambda r: _rank(r, target), reverse=True)
        if candidates:
            chosen.append(Choice(candidates[0], _notes(candidates[0], target)))
        for other in candidates[1:]:
            rejected.append(Rejection(other.filename, other.name, other.version, "preference",
                                      f"the best fit for {name}", f"{candidates[0].filename} is preferred"))
    order = [canonicalize_name(n) for n, _ in TESTED_PAIR]
    chosen.sort(key=lambda c: order.index(c.record.name) if c.record.name in order else len(order))
    missing = [name for name in wanted if name not in fitting]
    return Selection(chosen=chosen, rejected=rejected, missing=missing)


NO_TORCH_FIX = ("install torch into that environment first (on a Jetson: NVIDIA's torch wheel for your JetPack), "
                "then rerun: the wheels need it, building wheels needs it too, and jetson-mamba never installs torch")


def no_match_error(selection: Selection, target: Target, archive: str) -> NoMatchingWheelError:
    """The "nothing fits" error: every rejection, and the fix."""
    lines = [f"no wheel in {archive} fits this machine for {', '.join(selection.missing) or 'any distribution'}:"]
    lines += [f"  - {r.line()}" for r in selection.rejected] or ["  (the archive has no wheels for them)"]
    checks = {r.check for r in selection.rejected if r.name in selection.missing}
    specs = " ".join(f"{n}=={v}" for n, v in TESTED_PAIR)
    arch = f" --arch {target.gpu_arch}" if target.gpu_arch else ""
    if target.torch_version is None:
        fix = NO_TORCH_FIX
    elif checks == {"hash"}:
        verify = f"`jetson-mamba archive verify --archive {archive}`" if os.path.isdir(archive) else \
            "`jetson-mamba archive verify --archive DIR` on the machine that serves it (DIR: its archive directory)"
        fix = f"the files changed after they were recorded: run {verify}, " \
              f"then re-download or rebuild the wheels and `jetson-mamba archive add`"
    else:
        into = f" --archive {archive}" if os.path.isdir(archive) and os.access(archive, os.W_OK) else ""
        fix = f"build wheels for this machine: `jetson-mamba build {specs}{arch}{into}`, then install them " \
              f"(`jetson-mamba install --archive {archive if into else 'DIR'}`)"
    return NoMatchingWheelError("\n".join(lines), fix)
