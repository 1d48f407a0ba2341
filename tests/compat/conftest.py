"""Real upstream mamba-ssm / causal-conv1d in real sub-venvs, for the patch tests.

Each sdist in ../shared/sdists is built once into a pure-Python wheel (no CUDA compile, as the
issue prescribes: *_SKIP_CUDA_BUILD + *_FORCE_BUILD, --no-build-isolation, --no-deps) and cached
by the sdists' digests, so the venvs get a cheap `pip install` of wheels.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, Tuple

import pytest

NO_CUDA_BUILD = {"MAMBA_SKIP_CUDA_BUILD": "TRUE", "MAMBA_FORCE_BUILD": "TRUE",
                 "CAUSAL_CONV1D_SKIP_CUDA_BUILD": "TRUE", "CAUSAL_CONV1D_FORCE_BUILD": "TRUE"}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def upstream_wheels(shared: Path) -> Dict[Tuple[str, str], Path]:
    """(distribution module name, version) -> a pure-Python wheel built from the real sdist."""
    sdists = {tuple(p.name[:-len(".tar.gz")].split("-", 1)): p
              for p in sorted((shared / "sdists").glob("*.tar.gz")) if p.name.startswith(("mamba_ssm-", "causal_conv1d-"))}
    digest = hashlib.sha256(b"".join(hashlib.sha256(p.read_bytes()).digest() for p in sdists.values())).hexdigest()
    cache = ROOT / ".pytest_cache" / "jetson-mamba-upstream-wheels" / digest[:16]
    wheels = {key: next(cache.glob(f"{key[0]}-{key[1]}-py3-none-any.whl"), None) for key in sdists}
    missing = [sdists[key] for key, wheel in wheels.items() if wheel is None]
    if missing:
        cache.mkdir(parents=True, exist_ok=True)
        for sdist in missing:  # one pip per sdist: pip refuses two versions of one project in one call
            subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps",
                            "--no-index", "-w", str(cache), str(sdist)],
                           check=True, env={**os.environ, **NO_CUDA_BUILD})
        wheels = {key: next(cache.glob(f"{key[0]}-{key[1]}-py3-none-any.whl")) for key in sdists}
    return wheels  # type: ignore[return-value]


@pytest.fixture(scope="session")
def pair_venv(venv_factory: Callable[[str], Path], upstream_wheels: Dict[Tuple[str, str], Path]
              ) -> Callable[[str, str], Path]:
    """A sub-venv with mamba-ssm `mamba` and causal-conv1d `conv` installed by pip; returns its python.

    Tests that leave different states behind use different `tag`s (one venv per name and tag).
    """

    def make(mamba: str, conv: str, tag: str = "") -> Path:
        for key in (("mamba_ssm", mamba), ("causal_conv1d", conv)):
            if key not in upstream_wheels:
                pytest.skip(f"no sdist of {key[0]} {key[1]} in ../shared/sdists")
        python = venv_factory(f"mamba-{mamba}-conv-{conv}{'-' + tag if tag else ''}")
        if not list(python.parent.parent.glob("lib/python*/site-packages/mamba_ssm")):
            subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                            str(upstream_wheels["mamba_ssm", mamba]), str(upstream_wheels["causal_conv1d", conv])],
                           check=True, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
        return python

    return make
