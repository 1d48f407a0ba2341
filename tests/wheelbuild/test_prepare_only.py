"""`jetson-mamba build --prepare-only` on every sdist in ../shared/sdists that has CUDA sources."""

from __future__ import annotations

import ast
import json
import platform
import tarfile
from pathlib import Path
from typing import List

import pytest

from jetson_mamba.cli import main


def _with_cuda_sources(shared: Path) -> List[Path]:
    found = []
    for sdist in sorted((shared / "sdists").glob("*.tar.gz")):
        with tarfile.open(sdist) as archive:
            if any("/csrc/" in name for name in archive.getnames()):
                found.append(sdist)
    return found


def _spec(sdist: Path) -> str:
    name, version = sdist.name[:-len(".tar.gz")].split("-", 1)
    return f"{name.replace('_', '-')}=={version}"


def test_prepare_only_keeps_exactly_sm87(shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    sdists = _with_cuda_sources(shared)
    assert len(sdists) >= 4  # mamba-ssm 2.2.4 and causal-conv1d 1.4.0 / 1.5.0.post8 ship no csrc/
    out = tmp_path / "prepared"
    status = main(["build", *map(_spec, sdists), "--arch", "8.7", "--source", str(shared / "sdists"),
                   "--prepare-only", str(out), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert status == 0 and report["prepare_only"] and len(report["results"]) == len(sdists)
    foreign = [w for w in report["plan"]["warnings"] if "cannot be installed or run on a Jetson" in w]
    if platform.machine() != "aarch64":  # the real probe of this host: its machine and the wheels' tag
        assert foreign and f"this host is {platform.machine()}" in foreign[0], report["plan"]["warnings"]
        assert f"tagged linux_{platform.machine()}" in foreign[0]
    else:
        assert not foreign
    for result in report["results"]:
        tree = Path(result["tree"])
        setup = (tree / "setup.py").read_text()
        gencodes = [n.value for n in ast.walk(ast.parse(setup))
                    if isinstance(n, ast.Constant) and isinstance(n.value, str) and "arch=compute" in n.value]
        assert gencodes == ["arch=compute_87,code=sm_87"], tree.name
        assert not (tree / "build").exists(), "prepare-only compiled something"
        script = Path(result["log"]).read_text()
        force = "MAMBA_FORCE_BUILD" if result["name"] == "mamba-ssm" else "CAUSAL_CONV1D_FORCE_BUILD"
        assert f"export {force}=TRUE" in script and "export MAX_JOBS=" in script
        assert "pip wheel -v --no-build-isolation --no-deps" in script


def test_prepare_only_of_the_224_sdist_says_to_use_a_checkout(shared: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    status = main(["build", "mamba-ssm==2.2.4", "--arch", "sm_87", "--source", str(shared / "sdists"),
                   "--prepare-only", str(tmp_path / "prepared"), "--json"])
    error = json.loads(capsys.readouterr().out)
    assert status == 2 and "no CUDA sources" in error["message"] and "--source" in error["fix"]


def test_cuda_version_needs_prepare_only(capsys: pytest.CaptureFixture) -> None:
    """The flag names a toolkit elsewhere: compiling here with it would use this machine's nvcc anyway."""
    status = main(["build", "--arch", "7.2", "--cuda-version", "11.4", "--json"])
    error = json.loads(capsys.readouterr().out)
    assert status == 2 and "--cuda-version" in error["message"] and "--prepare-only DIR" in error["fix"]


def test_prepare_only_for_jetpack5_writes_sm72_cxx17_trees(shared: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    """From a CUDA 13 / torch 2.14 machine (which refuses sm_72 itself) for a Xavier with CUDA 11.4."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    status = main(["build", "causal-conv1d==1.7.0", "--arch", "7.2", "--cuda-version", "11.4", "--source",
                   str(shared / "sdists"), "--prepare-only", str(tmp_path / "prepared"), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert status == 0 and report["plan"]["cxx_std"] == 17 and report["plan"]["label"].startswith("cu114.")
    setup = (Path(report["results"][0]["tree"]) / "setup.py").read_text()
    assert "-std=c++20" not in setup and '"arch=compute_72,code=sm_72"' in setup
    assert "CUDA_HOME" not in Path(report["results"][0]["log"]).read_text()
