"""Finishing a real prebuilt wheel: label, strip, RECORD; and catching a wheel whose parts disagree."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

from jetson_mamba.archive.wheel import read_wheel
from jetson_mamba.probe.fatbin import archs_of_wheel
from jetson_mamba.wheelbuild.wheel import check_wheel, finish_wheel, labelled_version

WHEEL = "causal_conv1d-1.6.0-cp312-cp312-linux_x86_64.whl"


def test_labelled_version_replaces_an_existing_label() -> None:
    assert labelled_version("2.2.5", "cu130.torch2.11.sm90") == "2.2.5+cu130.torch2.11.sm90"
    assert labelled_version("2.2.5+old", "cu126.sm87") == "2.2.5+cu126.sm87"


def test_finished_wheel_agrees_everywhere_and_keeps_its_gpu_code(wheelhouse: Path, tmp_path: Path) -> None:
    built = tmp_path / "built" / WHEEL
    built.parent.mkdir()
    shutil.copy(wheelhouse / WHEEL, built)
    out = finish_wheel(built, tmp_path / "out", "cu130.torch2.11.sm90")
    assert out.name == "causal_conv1d-1.6.0+cu130.torch2.11.sm90-cp312-cp312-linux_x86_64.whl"
    assert check_wheel(out) == []
    facts = read_wheel(out)  # the archive's own agreement checks
    assert facts["version"] == "1.6.0+cu130.torch2.11.sm90" and facts["torch"]["version"] == "2.11"
    assert [a.sass for a in archs_of_wheel(out).values()] == [("9.0",)]
    assert out.stat().st_size <= built.stat().st_size
    with zipfile.ZipFile(out) as wheel:
        assert not any(n.startswith("causal_conv1d-1.6.0.dist-info/") for n in wheel.namelist())


def test_check_wheel_catches_a_tampered_file(wheelhouse: Path, tmp_path: Path) -> None:
    out = finish_wheel(wheelhouse / WHEEL, tmp_path, "sm90", strip=False)
    tampered = tmp_path / "tampered" / out.name
    tampered.parent.mkdir()
    with zipfile.ZipFile(out) as source, zipfile.ZipFile(tampered, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            target.writestr(info, data + b"\n# edited" if info.filename.endswith("__init__.py") else data)
    problems = check_wheel(tampered)
    assert problems and "RECORD hash/size of causal_conv1d/__init__.py is wrong" in problems


def test_check_wheel_catches_a_renamed_file(wheelhouse: Path, tmp_path: Path) -> None:
    renamed = tmp_path / "causal_conv1d-1.6.1-cp312-cp312-linux_x86_64.whl"
    shutil.copy(wheelhouse / WHEEL, renamed)
    assert "expected causal_conv1d-1.6.1.dist-info" in check_wheel(renamed)[0]
