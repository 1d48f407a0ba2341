"""A clean clone without ../shared gets the same test material by name and hash (tests/material.py)."""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

import pytest

from material import MATERIAL, MaterialError, _fetch_sdist, _sums, shared_root


@pytest.mark.slow
def test_material_is_assembled_by_name_and_hash_without_shared(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JETSON_MAMBA_SHARED", str(tmp_path / "no-shared-here"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = shared_root()
    assert root.is_relative_to(tmp_path / "cache")
    sums = _sums(MATERIAL / "sdists.sha256")
    for name, digest in sums.items():
        assert hashlib.sha256((root / "sdists" / name).read_bytes()).hexdigest() == digest
    with tarfile.open(root / "sdists" / "causal_conv1d-1.7.0.tar.gz") as sdist:
        assert "causal_conv1d-1.7.0/tests/test_causal_conv1d.py" in sdist.getnames()
    upstream = _sums(MATERIAL / "upstream" / "SHA256SUMS")
    for name, digest in upstream.items():
        assert hashlib.sha256((root / "upstream" / name).read_bytes()).hexdigest() == digest
    assert (root / "fixtures" / "mamba_yolo_upstream" / "index.json").is_file()
    assert not (root / "wheelhouse").exists()
    before = {p.name: p.stat().st_mtime_ns for p in (root / "sdists").iterdir()}
    assert shared_root() == root and before == {p.name: p.stat().st_mtime_ns for p in (root / "sdists").iterdir()}


@pytest.mark.slow
def test_an_sdist_with_another_hash_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MaterialError, match="has sha256"):
        _fetch_sdist("causal_conv1d-1.4.0.tar.gz", "0" * 64, tmp_path)
    assert not any(p.suffix == ".gz" for p in tmp_path.rglob("*")), os.listdir(tmp_path)
