"""Adding wheels to an archive directory, reading one that has no manifest yet, and checking one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from jetson_mamba.archive.manifest import (
    MANIFEST_LIMIT,
    MANIFEST_NAME,
    SCHEMA_VERSION,
    Manifest,
    WheelRecord,
    atomic_file,
    load_manifest,
    locked,
    now,
    read_json,
    write_manifest,
)
from jetson_mamba.archive.wheel import read_wheel, sha256_of
from jetson_mamba.errors import ArchiveError, PermissionDeniedError, UsageError
from jetson_mamba.probe.model import MachineInfo
from jetson_mamba.untrusted import read_bounded

SUMS_NAME = "SHA256SUMS"
ARCHIVE_ENV = "JETSON_MAMBA_ARCHIVE"


def default_archive() -> Path:
    """$JETSON_MAMBA_ARCHIVE, else ~/.local/share/jetson-mamba/wheels (where build --archive puts wheels)."""
    return Path(os.environ.get(ARCHIVE_ENV) or Path.home() / ".local/share/jetson-mamba/wheels").expanduser()


def describe_machine(machine: MachineInfo) -> Dict[str, Any]:
    """The facts about a build machine worth keeping next to its wheels."""
    jetson = machine.jetson
    return {
        "system": machine.system,
        "machine": machine.machine,
        "python": machine.torch.python_version,
        "torch": machine.torch.version,
        "torch_cuda": machine.torch.cuda,
        "cxx11_abi": machine.torch.cxx11_abi,
        "nvcc": machine.cuda.version,
        "gpu": {"name": machine.gpu.name, "arch": machine.gpu.arch} if machine.gpu else None,
        "jetson": {"model": jetson.model, "l4t": jetson.l4t, "jetpack": jetson.jetpack, "soc": jetson.soc}
        if jetson else None,
    }


def _copy_in(wheel: Path, target: Path) -> None:
    """Copy a wheel into the archive atomically (a half-copied wheel never carries the name)."""
    if target.exists() and os.path.samefile(wheel, target):
        return
    with atomic_file(target) as temporary:
        shutil.copyfile(wheel, temporary)

def add_wheel(wheel: Union[str, Path], archive: Union[str, Path],
              provenance: Optional[Mapping[str, Any]] = None,
              built_on: Union[MachineInfo, Mapping[str, Any], None] = None) -> WheelRecord:
    """Read `wheel`, copy it into `archive` and record it in the manifest (replacing a record of the same file).

    `provenance` is free-form JSON (source, patches, build_command, build_seconds, ...);
    `built_on` is the build machine (a MachineInfo is summarised by `describe_machine`).
    The wheel is fully checked before anything in the archive changes.
    """
    wheel = Path(wheel)
    archive = Path(archive)
    if archive.exists() and not archive.is_dir():
        raise UsageError(f"--archive {archive} is a file, not a directory",
                         "pass the archive directory (new or existing) to --archive")
    facts = read_wheel(wheel)
    if isinstance(built_on, MachineInfo):
        built_on = describe_machine(built_on)
    record = WheelRecord(**facts, built_on=dict(built_on) if built_on else None,
                         provenance=dict(provenance or {"source": str(wheel.resolve())}), added_at=now())
    try:
        archive.mkdir(parents=True, exist_ok=True)
        with locked(archive):
            manifest = load_manifest(archive) or Manifest(wheels=[])
            _copy_in(wheel, archive / record.filename)
            others = [w for w in manifest.wheels if w.filename != record.filename]
            write_manifest(archive, Manifest(wheels=sorted(others + [record], key=lambda w: w.filename)))
    except PermissionError as error:
        raise PermissionDeniedError(f"cannot write to the archive {archive}: {error}",
                                    f"use a writable directory (--archive DIR) or fix its permissions: "
                                    f"`sudo chown -R $USER {archive}`") from None
    return record


def read_sums(archive: Path) -> Dict[str, str]:
    """filename -> sha256 from a SHA256SUMS file (`sha256sum` format), if there is one."""
    sums: Dict[str, str] = {}
    path = archive / SUMS_NAME
    if not path.is_file():
        return sums
    for line in (read_bounded(path, MANIFEST_LIMIT) or b"").decode("utf-8", "replace").splitlines():
        parts = line.split()
        if len(parts) == 2 and len(parts[0]) == 64:
            sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def scan_directory(archive: Union[str, Path]) -> Manifest:
    """An in-memory manifest for a plain directory of wheels (no manifest.json).

    The expected digests come from its SHA256SUMS when present; otherwise from the files
    themselves (then only the recorded facts, not the integrity, are checked).
    """
    archive = Path(archive)
    sums = read_sums(archive)
    records: List[WheelRecord] = []
    for path in sorted(archive.glob("*.whl")):
        facts = read_wheel(path)
        expected = sums.get(path.name)
        source = "SHA256SUMS" if expected else "unrecorded (no manifest.json, no SHA256SUMS)"
        if expected:
            facts["sha256"] = expected
        records.append(WheelRecord(**facts, provenance={"source": str(path), "digest": source}))
    return Manifest(wheels=records)


def open_directory(archive: Union[str, Path]) -> Manifest:
    """The manifest of a local archive directory, read or scanned."""
    archive = Path(archive)
    if not archive.is_dir():
        raise ArchiveError(f"archive directory {archive} does not exist" if not archive.exists() else
                           f"{archive} is a file, not an archive directory",
                           "pass an existing directory of wheels (`jetson-mamba archive add WHEEL... --archive DIR` "
                           "makes one)")
    manifest = load_manifest(archive)
    return manifest if manifest is not None else scan_directory(archive)


def verify_archive(archive: Union[str, Path]) -> List[str]:
    """Every problem of an archive directory (not just the first): manifest, entries, files, hashes."""
    archive = Path(archive)
    if not archive.is_dir():
        return [f"{archive} is not a directory"]
    path = archive / MANIFEST_NAME
    on_disk = {p.name for p in archive.glob("*.whl")}
    if not path.is_file():
        return [f"no {MANIFEST_NAME} in {archive}"] + [f"{name}: not recorded in the manifest" for name in sorted(on_disk)]
    try:
        data = read_json(path)
    except ValueError as error:
        return [f"{path} is unreadable: {error}"]
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        found = data.get("schema_version") if isinstance(data, dict) else None
        return [f"{path}: schema_version {found!r}, this jetson-mamba reads {SCHEMA_VERSION}"]
    problems: List[str] = []
    seen: Dict[str, int] = {}
    entries = data.get("wheels")
    if not isinstance(entries, list):
        return [f"{path}: `wheels` is not a list"]
    for index, entry in enumerate(entries):
        try:
            record = WheelRecord.from_json(entry, f"{MANIFEST_NAME} entry {index}")
        except ArchiveError as error:
            problems.append(error.message)
            if isinstance(entry, dict) and isinstance(entry.get("filename"), str):
                seen[entry["filename"]] = seen.get(entry["filename"], 0) + 1  # reported once, not also as extra
            continue
        seen[record.filename] = seen.get(record.filename, 0) + 1
        file = archive / record.filename
        if not file.is_file():
            problems.append(f"{record.filename}: recorded but missing")
            continue
        size = file.stat().st_size
        if size != record.size:
            problems.append(f"{record.filename}: size {size}, recorded {record.size} (truncated or replaced)")
        digest = sha256_of(file)
        if digest != record.sha256:
            problems.append(f"{record.filename}: sha256 {digest}, recorded {record.sha256}")
    problems += [f"{name}: recorded {count} times" for name, count in sorted(seen.items()) if count > 1]
    problems += [f"{name}: not recorded in the manifest" for name in sorted(on_disk - set(seen))]
    return problems
