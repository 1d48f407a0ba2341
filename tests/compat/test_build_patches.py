"""Build-time patches on the real upstream setup.py / reverse_scan.cuh of every sdist in ../shared/sdists."""

from __future__ import annotations

import ast
import tarfile
from pathlib import Path
from typing import List

import pytest

from jetson_mamba.compat.build_patches import BuildOptions, apply_build_patches
from jetson_mamba.compat.registry import revert
from jetson_mamba.errors import PatchError

FILES = ("setup.py", "csrc/selective_scan/reverse_scan.cuh")
SM87_CUDA13 = BuildOptions(("8.7",), compress_mode=True, cxx_std=20)


def _sdists(shared: Path) -> List[Path]:
    return sorted((shared / "sdists").glob("*.tar.gz"))


def _tree(sdist: Path, into: Path) -> Path:
    """setup.py (+ reverse_scan.cuh where present) of an sdist, unpacked under `into`."""
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if m.name.split("/", 1)[-1] in FILES]
        archive.extractall(into, members=members)
    return into / sdist.name[:-len(".tar.gz")]


def _distribution(tree: Path) -> str:
    return "mamba-ssm" if tree.name.startswith("mamba_ssm") else "causal-conv1d"


def _gencodes(setup: str) -> List[str]:
    return [n.value for n in ast.walk(ast.parse(setup))
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and "arch=compute" in n.value]


def test_every_sdist_keeps_only_the_requested_arch(shared: Path, tmp_path: Path) -> None:
    for sdist in _sdists(shared):
        tree = _tree(sdist, tmp_path)
        upstream = _gencodes((tree / "setup.py").read_text())
        assert len(upstream) >= 6, sdist.name
        applied = apply_build_patches(tree, _distribution(tree), None, SM87_CUDA13)
        setup = (tree / "setup.py").read_text()
        assert _gencodes(setup) == ["arch=compute_87,code=sm_87"], sdist.name
        assert "-lineinfo" not in setup and "--compress-mode=size" in setup
        assert "-std=c++17" not in setup and "-std=c++20" in setup
        assert {"gencode-requested-archs", "fatbin-compression", "cxx20-for-torch-headers"} <= set(applied)
        assert apply_build_patches(tree, _distribution(tree), None, SM87_CUDA13) == []  # idempotent


def test_two_archs_cxx17_and_no_compress_mode(shared: Path, tmp_path: Path) -> None:
    tree = _tree(shared / "sdists" / "causal_conv1d-1.6.0.tar.gz", tmp_path)
    options = BuildOptions(("8.7", "9.0"), compress_mode=False, cxx_std=17)
    applied = apply_build_patches(tree, "causal-conv1d", "1.6.0", options)
    setup = (tree / "setup.py").read_text()
    assert _gencodes(setup) == ["arch=compute_87,code=sm_87", "arch=compute_90,code=sm_90"]
    assert '"-lineinfo"' not in setup and "--compress-mode" not in setup.replace("no --compress-mode", "")
    assert "-std=c++17" in setup and "cxx20-for-torch-headers" not in applied


def test_cub_fix_only_where_the_removed_calls_are(shared: Path, tmp_path: Path) -> None:
    old = _tree(shared / "sdists" / "mamba_ssm-2.2.5.tar.gz", tmp_path)
    assert "cuda13-cub" in apply_build_patches(old, "mamba-ssm", "2.2.5", SM87_CUDA13)
    text = (old / FILES[1]).read_text()
    assert "cub::LaneId" not in text and "cub::CTA_SYNC" not in text
    assert "(threadIdx.x & 0x1f)" in text and text.count("__syncthreads();") >= 2
    new = _tree(shared / "sdists" / "mamba_ssm-2.3.2.post1.tar.gz", tmp_path)
    assert "cuda13-cub" not in apply_build_patches(new, "mamba-ssm", "2.3.2.post1", SM87_CUDA13)


def test_revert_restores_the_upstream_bytes(shared: Path, tmp_path: Path) -> None:
    tree = _tree(shared / "sdists" / "mamba_ssm-2.2.5.tar.gz", tmp_path)
    before = {f: (tree / f).read_bytes() for f in FILES}
    apply_build_patches(tree, "mamba-ssm", "2.2.5", SM87_CUDA13)
    assert all((tree / f).read_bytes() != before[f] for f in FILES)
    revert(tree)
    assert {f: (tree / f).read_bytes() for f in FILES} == before


@pytest.mark.parametrize("setup", [
    'cc_flag = []\nfor a in ("80", "90"):\n    cc_flag += ["-gencode", f"arch=compute_{a},code=sm_{a}"]\n',
    'cc_flag = ["-gencode", "arch=compute_80,code=sm_80"]\n',
])
def test_unknown_gencode_forms_are_refused_untouched(tmp_path: Path, setup: str) -> None:
    (tmp_path / "setup.py").write_text(setup)
    with pytest.raises(PatchError):
        apply_build_patches(tmp_path, "causal-conv1d", "9.9", SM87_CUDA13)
    assert (tmp_path / "setup.py").read_text() == setup


def test_a_patch_that_would_break_setup_py_changes_nothing(tmp_path: Path) -> None:
    setup = 'flags = (\n    cc_flag.append("-gencode")\n)\n'
    (tmp_path / "setup.py").write_text(setup)
    with pytest.raises(PatchError, match="would not parse"):
        apply_build_patches(tmp_path, "causal-conv1d", "9.9", SM87_CUDA13)
    assert (tmp_path / "setup.py").read_text() == setup
