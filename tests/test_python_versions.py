"""jetson-mamba installs and runs on Python 3.8 (JetPack 5) through 3.13, without torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def interpreter(version: str) -> str:
    """A real python<version> (pyenv's shims only run the selected version, so look behind them)."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = sorted(pyenv.glob(f"{version}.*/bin/python{version}"), reverse=True)
    found = str(candidates[0]) if candidates else shutil.which(f"python{version}")
    if found is None:
        pytest.skip(f"python{version} is not installed here")
    return found


@pytest.mark.parametrize("version", ["3.8", "3.13"])
def test_every_module_compiles(version: str, tmp_path: Path) -> None:
    """Syntax of every source file (torch-only modules included) under that Python's parser."""
    done = subprocess.run([interpreter(version), "-m", "compileall", "-q", "-d", "src", str(ROOT / "src")],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPYCACHEPREFIX": str(tmp_path)})
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("version", ["3.8", "3.13"])
def test_installs_and_runs_doctor_without_torch(version: str, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([interpreter(version), "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", str(ROOT)], check=True)
    listed = subprocess.run([python, "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True)
    assert "torch" not in {p["name"].lower() for p in json.loads(listed.stdout)}
    done = subprocess.run([str(venv / "bin" / "jetson-mamba"), "doctor", "--json"], capture_output=True, text=True)
    data = json.loads(done.stdout)
    assert data["torch"]["version"] is None
    assert data["torch"]["python_version"].startswith(version)
    help_text = subprocess.run([python, "-m", "jetson_mamba", "--help"], capture_output=True, text=True, check=True)
    assert "doctor" in help_text.stdout
    # Mamba-YOLO's shipped config is found by this Python (importlib.resources.files is 3.9+); the module is
    # loaded on its own because the package imports torch, which this venv lacks
    found = subprocess.run([python, "-c", _CONFIG_SCRIPT], capture_output=True, text=True)
    assert found.returncode == 0 and found.stdout.strip() == "True", found.stderr


_CONFIG_SCRIPT = """
import importlib.util, sysconfig
path = sysconfig.get_paths()["purelib"] + "/jetson_mamba/models/mamba_yolo/integration.py"
spec = importlib.util.spec_from_file_location("integration", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(module.config_path("t").is_file())
"""
