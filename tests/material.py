"""The tests' read-only material by name and hash: `../shared` where it exists, else the same layout
assembled in a cache (sdists fetched from the package index and checked against tests/material/sdists.sha256;
upstream's test files and the Mamba-YOLO fixtures from tests/material/). See tests/material/README.md."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict

from jetson_mamba.archive.wheel import sha256_of

ROOT = Path(__file__).resolve().parents[1]
MATERIAL = ROOT / "tests" / "material"
WHEELHOUSE_MISSING = ("the lab GPU's prebuilt wheels (../shared/wheelhouse) exist only beside this repository's CI: "
                      "no package index has them")


class MaterialError(RuntimeError):
    """An sdist could not be fetched, or did not have the recorded hash."""


def _sums(path: Path) -> Dict[str, str]:
    """file name -> sha256, from a `sha256sum` listing."""
    pairs = (line.split() for line in path.read_text().splitlines() if line.strip())
    return {name: digest for digest, name in pairs}


def _fetch_sdist(filename: str, digest: str, into: Path) -> None:
    """`pip download` the sdist named `filename` (no build isolation: its setup.py imports torch)."""
    name, version = filename[:-len(".tar.gz")].split("-", 1)
    staging = into / f".fetch-{filename}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                               "--no-build-isolation", "-d", str(staging), f"{name}=={version}"],
                              capture_output=True, text=True, timeout=900,
                              env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
        got = staging / filename
        if done.returncode != 0 or not got.is_file():
            raise MaterialError(f"could not fetch {filename} from the package index: {done.stderr.strip()[-500:]}")
        actual = sha256_of(got)
        if actual != digest:
            raise MaterialError(f"{filename} from the package index has sha256 {actual}, not {digest}")
        got.replace(into / filename)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def shared_root() -> Path:
    """A folder laid out as ../shared: ../shared (or $JETSON_MAMBA_SHARED) itself, else the assembled cache."""
    configured = os.environ.get("JETSON_MAMBA_SHARED")
    given = Path(configured) if configured else ROOT.parent / "shared"
    if given.is_dir():
        return given
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "jetson-mamba" / "test-material" / "shared"
    sdists = cache / "sdists"
    sdists.mkdir(parents=True, exist_ok=True)
    for filename, digest in _sums(MATERIAL / "sdists.sha256").items():
        if not (sdists / filename).is_file() or sha256_of(sdists / filename) != digest:
            _fetch_sdist(filename, digest, sdists)
    for name, source in (("upstream", MATERIAL / "upstream"), ("fixtures", MATERIAL / "fixtures")):
        link = cache / name
        if not link.is_symlink() or link.resolve() != source.resolve():
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(source, target_is_directory=True)
    return cache
