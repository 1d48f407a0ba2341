"""scripts/arm64-proxy.sh itself: where it cannot run it says why and how to fix it in one line (exit 77),
and a run after a killed one starts clean (no mounts or run folders left behind in the cached root)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

PROXY = Path(__file__).resolve().parents[2] / "scripts" / "arm64-proxy.sh"
CACHE = Path(os.environ.get("JETSON_MAMBA_ARM64_CACHE", "/var/cache/jetson-mamba/arm64"))
UNUSABLE = 77  # the script's exit status where this machine cannot run arm64 roots

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (the script's checks come after the root check)")


def _check(*prefix: str, env: dict = None) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, "bash", str(PROXY), "check"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


@pytest.mark.skipif(shutil.which("setpriv") is None and os.geteuid() == 0, reason="needs setpriv to drop root")
def test_without_root_one_line_and_exit_77() -> None:
    prefix = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups") if os.geteuid() == 0 else ()
    done = _check(*prefix)
    assert done.returncode == UNUSABLE and done.stdout == "", done
    assert done.stderr.strip().splitlines() == [
        "arm64-proxy: cannot run arm64 roots here: needs root (debootstrap, mount, chroot); fix: run it as root or with sudo"]


@ROOT_ONLY
def test_binfmt_misc_that_cannot_be_mounted_names_the_fix(tmp_path: Path) -> None:
    """The whole fix is on the one line (the script used to drop the second half of such messages)."""
    done = _check(env={"JETSON_MAMBA_ARM64_BINFMT": str(tmp_path / "missing" / "binfmt_misc")})
    assert done.returncode == UNUSABLE, done
    (line,) = done.stderr.strip().splitlines()[-1:]
    assert "cannot mount binfmt_misc on" in line, done.stderr
    assert line.endswith(f"mount binfmt_misc -t binfmt_misc {tmp_path / 'missing' / 'binfmt_misc'}"), line


def _mounts_under(path: Path) -> list:
    targets = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True, check=True).stdout
    return [t for t in targets.splitlines() if t.startswith(f"{path}/")]


@pytest.mark.slow
def test_a_killed_runs_mounts_and_run_folder_are_cleared(arm64_available: None) -> None:
    """A run killed with SIGKILL leaves /proc, /sys, /dev and the checkout mounted in the root (its trap never
    runs); the next run mounted over them and left them there for good."""
    prepare = ["bash", str(PROXY), "bullseye", "prepare"]  # the CI sample's root
    first = subprocess.run(prepare, capture_output=True, text=True, timeout=3600)
    assert first.returncode == 0, first.stderr
    root = CACHE / "bullseye" / "root"
    stale = root / "tmp" / "jetson-mamba-run.killed"
    (stale / "venv").mkdir(parents=True)
    subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
    subprocess.run(["mount", "--bind", str(PROXY.parent), str(stale / "venv")], check=True)
    try:
        again = subprocess.run(prepare, capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stderr
        assert _mounts_under(root) == [] and not stale.exists()
    finally:
        for target in sorted(_mounts_under(root), reverse=True):
            subprocess.run(["umount", "-l", target], check=False)
        if stale.exists() and not _mounts_under(root):
            shutil.rmtree(stale)
