"""Which GPU architectures a compiled extension contains, read from its ELF `.nv_fatbin` section.

Pure Python (no cuobjdump): a fatbin is a header (magic 0xBA55ED50) followed by entries,
each with a kind (1 = PTX, 2 = ELF/SASS) and the SM number it targets. The entry headers
stay readable when the payload is compressed (`--compress-mode=size`).
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple, Union

from jetson_mamba.probe.model import FatbinArchs

FATBIN_MAGIC = 0xBA55ED50
_KIND_PTX = 1
_KIND_ELF = 2


class NotAnElfError(ValueError):
    """The bytes are not a 64-bit little-endian ELF file."""


def _sections(data: bytes) -> Dict[str, Tuple[int, int]]:
    """Section name -> (file offset, size) of a 64-bit little-endian ELF image."""
    if data[:4] != b"\x7fELF" or len(data) < 64:
        raise NotAnElfError("not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise NotAnElfError("only 64-bit little-endian ELF files are supported")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    if shoff == 0 or shnum == 0 or shoff + shnum * shentsize > len(data):
        return {}
    headers = []
    for index in range(shnum):
        base = shoff + index * shentsize
        name, _type, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", data, base)
        headers.append((name, offset, size))
    _, str_offset, str_size = headers[shstrndx]
    strtab = data[str_offset:str_offset + str_size]
    result = {}
    for name, offset, size in headers:
        end = strtab.find(b"\0", name)
        result[strtab[name:end].decode("ascii", "replace")] = (offset, size)
    return result


def _entries(fatbin: bytes) -> Iterator[Tuple[int, int]]:
    """(kind, sm) of every entry of every fatbin concatenated in a section."""
    position = 0
    while position + 16 <= len(fatbin):
        magic, _version, header_size, fat_size = struct.unpack_from("<IHHQ", fatbin, position)
        if magic != FATBIN_MAGIC:
            position += 8  # fatbins are 8-byte aligned within the section
            continue
        entry = position + header_size
        end = entry + fat_size
        while entry + 32 <= min(end, len(fatbin)):
            kind, _unknown, entry_header, payload = struct.unpack_from("<HHIQ", fatbin, entry)
            sm, = struct.unpack_from("<I", fatbin, entry + 28)
            if kind in (_KIND_PTX, _KIND_ELF):
                yield kind, sm
            if entry_header == 0:
                break
            entry += entry_header + payload
        position = max(end, position + 16)


def _as_arch(sm: int) -> str:
    """SM number -> compute capability string: 87 -> "8.7", 110 -> "11.0"."""
    return f"{sm // 10}.{sm % 10}"


def _sort_key(arch: str) -> Tuple[int, int]:
    major, minor = arch.split(".")
    return int(major), int(minor)


def archs_of_elf(data: bytes) -> Optional[FatbinArchs]:
    """The archs in an ELF image, or None when it has no `.nv_fatbin` section (no GPU code)."""
    section = _sections(data).get(".nv_fatbin")
    if section is None:
        return None
    offset, size = section
    sass: Set[str] = set()
    ptx: Set[str] = set()
    for kind, sm in _entries(data[offset:offset + size]):
        (sass if kind == _KIND_ELF else ptx).add(_as_arch(sm))
    return FatbinArchs(sass=tuple(sorted(sass, key=_sort_key)), ptx=tuple(sorted(ptx, key=_sort_key)))


def archs_of_file(path: Union[str, Path]) -> Optional[FatbinArchs]:
    return archs_of_elf(Path(path).read_bytes())


def archs_of_wheel(path: Union[str, Path]) -> Dict[str, FatbinArchs]:
    """Archs of every shared library with GPU code inside a wheel, by member name."""
    found: Dict[str, FatbinArchs] = {}
    with zipfile.ZipFile(path) as wheel:
        for member in wheel.namelist():
            if not member.endswith(".so") and ".so." not in member:
                continue
            archs = archs_of_elf(wheel.read(member))
            if archs is not None:
                found[member] = archs
    return found


def merge(archs: List[FatbinArchs]) -> FatbinArchs:
    """The union of several binaries' archs (a wheel with several extensions)."""
    sass = {a for item in archs for a in item.sass}
    ptx = {a for item in archs for a in item.ptx}
    return FatbinArchs(sass=tuple(sorted(sass, key=_sort_key)), ptx=tuple(sorted(ptx, key=_sort_key)))


def runs_on(archs: FatbinArchs, gpu_arch: str) -> Tuple[bool, str]:
    """Whether code for `gpu_arch` is in the binary, and how.

    SASS runs on the same major with an equal or higher minor (sm_80 code runs on sm_87);
    PTX of an equal or lower arch is JIT-compiled by the driver at first use.
    """
    major, minor = _sort_key(gpu_arch)
    for arch in archs.sass:
        a_major, a_minor = _sort_key(arch)
        if a_major == major and a_minor <= minor:
            return True, f"sm_{arch.replace('.', '')} machine code"
    for arch in archs.ptx:
        if _sort_key(arch) <= (major, minor):
            return True, f"compute_{arch.replace('.', '')} PTX (JIT-compiled at first use)"
    return False, "no machine code or PTX for this GPU"
