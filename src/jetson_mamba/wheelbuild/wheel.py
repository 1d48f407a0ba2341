"""Finish a freshly built wheel: the local version label, stripped host debug info, a true RECORD.

Done after the build (not through setup.py's *_LOCAL_VERSION) so it works for any checkout;
the file name, the .dist-info directory, METADATA and RECORD are all rewritten together and
checked to agree before the wheel leaves the work directory.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from packaging.utils import parse_wheel_filename
from packaging.version import Version

from jetson_mamba.archive.wheel import record_hash
from jetson_mamba.errors import BuildError


def labelled_version(version: str, label: str) -> str:
    """`2.2.5` + `cu130.sm87` -> `2.2.5+cu130.sm87` (an existing local label is replaced)."""
    return str(Version(f"{Version(version).public}+{label}")) if label else str(Version(version).public)


def _strip(members: Dict[str, bytes], strip: Optional[str]) -> None:
    """`strip --strip-debug` every shared library in place (host debug info only; GPU code stays)."""
    if strip is None:
        return
    with tempfile.TemporaryDirectory(prefix="jm-strip-") as tmp:
        for name, data in members.items():
            if not (name.endswith(".so") or ".so." in name):
                continue
            path = Path(tmp) / "lib.so"
            path.write_bytes(data)
            done = subprocess.run([strip, "--strip-debug", str(path)], capture_output=True, text=True, check=False)
            if done.returncode == 0:
                members[name] = path.read_bytes()


def finish_wheel(built: Path, out_dir: Path, label: str, strip: bool = True) -> Path:
    """Write `built` to `out_dir` under its labelled version, stripped, with a fresh RECORD."""
    _name, version, _build, _tags = parse_wheel_filename(built.name)
    new_version = labelled_version(str(version), label)
    escaped, old_version, rest = built.name.split("-", 2)
    old_info = f"{escaped}-{old_version}.dist-info"
    new_info = f"{escaped}-{new_version}.dist-info"
    with zipfile.ZipFile(built) as source:
        members = {info.filename: source.read(info) for info in source.infolist() if not info.is_dir()}
    _strip(members, shutil.which("strip") if strip else None)
    renamed: Dict[str, bytes] = {}
    for member, data in members.items():
        if member == f"{old_info}/RECORD":
            continue
        if member.startswith(old_info + "/"):
            member = new_info + member[len(old_info):]
        if member == f"{new_info}/METADATA":
            data = re.sub(rb"(?m)^Version: .*$", f"Version: {new_version}".encode(), data, count=1)
        renamed[member] = data
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for member, data in renamed.items():
        writer.writerow([member, record_hash(data), len(data)])
    writer.writerow([f"{new_info}/RECORD", "", ""])
    renamed[f"{new_info}/RECORD"] = record.getvalue().encode()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{escaped}-{new_version}-{rest}"
    partial = target.with_suffix(".whl.part")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as wheel:
        for member, data in renamed.items():
            wheel.writestr(member, data)
    partial.replace(target)
    problems = check_wheel(target)
    if problems:
        raise BuildError(f"the finished wheel {target} is inconsistent: " + "; ".join(problems),
                         "report this; the unmodified wheel from pip is in the build's work directory")
    return target


def check_wheel(path: Path) -> List[str]:
    """Everything wrong with a wheel's name/version/RECORD agreement ([] when consistent)."""
    problems: List[str] = []
    _name, version, _build, _tags = parse_wheel_filename(path.name)
    escaped = path.name.split("-", 1)[0]
    with zipfile.ZipFile(path) as wheel:
        names = [n for n in wheel.namelist() if not n.endswith("/")]
        infos = {n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info")}
        expected_info = f"{escaped}-{version}.dist-info"
        if infos != {expected_info}:
            return [f"dist-info directories {sorted(infos)}, expected {expected_info}"]
        metadata = wheel.read(f"{expected_info}/METADATA").decode("utf-8", "replace")
        match = re.search(r"(?m)^Version: (.*)$", metadata)
        if not match or Version(match.group(1).strip()) != version:
            problems.append(f"METADATA version {match.group(1) if match else None} != file name version {version}")
        rows: List[Tuple[str, str, str]] = [tuple(r) for r in csv.reader(  # type: ignore[misc]
            io.StringIO(wheel.read(f"{expected_info}/RECORD").decode("utf-8")))]
        listed = {row[0] for row in rows}
        for missing in sorted(set(names) - listed):
            problems.append(f"{missing} not in RECORD")
        for member, digest, size in rows:
            if member.endswith("/RECORD"):
                continue
            if member not in names:
                problems.append(f"RECORD lists missing {member}")
                continue
            data = wheel.read(member)
            if digest != record_hash(data) or size != str(len(data)):
                problems.append(f"RECORD hash/size of {member} is wrong")
    return problems
