"""Jetson facts from the files L4T puts on every device, read under a filesystem root.

Parsers are pure functions over file contents, so fixture trees and mounted device images
work the same as a live board.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Optional, Tuple

from jetson_mamba.probe.model import JetsonInfo
from jetson_mamba.untrusted import read_within

SMALL_FILE_LIMIT = 64 << 10  # release files, device-tree strings, /proc/meminfo: a few hundred bytes
DPKG_STATUS_LIMIT = 64 << 20  # dpkg's status lists every package: a few MB on a full JetPack

# SoC -> GPU compute capability. Thor's depends on the CUDA major (see `cuda_arch_for_soc`).
SOC_ARCH: Dict[str, str] = {
    "tegra210": "5.3",  # Jetson Nano, TX1
    "tegra186": "6.2",  # TX2
    "tegra194": "7.2",  # Xavier NX / AGX Xavier
    "tegra234": "8.7",  # Orin (AGX, NX, Nano)
    "tegra264": "11.0",  # Thor with CUDA 13
}
SOC_FAMILY: Dict[str, str] = {
    "tegra210": "Nano/TX1",
    "tegra186": "TX2",
    "tegra194": "Xavier",
    "tegra234": "Orin",
    "tegra264": "Thor",
}
# Jetson GPUs (integrated in an aarch64 SoC) by compute capability: the SoC table's, and Thor's sm_101
# (its name before CUDA 13, see `cuda_arch_for_soc`).
JETSON_ARCH_FAMILY: Dict[str, str] = {**{arch: SOC_FAMILY[soc] for soc, arch in SOC_ARCH.items()}, "10.1": "Thor"}

# L4T release -> JetPack release, as NVIDIA published them.
L4T_JETPACK: Dict[str, str] = {
    "32.3.1": "4.3",
    "32.4.3": "4.4",
    "32.4.4": "4.4.1",
    "32.5.0": "4.5",
    "32.5.1": "4.5.1",
    "32.5.2": "4.5.1",
    "32.6.1": "4.6",
    "32.7.1": "4.6.1",
    "32.7.2": "4.6.2",
    "32.7.3": "4.6.3",
    "32.7.4": "4.6.4",
    "32.7.5": "4.6.5",
    "32.7.6": "4.6.6",
    "35.1.0": "5.0.2",
    "35.2.1": "5.1",
    "35.3.1": "5.1.1",
    "35.4.1": "5.1.2",
    "35.5.0": "5.1.3",
    "35.6.0": "5.1.4",
    "35.6.1": "5.1.5",
    "36.2.0": "6.0 DP",
    "36.3.0": "6.0",
    "36.4.0": "6.1",
    "36.4.3": "6.2",
    "36.4.4": "6.2.1",
    "38.2.0": "7.0",
    "38.2.1": "7.0",
}
L4T_MAJOR_JETPACK: Dict[str, str] = {"32": "4", "35": "5", "36": "6", "38": "7"}

_RELEASE = re.compile(r"#\s*R(?P<major>\d+)\s*\(release\),\s*REVISION:\s*(?P<rev>[\d.]+)(?P<rest>.*)")
_BOARD = re.compile(r"BOARD:\s*([^,\s]+)")


def parse_nv_tegra_release(text: str) -> Tuple[Optional[str], Optional[str]]:
    """`# R36 (release), REVISION: 4.0, ... BOARD: generic, ...` -> ("36.4.0", "generic")."""
    match = _RELEASE.search(text)
    if not match:
        return None, None
    parts = match.group("rev").strip(".").split(".")
    while len(parts) < 2:
        parts.append("0")
    board = _BOARD.search(match.group("rest"))
    return ".".join([match.group("major")] + parts[:2]), board.group(1) if board else None


def jetpack_for_l4t(l4t: str) -> Tuple[Optional[str], str]:
    """JetPack release for an L4T release, and how sure we are ("table" or "L4T major")."""
    if l4t in L4T_JETPACK:
        return L4T_JETPACK[l4t], "L4T->JetPack table"
    major = L4T_MAJOR_JETPACK.get(l4t.split(".")[0])
    if major is None:
        return None, "unknown L4T release"
    return f"{major}.x", "estimated from the L4T major release"


def soc_from_compatible(raw: bytes) -> Optional[str]:
    """The tegraNNN entry of the NUL-separated device-tree `compatible` list."""
    for entry in raw.split(b"\0"):
        match = re.fullmatch(rb"nvidia,(tegra\d+)", entry.strip())
        if match:
            return match.group(1).decode()
    return None


def cuda_arch_for_soc(soc: Optional[str], cuda_version: Optional[str], l4t: Optional[str]) -> Optional[str]:
    """Thor (tegra264) is sm_110 with CUDA 13 and sm_101 with CUDA 12.8/12.9; others are fixed."""
    if soc != "tegra264":
        return SOC_ARCH.get(soc or "")
    major = cuda_version.split(".")[0] if cuda_version else None
    if major is None and l4t:
        major = "13" if l4t.split(".")[0] == "38" else None
    return "10.1" if major == "12" else "11.0"


def _read_text(root: Path, path: str, limit: int = SMALL_FILE_LIMIT) -> Optional[str]:
    """A device-root file as text (bounded and inside the root: a device image is untrusted input)."""
    data = read_within(root, path, limit)
    return None if data is None else data.decode("utf-8", "replace")


def _dpkg_version(root: Path, package: str) -> Optional[str]:
    status = _read_text(root, "var/lib/dpkg/status", DPKG_STATUS_LIMIT)
    if not status:
        return None
    for stanza in status.split("\n\n"):
        if re.search(rf"^Package: {re.escape(package)}$", stanza, re.M):
            version = re.search(r"^Version: (\S+)", stanza, re.M)
            return version.group(1) if version else None
    return None


def _jetpack_from_dpkg(version: str) -> str:
    """`6.1+b123` -> `6.1`."""
    match = re.match(r"\d+(\.\d+)*", version)
    return match.group(0) if match else version


def read_jetson(root: Path, cuda_version: Optional[str] = None) -> Optional[JetsonInfo]:
    """The Jetson description under `root`, or None when this is no Jetson."""
    release = _read_text(root, "etc/nv_tegra_release")
    model_raw = _read_text(root, "proc/device-tree/model")
    compatible = read_within(root, "proc/device-tree/compatible", SMALL_FILE_LIMIT) or b""
    soc = soc_from_compatible(compatible)
    if release is None and soc is None:
        return None
    sources: Dict[str, str] = {}
    l4t, board = parse_nv_tegra_release(release or "")
    if l4t:
        sources["l4t"] = "/etc/nv_tegra_release"
    model = model_raw.strip("\0\n ") if model_raw else None
    if model:
        sources["model"] = "/proc/device-tree/model"
    if soc:
        sources["soc"] = "/proc/device-tree/compatible"
    jetpack = None
    dpkg = _dpkg_version(root, "nvidia-jetpack")
    if dpkg:
        jetpack = _jetpack_from_dpkg(dpkg)
        sources["jetpack"] = "dpkg nvidia-jetpack"
    elif l4t:
        jetpack, how = jetpack_for_l4t(l4t)
        sources["jetpack"] = how
    arch = cuda_arch_for_soc(soc, cuda_version, l4t)
    if arch:
        sources["cuda_arch"] = "SoC table" + (" and CUDA version" if soc == "tegra264" else "")
    return JetsonInfo(model=model, soc=soc, l4t=l4t, jetpack=jetpack, cuda_arch=arch, board=board, sources=sources)
