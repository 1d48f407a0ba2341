"""`jetson-mamba yolo setup`: ultralytics goes in without pip installing or changing torch, torchvision,
numpy or OpenCV (real pip, real venvs; a JetPack-style torch version string; a JetPack image without
torchvision)."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from jetson_mamba.archive.extras import ProtectedState, follow_requirements

JETPACK_TORCH = "2.14.1a0+5e7f2f7.nv25.10"  # the shape of NVIDIA's JetPack torch versions


def test_ultralytics_requirements_keep_the_protected_packages_as_installed() -> None:
    requires = md.requires("ultralytics") or []  # the real Requires-Dist of the tested release
    jetpack = ProtectedState({"torch": JETPACK_TORCH, "torchvision": "0.24.0a0+1", "numpy": "1.26.4"}, cv2=True)
    wanted, left_out = follow_requirements(requires, jetpack)
    names = {w.split(">")[0].split("<")[0].split("=")[0].split("!")[0].strip() for w in wanted}
    assert not names & {"torch", "torchvision", "numpy", "opencv-python"}, wanted
    assert {"pillow", "pyyaml", "ultralytics-thop"} <= names  # the rest follows; extras' requirements do not
    assert not any("onnx" in w or "tensorflow" in w for w in wanted)
    assert any(line.startswith("opencv-python") and "cv2 already imports" in line for line in left_out)
    pip_opencv = ProtectedState({"torch": "2.14.1", "torchvision": "0.29.1"}, cv2=False)
    assert any(w.startswith("opencv-python") for w in follow_requirements(requires, pip_opencv)[0])


def _jetpack_style_torch(python: Path) -> None:
    """Give the venv's torch a JetPack-style version, as pip and importlib.metadata see it: its own
    dist-info, first on sys.path, shadows the inherited one (the code is the real torch)."""
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    source = Path(str(md.distribution("torch")._path))  # type: ignore[attr-defined]
    target = site / f"torch-{JETPACK_TORCH}.dist-info"
    target.mkdir()
    for name in ("METADATA", "INSTALLER", "top_level.txt"):
        if (source / name).exists():
            shutil.copy(source / name, target / name)
    metadata = (target / "METADATA").read_text().splitlines()
    (target / "METADATA").write_text("\n".join(f"Version: {JETPACK_TORCH}" if line.startswith("Version:") else line
                                               for line in metadata) + "\n")
    (target / "RECORD").write_text("")


def _setup(python: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jetson_mamba", "yolo", "setup", "--python", str(python), "--json",
                           *args], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})


def _versions(python: Path) -> dict:
    script = ("import importlib.metadata as md, json\nout = {}\n"
              "for n in ('torch', 'torchvision', 'numpy', 'opencv-python', 'ultralytics'):\n"
              "    try: out[n] = md.version(n)\n    except md.PackageNotFoundError: out[n] = None\n"
              "print(json.dumps(out))")
    return json.loads(subprocess.run([str(python), "-c", script], capture_output=True, text=True, check=True).stdout)


@pytest.mark.slow
def test_jetpack_image_without_torchvision_is_refused_with_nothing_installed(
        venv_factory: Callable[..., Path]) -> None:
    python = venv_factory("extras-no-torchvision", hide=("ultralytics", "torchvision"))
    _jetpack_style_torch(python)
    before = _versions(python)
    assert before["torch"] == JETPACK_TORCH and before["torchvision"] is None and before["ultralytics"] is None
    done = _setup(python)
    assert done.returncode == 3, done.stdout + done.stderr
    error = json.loads(done.stdout)
    assert "no torchvision" in error["message"] and "torchvision built for this torch" in error["fix"]
    assert _versions(python) == before
    info = subprocess.run([str(python), "-m", "jetson_mamba", "yolo", "info"], capture_output=True, text=True,
                          timeout=300)
    assert info.returncode == 3 and "Traceback" not in info.stderr, info.stderr
    assert "needs ultralytics" in info.stderr and "jetson-mamba yolo setup" in info.stderr


@pytest.mark.slow
def test_ultralytics_installs_beside_a_jetpack_style_torch_without_touching_it(
        venv_factory: Callable[..., Path]) -> None:
    python = venv_factory("extras-jetpack", hide=("ultralytics", "ultralytics-thop"))
    _jetpack_style_torch(python)
    before = _versions(python)
    plan = _setup(python, "--dry-run")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert [name for name, _ in json.loads(plan.stdout)["installed"]] == ["ultralytics"]
    assert _versions(python) == before
    done = _setup(python)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)  # stdout holds the JSON alone (pip's and our progress go to stderr)
    installed = dict(map(tuple, report["installed"]))
    assert "ultralytics" in installed and "ultralytics-thop" in installed
    assert not set(installed) & {"torch", "torchvision", "numpy", "opencv-python"}
    assert report["protected"]["torch"] == JETPACK_TORCH
    after = _versions(python)
    assert after["ultralytics"] == installed["ultralytics"]
    assert {k: v for k, v in after.items() if k != "ultralytics"} == {k: v for k, v in before.items()
                                                                       if k != "ultralytics"}
