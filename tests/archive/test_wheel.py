"""Reading real wheels: facts from METADATA, WHEEL and the binaries; bad wheels refused, archive untouched."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from typing import Dict

import pytest
from packaging.utils import parse_wheel_filename
from packaging.version import Version

from jetson_mamba.archive import add_wheel, load_manifest
from jetson_mamba.archive.manifest import MANIFEST_NAME
from jetson_mamba.archive.wheel import _label_facts, read_wheel
from jetson_mamba.errors import ArchiveError

CONV = "causal_conv1d-1.6.0-cp312-cp312-linux_x86_64.whl"
MAMBA = "mamba_ssm-2.2.5-cp312-cp312-linux_x86_64.whl"


def _sums(wheelhouse: Path) -> Dict[str, str]:
    lines = (wheelhouse / "SHA256SUMS").read_text().split("\n")
    return {name: digest for digest, name in (line.split() for line in lines if line.strip())}


@pytest.mark.parametrize("filename, name, extension", [(CONV, "causal-conv1d", "causal_conv1d_cuda"),
                                                       (MAMBA, "mamba-ssm", "selective_scan_cuda")])
def test_prebuilt_cuda_wheel_facts_come_from_the_wheel(wheelhouse: Path, filename: str, name: str, extension: str) -> None:
    facts = read_wheel(wheelhouse / filename)
    assert facts["sha256"] == _sums(wheelhouse)[filename]
    assert facts["size"] == (wheelhouse / filename).stat().st_size
    assert (facts["name"], facts["tags"]) == (name, ["cp312-cp312-linux_x86_64"])
    assert facts["gpu_archs"]["sass"] == ["9.0"] and facts["gpu_archs"]["ptx"] == []  # BUILD-INFO: sm_90 only
    [member] = facts["gpu_archs"]["binaries"]
    assert member.startswith(extension + ".cpython-312")
    # No local version label: CUDA major from DT_NEEDED libcudart.so.13, ABI from the mangled torch symbols.
    assert facts["cuda"] == {"version": "13", "source": "libcudart DT_NEEDED"}
    assert facts["torch"] == {"linked": True, "version": None, "cxx11_abi": True, "source": "unknown"}
    assert "torch" in " ".join(facts["requires_dist"])


def test_pure_python_wheel_has_no_gpu_facts(pure_wheels: Dict[str, Path]) -> None:
    facts = read_wheel(pure_wheels["mamba_ssm-2.2.5"])
    assert facts["tags"] == ["py3-none-any"] and facts["gpu_archs"] is None
    assert facts["torch"]["linked"] is False and facts["cuda"]["version"] is None


def test_local_version_label_written_by_build() -> None:
    assert _label_facts(Version("2.2.5+cu130.torch2.11.sm90")) == {"cuda": "13.0", "torch": "2.11"}
    assert _label_facts(Version("1.6.0+cu126.torch2.5.cxx98.sm87")) == {"cuda": "12.6", "torch": "2.5",
                                                                       "cxx11_abi": False}
    assert _label_facts(Version("2.2.5")) == {}


# Real file names of upstream's release wheels (the assets of its GitHub releases).
UPSTREAM_RELEASE_NAMES = {
    "mamba_ssm-2.2.5+cu12torch2.4cxx11abiTRUE-cp311-cp311-linux_x86_64.whl": ("12", "2.4", True),
    "mamba_ssm-2.2.4+cu12torch2.6cxx11abiFALSE-cp310-cp310-linux_x86_64.whl": ("12", "2.6", False),
    "mamba_ssm-1.2.0.post1+cu118torch2.1cxx11abiFALSE-cp39-cp39-linux_x86_64.whl": ("11.8", "2.1", False),
    "mamba_ssm-1.1.1+cu122torch2.1cxx11abiTRUE-cp311-cp311-linux_x86_64.whl": ("12.2", "2.1", True),
    "causal_conv1d-1.5.0.post8+cu12torch2.6cxx11abiTRUE-cp312-cp312-linux_x86_64.whl": ("12", "2.6", True),
    "causal_conv1d-1.4.0+cu118torch2.3cxx11abiFALSE-cp38-cp38-linux_x86_64.whl": ("11.8", "2.3", False),
    "causal_conv1d-1.6.0+cu13torch2.9cxx11abiTRUE-cp313-cp313-linux_aarch64.whl": ("13", "2.9", True),
}


@pytest.mark.parametrize("filename", sorted(UPSTREAM_RELEASE_NAMES))
def test_upstream_release_labels_give_torch_cuda_and_abi(filename: str) -> None:
    cuda, torch, abi = UPSTREAM_RELEASE_NAMES[filename]
    version = parse_wheel_filename(filename)[1]
    assert _label_facts(version) == {"cuda": cuda, "torch": torch, "cxx11_abi": abi}


def _add_refused(wheel: Path, archive: Path, *needles: str) -> None:
    with pytest.raises(ArchiveError) as caught:
        add_wheel(wheel, archive)
    for needle in needles:
        assert needle in str(caught.value)
    assert caught.value.fix
    assert not (archive / wheel.name).exists() and not (archive / MANIFEST_NAME).exists()


def test_truncated_wheel_is_refused(wheelhouse: Path, tmp_path: Path) -> None:
    data = (wheelhouse / CONV).read_bytes()
    truncated = tmp_path / CONV
    truncated.write_bytes(data[: len(data) // 2])
    _add_refused(truncated, tmp_path / "archive", "not a readable wheel")


def test_corrupted_wheel_is_refused(pure_wheels: Dict[str, Path], tmp_path: Path) -> None:
    source = pure_wheels["mamba_ssm-2.2.5"]
    with zipfile.ZipFile(source) as wheel:
        info = wheel.getinfo("mamba_ssm/modules/mamba_simple.py")
    data = bytearray(source.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + 100  # inside the compressed payload
    data[start:start + 64] = bytes(64)
    corrupted = tmp_path / source.name
    corrupted.write_bytes(bytes(data))
    _add_refused(corrupted, tmp_path / "archive", "corrupted")


def test_file_name_disagreeing_with_metadata_is_refused(pure_wheels: Dict[str, Path], tmp_path: Path) -> None:
    renamed = tmp_path / "mamba_ssm-2.2.6-py3-none-any.whl"
    shutil.copy(pure_wheels["mamba_ssm-2.2.5"], renamed)
    _add_refused(renamed, tmp_path / "archive", "file name says version 2.2.6", "METADATA says 2.2.5")
    retagged = tmp_path / "mamba_ssm-2.2.5-cp311-cp311-linux_x86_64.whl"
    shutil.copy(pure_wheels["mamba_ssm-2.2.5"], retagged)
    _add_refused(retagged, tmp_path / "archive", "WHEEL says py3-none-any")


def test_add_records_provenance_and_replaces_same_file(pure_wheels: Dict[str, Path], tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    wheel = pure_wheels["causal_conv1d-1.6.0"]
    add_wheel(wheel, archive, provenance={"source": "first"})
    record = add_wheel(wheel, archive, provenance={"source": "sdists/causal_conv1d-1.6.0.tar.gz",
                                                   "patches": ["arch-list"], "build_command": "pip wheel ."},
                       built_on={"machine": "aarch64", "jetson": {"l4t": "36.4.0"}})
    manifest = load_manifest(archive)
    assert manifest is not None and [w.filename for w in manifest.wheels] == [wheel.name]
    assert manifest.wheels[0] == record and record.provenance["patches"] == ["arch-list"]
    assert record.built_on == {"machine": "aarch64", "jetson": {"l4t": "36.4.0"}} and record.added_at
    assert (archive / wheel.name).read_bytes() == wheel.read_bytes()
    assert json.loads((archive / MANIFEST_NAME).read_text())["schema_version"] == 1


def test_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"schema_version": 99, "wheels": []}))
    with pytest.raises(ArchiveError, match="schema_version 99") as caught:
        load_manifest(tmp_path)
    assert "upgrade jetson-mamba" in str(caught.value.fix)
