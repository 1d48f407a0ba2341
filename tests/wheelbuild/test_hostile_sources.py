"""`build` with a corrupt sdist or a file where a directory belongs (issue 19): one error line, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SDIST = "causal_conv1d-1.6.0.tar.gz"


def _build(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jetson_mamba", "build", "causal-conv1d==1.6.0", "--arch", "8.7",
                           *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})


def _one_error(done: subprocess.CompletedProcess, code: int, needle: str) -> None:
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith(("error: ", "fix: "))]
    assert [line.split(":")[0] for line in lines] == ["error", "fix"] and needle in lines[0], done.stderr


@pytest.mark.parametrize("damage", ["truncated", "garbled"])
def test_corrupt_sdist_is_one_error_line(shared: Path, tmp_path: Path, damage: str) -> None:
    data = (shared / "sdists" / SDIST).read_bytes()
    bad = tmp_path / "sdists" / SDIST
    bad.parent.mkdir()
    bad.write_bytes(data[: len(data) // 2] if damage == "truncated" else
                    data[:200] + bytes(b ^ 0x5A for b in data[200:4000]) + data[4000:])
    _one_error(_build(tmp_path, "--source", str(bad), "--prepare-only", str(tmp_path / "out")), 6,
               "is not a readable sdist")


def test_prepare_only_naming_a_file(shared: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    _one_error(_build(tmp_path, "--source", str(shared / "sdists" / SDIST), "--prepare-only", str(tmp_path / "file")),
               2, "is a file, not a directory")
