"""Read everything the archive records about one wheel from the wheel itself.

Nothing is trusted from the file name alone: the name, version and tags in the file name must
agree with `METADATA` and `WHEEL`; the GPU archs come from the fatbins of its shared libraries;
torch/C++ ABI/CUDA come from the local version label that `jetson-mamba build` writes
(`2.2.5+cu130.torch2.11.sm90`) or upstream's release label (`2.2.5+cu12torch2.4cxx11abiTRUE`), else from the libraries' DT_NEEDED entries and symbols, else
they are recorded as unknown.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import re
import struct
import zipfile
import zlib
from email.parser import HeaderParser
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

from packaging.tags import parse_tag
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from jetson_mamba.errors import ArchiveError
from jetson_mamba.probe.fatbin import NotAnElfError, _sections, archs_of_elf, merge

_DT_NEEDED = 1
_CHUNK = 1 << 20


def sha256_of(path: Union[str, Path]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


# Upstream's release wheels: `+cu12torch2.4cxx11abiTRUE` (CUDA major only, newer releases) or
# `+cu118torch2.1cxx11abiFALSE` (major and minor, older ones); PEP 440 lower-cases the label.
_UPSTREAM_LABEL = re.compile(r"^cu(\d+)torch(\d+)\.(\d+)cxx11abi(true|false)$")


def _cuda_of(digits: str, minor_included: bool) -> str:
    """`130` -> 13.0 and `118` -> 11.8 (major and minor); upstream's `12` is a major alone."""
    return f"{int(digits[:-1])}.{digits[-1]}" if minor_included else str(int(digits))


def _label_facts(version: Version) -> Dict[str, Any]:
    """Torch / CUDA / C++ ABI facts from a local label ({} if none): ours, `cu130.torch2.11.sm90`,
    or upstream's, `cu12torch2.4cxx11abiTRUE`."""
    local = version.local or ""
    upstream = _UPSTREAM_LABEL.match(local)
    if upstream:
        digits = upstream.group(1)
        return {"cuda": _cuda_of(digits, len(digits) >= 3), "torch": f"{upstream.group(2)}.{upstream.group(3)}",
                "cxx11_abi": upstream.group(4) == "true"}
    facts: Dict[str, Any] = {}
    cuda = re.search(r"(?:^|\.)cu(\d{2,3})(?:\.|$)", local)
    if cuda:
        facts["cuda"] = _cuda_of(cuda.group(1), True)
    torch = re.search(r"(?:^|\.)torch(\d+)\.(\d+)", local)
    if torch:
        facts["torch"] = f"{torch.group(1)}.{torch.group(2)}"
    abi = re.search(r"(?:^|\.)cxx(11|98)(?:\.|$)", local)
    if abi:
        facts["cxx11_abi"] = abi.group(1) == "11"
    return facts


def _cstring(table: bytes, offset: int) -> str:
    end = table.find(b"\0", offset)
    return table[offset:end if end >= 0 else len(table)].decode("utf-8", "replace")


def dynamic_facts(data: bytes) -> Tuple[List[str], List[str]]:
    """(DT_NEEDED libraries, undefined dynamic symbols) of a 64-bit little-endian ELF image."""
    sections = _sections(data)
    if ".dynstr" not in sections:
        return [], []
    str_offset, str_size = sections[".dynstr"]
    strtab = data[str_offset:str_offset + str_size]
    needed: List[str] = []
    if ".dynamic" in sections:
        offset, size = sections[".dynamic"]
        for position in range(offset, offset + size - 15, 16):
            tag, value = struct.unpack_from("<qQ", data, position)
            if tag == 0:
                break
            if tag == _DT_NEEDED:
                needed.append(_cstring(strtab, value))
    undefined: List[str] = []
    if ".dynsym" in sections:
        offset, size = sections[".dynsym"]
        for position in range(offset, offset + size - 23, 24):
            name, _info, _other, shndx = struct.unpack_from("<IBBH", data, position)
            if shndx == 0 and name:
                undefined.append(_cstring(strtab, name))
    return needed, undefined


def _binary_facts(libraries: List[Tuple[List[str], List[str]]]) -> Dict[str, Any]:
    """Torch linkage, C++ ABI and CUDA major seen in the wheel's shared libraries."""
    facts: Dict[str, Any] = {}
    needed = {lib for libs, _ in libraries for lib in libs}
    if any(lib.startswith(("libtorch", "libc10")) for lib in needed):
        facts["links_torch"] = True
    for lib in sorted(needed):
        match = re.fullmatch(r"libcudart\.so\.(\d+)", lib)
        if match:
            facts["cuda"] = match.group(1)
    torch_symbols = [s for _, symbols in libraries for s in symbols if s.startswith(("_ZN3c10", "_ZN5torch", "_ZN2at"))]
    if any("__cxx11" in s for s in torch_symbols):
        facts["cxx11_abi"] = True
    elif any(re.search(r"Ss(?:[A-Z0-9_]|$)", s) for s in torch_symbols):
        facts["cxx11_abi"] = False
    return facts


def record_hash(data: bytes) -> str:
    """A wheel RECORD hash entry: `sha256=<urlsafe base64, unpadded>`."""
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")


def _record_hashes(text: str) -> Dict[str, str]:
    """member -> its `sha256=...` entry in a wheel's RECORD (entries without a hash are skipped)."""
    return {row[0]: row[1] for row in csv.reader(text.splitlines()) if len(row) >= 2 and row[1].startswith("sha256=")}


def _read_text(wheel: zipfile.ZipFile, member: str, filename: str) -> str:
    try:
        return wheel.read(member).decode("utf-8")
    except KeyError:
        raise ArchiveError(f"{filename} has no {member}", "rebuild the wheel with `pip wheel`") from None


def _dist_info(names: List[str], filename: str) -> str:
    dirs = sorted({n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info")})
    if len(dirs) != 1:
        raise ArchiveError(f"{filename} has {len(dirs)} .dist-info directories, expected exactly one",
                           "rebuild the wheel with `pip wheel`")
    return dirs[0]


def _agreement(filename: str, meta_name: str, meta_version: str, wheel_tags: List[str],
               dist_info: str) -> Tuple[str, Version, List[str]]:
    """The file name's (canonical name, version, tags), after checking METADATA and WHEEL say the same."""
    try:
        name, version, _build, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename as error:
        raise ArchiveError(f"{filename} is not a valid wheel file name: {error}",
                           "keep the file name pip wheel wrote (name-version-python-abi-platform.whl)") from None
    fix = "rename the file back to the name pip wheel gave it, or rebuild the wheel"
    try:
        meta_parsed = Version(meta_version)
    except InvalidVersion:
        raise ArchiveError(f"{filename}: METADATA has an invalid Version {meta_version!r}", fix) from None
    if canonicalize_name(meta_name) != name:
        raise ArchiveError(f"{filename}: the file name says distribution {name!r}, METADATA says {meta_name!r}", fix)
    if meta_parsed != version:
        raise ArchiveError(f"{filename}: the file name says version {version}, METADATA says {meta_version}", fix)
    file_tags = sorted(str(t) for t in tags)
    declared = sorted({str(t) for text in wheel_tags for t in parse_tag(text)})
    if declared and declared != file_tags:
        raise ArchiveError(f"{filename}: the file name says tags {', '.join(file_tags)}, WHEEL says {', '.join(declared)}",
                           fix)
    info_name, _, info_version = dist_info[:-len(".dist-info")].partition("-")
    if canonicalize_name(info_name) != name or Version(info_version) != version:
        raise ArchiveError(f"{filename}: its {dist_info} does not match {name} {version}", fix)
    return name, version, file_tags


def read_wheel(path: Union[str, Path]) -> Dict[str, Any]:
    """The manifest facts of one wheel file (without provenance); ArchiveError if it is unusable."""
    path = Path(path)
    filename = path.name
    try:
        size = path.stat().st_size
        wheel = zipfile.ZipFile(path)
    except OSError as error:
        raise ArchiveError(f"cannot read {path}: {error}", "check the path") from None
    except zipfile.BadZipFile as error:
        raise ArchiveError(f"{path} is not a readable wheel (corrupted or truncated zip: {error})",
                           "download or build the wheel again") from None
    with wheel:
        try:
            names = wheel.namelist()
            dist_info = _dist_info(names, filename)
            metadata = HeaderParser().parsestr(_read_text(wheel, f"{dist_info}/METADATA", filename))
            wheel_info = HeaderParser().parsestr(_read_text(wheel, f"{dist_info}/WHEEL", filename))
            name, version, tags = _agreement(filename, metadata.get("Name", ""), metadata.get("Version", ""),
                                             wheel_info.get_all("Tag") or [], dist_info)
            record = _record_hashes(_read_text(wheel, f"{dist_info}/RECORD", filename))
            binaries: Dict[str, Any] = {}
            libraries: List[Tuple[List[str], List[str]]] = []
            for member in names:
                if member.endswith("/"):
                    continue
                data = wheel.read(member)  # checks the member's CRC
                expected = record.get(member)
                if expected and record_hash(data) != expected:
                    raise ArchiveError(f"{path}: {member} does not match the hash in its RECORD (modified after build)",
                                       "download or build the wheel again")
                if not (member.endswith(".so") or ".so." in member):
                    continue
                try:
                    archs = archs_of_elf(data)
                    libraries.append(dynamic_facts(data))
                except (NotAnElfError, struct.error):
                    continue
                if archs is not None:
                    binaries[member] = archs
        except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as error:
            raise ArchiveError(f"{path} is corrupted: {error}", "download or build the wheel again") from None
    binary = _binary_facts(libraries)
    label = _label_facts(version)
    gpu = None
    if binaries:
        merged = merge(list(binaries.values()))
        gpu = {"sass": list(merged.sass), "ptx": list(merged.ptx),
               "binaries": {m: {"sass": list(a.sass), "ptx": list(a.ptx)} for m, a in sorted(binaries.items())}}
    torch_source = "local version label" if "torch" in label else ("unknown" if binary.get("links_torch") else None)
    return {
        "filename": filename,
        "sha256": sha256_of(path),
        "size": size,
        "name": name,
        "version": str(version),
        "tags": tags,
        "requires_python": metadata.get("Requires-Python"),
        "requires_dist": metadata.get_all("Requires-Dist") or [],
        "torch": {
            "linked": bool(binary.get("links_torch")),
            "version": label.get("torch"),
            "cxx11_abi": label.get("cxx11_abi", binary.get("cxx11_abi")),
            "source": torch_source,
        },
        "cuda": {
            "version": label.get("cuda", binary.get("cuda")),
            "source": "local version label" if "cuda" in label else ("libcudart DT_NEEDED" if "cuda" in binary else None),
        },
        "gpu_archs": gpu,
    }

