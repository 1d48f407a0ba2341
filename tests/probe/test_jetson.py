"""Jetson facts from fixture roots written in the real L4T file formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from jetson_mamba.probe.jetson import (
    cuda_arch_for_soc,
    jetpack_for_l4t,
    parse_nv_tegra_release,
    read_jetson,
    soc_from_compatible,
)

ROOTS = Path(__file__).parent / "roots"


@pytest.mark.parametrize(
    "root, model, soc, l4t, jetpack, arch",
    [
        ("orin-agx-jp6", "NVIDIA Jetson AGX Orin Developer Kit", "tegra234", "36.4.0", "6.1", "8.7"),
        ("orin-nx-jp5", "NVIDIA Orin NX Developer Kit", "tegra234", "35.4.1", "5.1.2", "8.7"),
        ("xavier-nx-jp4", "NVIDIA Jetson Xavier NX Developer Kit", "tegra194", "32.7.1", "4.6.1", "7.2"),
        ("nano-jp4", "NVIDIA Jetson Nano Developer Kit", "tegra210", "32.7.1", "4.6.1", "5.3"),
        ("thor-jp7", "NVIDIA Jetson AGX Thor Developer Kit", "tegra264", "38.2.0", "7.0", "11.0"),
    ],
)
def test_fixture_roots(root: str, model: str, soc: str, l4t: str, jetpack: str, arch: str) -> None:
    info = read_jetson(ROOTS / root)
    assert info is not None
    assert (info.model, info.soc, info.l4t, info.jetpack, info.cuda_arch) == (model, soc, l4t, jetpack, arch)
    assert info.sources["l4t"] == "/etc/nv_tegra_release"
    assert info.sources["soc"] == "/proc/device-tree/compatible"


def test_dpkg_jetpack_wins_over_the_table() -> None:
    info = read_jetson(ROOTS / "orin-agx-jp6")
    assert info is not None and info.sources["jetpack"] == "dpkg nvidia-jetpack"
    assert read_jetson(ROOTS / "orin-nx-jp5").sources["jetpack"] == "L4T->JetPack table"


def test_not_a_jetson() -> None:
    assert read_jetson(ROOTS / "x86_64-server") is None
    assert read_jetson(ROOTS / "does-not-exist") is None


def test_release_line_parsing() -> None:
    assert parse_nv_tegra_release("# R35 (release), REVISION: 6.0, GCID: 1, BOARD: t186ref, EABI: aarch64") == (
        "35.6.0", "t186ref")
    assert parse_nv_tegra_release("# R36 (release), REVISION: 4, GCID: 1") == ("36.4.0", None)
    assert parse_nv_tegra_release("garbage") == (None, None)


def test_unknown_minor_release_falls_back_to_major() -> None:
    assert jetpack_for_l4t("36.9.9") == ("6.x", "estimated from the L4T major release")
    assert jetpack_for_l4t("99.1.0") == (None, "unknown L4T release")


def test_thor_arch_depends_on_cuda() -> None:
    assert cuda_arch_for_soc("tegra264", "13.0", None) == "11.0"
    assert cuda_arch_for_soc("tegra264", "12.8", None) == "10.1"
    assert cuda_arch_for_soc("tegra264", None, "38.2.0") == "11.0"
    assert cuda_arch_for_soc("tegra234", "12.6", None) == "8.7"


def test_compatible_list() -> None:
    assert soc_from_compatible(b"nvidia,p3450-0000\0nvidia,jetson-nano\0nvidia,tegra210\0") == "tegra210"
    assert soc_from_compatible(b"raspberrypi,4-model-b\0brcm,bcm2711\0") is None
