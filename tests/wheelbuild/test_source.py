"""Finding sources (sdists, sdist folders, checkouts) and preparing patched work trees, without compiling."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import pytest

from jetson_mamba.compat.build_patches import BuildOptions
from jetson_mamba.errors import UsageError
from jetson_mamba.wheelbuild.plan import BuildPlan, Spec, Toolchain
from jetson_mamba.wheelbuild.source import STAMP, find_local, obtain, prepare_tree

TOOLCHAIN = Toolchain(python="python", cuda_home=None, nvcc=None, cuda_version="13.0", nvcc_archs=(),
                      compress_mode=True, torch_version="2.14.1", torch_include=None, torch_cxx_std=20)
PLAN = BuildPlan(specs=(), archs=("8.7",), jobs=1, jobs_reason="test", label="cu130.torch2.14.sm87", cxx_std=20,
                 toolchain=TOOLCHAIN)
OPTIONS = BuildOptions(("8.7",), True, 20)


def test_sdist_folder_pinned_and_newest(shared: Path) -> None:
    pinned = find_local(Spec("causal-conv1d", "1.6.0"), [shared / "sdists"])
    assert pinned is not None and pinned.path.name == "causal_conv1d-1.6.0.tar.gz" and len(pinned.digest) == 64
    newest = find_local(Spec("causal-conv1d", None), [shared / "sdists"])
    assert newest is not None and newest.version == "1.7.0"
    assert find_local(Spec("mamba-ssm", "9.9.9"), [shared / "sdists"]) is None


def test_missing_version_in_source_paths_is_a_usage_error(shared: Path) -> None:
    with pytest.raises(UsageError, match="none of the --source paths holds mamba-ssm==9.9.9"):
        obtain(Spec("mamba-ssm", "9.9.9"), [shared / "sdists"], "python", Path("/nonexistent"))


def test_checkout_directory_is_identified_and_copied_without_git(shared: Path, tmp_path: Path) -> None:
    with tarfile.open(shared / "sdists" / "causal_conv1d-1.6.0.tar.gz") as archive:
        archive.extractall(tmp_path)
    checkout = tmp_path / "causal_conv1d-1.6.0"
    (checkout / "PKG-INFO").unlink()  # a git checkout has none
    (checkout / ".git").mkdir()
    (checkout / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    source = find_local(Spec("causal-conv1d", "1.6.0"), [checkout])
    assert source is not None and source.path == checkout
    tree, patches, reused = prepare_tree(source, PLAN, OPTIONS, tmp_path / "work" / "tree")
    assert not reused and "gencode-requested-archs" in patches and not (tree / ".git").exists()


def test_sdist_without_cuda_sources_needs_a_checkout(shared: Path, tmp_path: Path) -> None:
    source = find_local(Spec("mamba-ssm", "2.2.4"), [shared / "sdists"])
    assert source is not None
    with pytest.raises(UsageError, match="no CUDA sources") as error:
        prepare_tree(source, PLAN, OPTIONS, tmp_path / "tree")
    assert "--source" in error.value.fix and "git clone --branch v2.2.4" in error.value.fix
    assert not (tmp_path / "tree").exists() and list(tmp_path.iterdir()) == []  # nothing half-made


def test_prepared_tree_is_reused_untouched(shared: Path, tmp_path: Path) -> None:
    source = find_local(Spec("mamba-ssm", "2.2.5"), [shared / "sdists"])
    assert source is not None
    tree, patches, reused = prepare_tree(source, PLAN, OPTIONS, tmp_path / "tree")
    assert not reused and "cuda13-cub" in patches and (tree / STAMP).is_file()
    stamp_time = (tree / "setup.py").stat().st_mtime_ns
    again, patches_again, reused_again = prepare_tree(source, PLAN, OPTIONS, tmp_path / "tree")
    assert reused_again and patches_again == patches and (again / "setup.py").stat().st_mtime_ns == stamp_time
    other = BuildOptions(("9.0",), True, 20)
    with pytest.raises(UsageError, match="already holds a different build"):
        prepare_tree(source, PLAN, other, tmp_path / "tree")


def test_not_an_sdist_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.txt"
    bogus.write_text("x")
    with pytest.raises(UsageError, match="is not an sdist"):
        find_local(Spec("mamba-ssm", None), [bogus])
    shutil.rmtree(tmp_path)
    with pytest.raises(UsageError, match="does not exist"):
        find_local(Spec("mamba-ssm", None), [tmp_path])
