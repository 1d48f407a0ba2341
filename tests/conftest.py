"""Shared test fixtures: GPU skipping, the read-only ../shared material (assembled by name and hash where
../shared is absent: tests/material.py), cheap sub-venvs, and the real upstream mamba-ssm / causal-conv1d
Python code installed in them.

Each sdist in ../shared/sdists is built once into a pure-Python wheel (no CUDA compile:
*_SKIP_CUDA_BUILD + *_FORCE_BUILD, --no-build-isolation, --no-deps) and cached by the sdists'
digests, so sub-venvs get a cheap `pip install` of wheels.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import sysconfig
from pathlib import Path
from types import ModuleType
from typing import Callable, Dict, Iterator, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _has_gpu() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_configure(config: pytest.Config) -> None:
    """Under CI (CI=true) the hypothesis fuzz tests draw a fixed sequence of examples (derandomize, no
    example database): a run of the same commit gives the same result; elsewhere they explore afresh."""
    try:
        from hypothesis import settings
    except ImportError:
        return
    settings.register_profile("ci", derandomize=True, database=None)
    if os.environ.get("CI"):
        settings.load_profile("ci")


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    if _has_gpu():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def choose_backend() -> Iterator[Callable[[str], None]]:
    """choose_backend("torch"): the rest of the test runs on that backend (jetson_mamba.ops.use_backend),
    until the test ends."""
    from jetson_mamba.ops import use_backend

    with contextlib.ExitStack() as stack:
        yield lambda names: stack.enter_context(use_backend(names))


@pytest.fixture(scope="session")
def kernel_like_scan() -> ModuleType:
    """tests/compat/kernel_like_scan.py: fixed-B states without B, as the compiled kernel stores them."""
    import importlib.util

    path = Path(__file__).with_name("compat") / "kernel_like_scan.py"
    spec = importlib.util.spec_from_file_location("kernel_like_scan", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def shared() -> Path:
    """The read-only ../shared folder (sdists, upstream, fixtures, wheelhouse), or the same material by
    name and hash (tests/material/README.md); a fetch that fails or gives another hash fails the tests."""
    from material import shared_root

    return shared_root()


@pytest.fixture(scope="session")
def wheelhouse(shared: Path) -> Path:
    """The lab GPU's prebuilt sm_90 wheels: only in ../shared (no index has them), else the test skips."""
    from material import WHEELHOUSE_MISSING

    path = shared / "wheelhouse" / "h200-cu130-py312"
    if not path.is_dir():
        pytest.skip(WHEELHOUSE_MISSING)
    return path


def _site_packages(venv: Path) -> Path:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return venv / "lib" / version / "site-packages"


@pytest.fixture(scope="session")
def venv_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Make (once per name) a real venv that sees this test venv's packages (torch, jetson_mamba).

    Installing torch costs minutes, so sub-venvs inherit it through a .pth that calls
    `site.addsitedir` on this interpreter's site-packages; packages installed into the
    sub-venv itself come first on sys.path and shadow the inherited ones. `hide` names
    distributions the sub-venv must not inherit (it then sees a copy of the site-packages
    made of symlinks, without them). Returns the sub-venv's python executable.
    """
    made: Dict[str, Path] = {}
    base = tmp_path_factory.mktemp("venvs")
    parent_site = sysconfig.get_paths()["purelib"]

    def inherited(name: str, hide: Tuple[str, ...]) -> str:
        if not hide:
            return parent_site
        farm = base / f"{name}-inherited"
        farm.mkdir()
        for entry in Path(parent_site).iterdir():
            stem = entry.name.split("-")[0].split(".")[0].lower().replace("_", "-")
            if stem not in hide:
                (farm / entry.name).symlink_to(entry)
        return str(farm)

    def make(name: str, hide: Tuple[str, ...] = ()) -> Path:
        if name not in made:
            venv = base / name
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            pth = _site_packages(venv) / "_jetson_mamba_parent.pth"
            pth.write_text(f"import site; site.addsitedir({inherited(name, hide)!r})\n")
            made[name] = venv / "bin" / "python"
        return made[name]

    return make


NO_CUDA_BUILD = {"MAMBA_SKIP_CUDA_BUILD": "TRUE", "MAMBA_FORCE_BUILD": "TRUE",
                 "CAUSAL_CONV1D_SKIP_CUDA_BUILD": "TRUE", "CAUSAL_CONV1D_FORCE_BUILD": "TRUE"}


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
def mamba_main_wheel(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pure-Python wheel of mamba-ssm's main branch (../shared/upstream/mamba-main-*.tar.gz, a repository
    snapshot that still calls itself 2.3.2.post1), built like the sdists' and cached by the tarball's digest."""
    import tarfile

    from jetson_mamba.archive.wheel import sha256_of

    tarball = next(iter(sorted((shared / "upstream").glob("mamba-main-*.tar.gz"))), None)
    if tarball is None:
        pytest.skip("no mamba-main-*.tar.gz in ../shared/upstream")
    cache = ROOT / ".pytest_cache" / "jetson-mamba-mamba-main" / sha256_of(tarball)[:16]
    wheel = next(cache.glob("mamba_ssm-*.whl"), None)
    if wheel is None:
        unpacked = tmp_path_factory.mktemp("mamba-main")
        with tarfile.open(tarball) as archive:
            archive.extractall(unpacked, filter="data")
        (tree,) = [p for p in unpacked.iterdir() if p.is_dir()]
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps",
                        "--no-index", "-w", str(cache), str(tree)], check=True, env={**os.environ, **NO_CUDA_BUILD})
        wheel = next(cache.glob("mamba_ssm-*.whl"))
    return wheel


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
