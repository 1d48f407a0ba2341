"""Shared test fixtures: GPU skipping, the read-only ../shared material, and cheap sub-venvs."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Callable, Dict

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("JETSON_MAMBA_SHARED", ROOT.parent / "shared"))


def _has_gpu() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    if _has_gpu():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared() -> Path:
    """The read-only ../shared folder (sdists, wheelhouse, fixtures)."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is missing")
    return SHARED


def _site_packages(venv: Path) -> Path:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return venv / "lib" / version / "site-packages"


@pytest.fixture(scope="session")
def venv_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Make (once per name) a real venv that sees this test venv's packages (torch, jetson_mamba).

    Installing torch costs minutes, so sub-venvs inherit it through a .pth that calls
    `site.addsitedir` on this interpreter's site-packages; packages installed into the
    sub-venv itself come first on sys.path and shadow the inherited ones.
    Returns the sub-venv's python executable.
    """
    made: Dict[str, Path] = {}
    base = tmp_path_factory.mktemp("venvs")
    parent_site = sysconfig.get_paths()["purelib"]

    def make(name: str) -> Path:
        if name not in made:
            venv = base / name
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            pth = _site_packages(venv) / "_jetson_mamba_parent.pth"
            pth.write_text(f"import site; site.addsitedir({parent_site!r})\n")
            made[name] = venv / "bin" / "python"
        return made[name]

    return make
