"""Runtime patches on unpacked real sdists (what the build bakes into wheels), and doctor's view of them."""

from __future__ import annotations

import ast
import base64
import hashlib
import tarfile
from pathlib import Path
from typing import Dict

import pytest

from jetson_mamba.compat import registry
from jetson_mamba.compat.installed import applied_runtime_patches
from jetson_mamba.compat.runtime_patches import (
    MAMBA3_LAZY,
    PY39_ANNOTATIONS,
    RUNTIME_PATCHES,
    apply_to_tree,
)


def _unpack(sdist: Path, into: Path) -> Path:
    with tarfile.open(sdist) as archive:
        archive.extractall(into)  # noqa: S202 (our own read-only fixtures)
    return into / sdist.name[:-len(".tar.gz")]


def _record_digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _py_files(root: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*.py")}


@pytest.mark.parametrize("name", ["mamba_ssm-2.2.4", "mamba_ssm-2.2.5", "mamba_ssm-2.3.2.post1",
                                  "causal_conv1d-1.4.0", "causal_conv1d-1.5.0.post8", "causal_conv1d-1.6.0",
                                  "causal_conv1d-1.7.0"])
def test_apply_to_tree_compiles_is_idempotent_and_reverts(shared: Path, tmp_path: Path, name: str) -> None:
    sdist = shared / "sdists" / f"{name}.tar.gz"
    if not sdist.is_file():
        pytest.skip(f"{sdist} is missing")
    root = _unpack(sdist, tmp_path)
    upstream = _py_files(root)
    plan = apply_to_tree(root)
    assert plan.changes and registry.tree_target(root).distribution in ("mamba-ssm", "causal-conv1d")
    for change in plan.changes:
        compile(change.after.decode(), str(change.absolute), "exec")
    assert apply_to_tree(root).changes == ()
    registry.revert(root)
    assert _py_files(root) == upstream


def _unions_evaluated_at_def_time(source: str) -> list:
    """`X | Y` in function annotations of a module without `from __future__ import annotations`: Python 3.9
    evaluates them when the function is defined and raises TypeError for classes such as torch.Tensor."""
    tree = ast.parse(source)
    if any(isinstance(node, ast.ImportFrom) and node.module == "__future__" and
           any(alias.name == "annotations" for alias in node.names) for node in tree.body):
        return []
    found = []
    for function in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
        arguments = function.args
        annotations = [a.annotation for a in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs,
                                              arguments.vararg, arguments.kwarg) if a is not None]
        for annotation in (*annotations, function.returns):
            found += [f"{function.name}: {ast.unparse(annotation)}" for node in ast.walk(annotation or ast.Pass())
                      if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr)]
    return found


@pytest.mark.parametrize(("name", "module"), [
    ("causal_conv1d-1.6.0", "causal_conv1d/cpp_functions.py"), ("causal_conv1d-1.7.0", "causal_conv1d/cpp_functions.py"),
    ("mamba_ssm-2.3.2.post1", "mamba_ssm/ops/triton/mamba3/angle_dt.py")])
def test_patched_modules_import_on_python_39(shared: Path, tmp_path: Path, name: str, module: str) -> None:
    """Upstream's module cannot be imported on Python 3.9 (which its package declares it supports): found on
    the arm64 proxy's bullseye root (aarch64 Python 3.9.2, like JetPack 5). Patched, it can."""
    root = _unpack(shared / "sdists" / f"{name}.tar.gz", tmp_path)
    assert _unions_evaluated_at_def_time((root / module).read_text())  # upstream, as found
    apply_to_tree(root)
    patched = (root / module).read_text()
    assert _unions_evaluated_at_def_time(patched) == [] and registry.marker(PY39_ANNOTATIONS) in patched
    compile(patched, module, "exec")


def test_doctor_sees_applied_and_baked_patches(shared: Path, tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    site.mkdir()
    (_unpack(shared / "sdists" / "mamba_ssm-2.2.4.tar.gz", tmp_path) / "mamba_ssm").rename(site / "mamba_ssm")
    assert applied_runtime_patches(site) == set()
    target = registry.PatchTarget("mamba-ssm", "2.2.4", site)
    registry.apply_plan(registry.patch_plan([target], RUNTIME_PATCHES, registry.INSTALLED))
    everything = {p.name for p in RUNTIME_PATCHES if p.distribution == "mamba-ssm"} - {MAMBA3_LAZY, PY39_ANNOTATIONS}
    # (2.2.4 has no Mamba-3, hence no angle_dt either)
    assert applied_runtime_patches(site) == everything
    # as installed from a wheel built from a patched tree: the patched files are its RECORD's, no patch record
    (site / registry.RECORD_DIR / registry.RECORD_FILE).unlink()
    assert applied_runtime_patches(site) == set()  # markers without any record are not trusted
    info = site / "mamba_ssm-2.2.4.dist-info"
    info.mkdir()
    rows = [f"{p.relative_to(site)},sha256={_record_digest(p.read_bytes())},{p.stat().st_size}"
            for p in (site / "mamba_ssm").rglob("*.py")]
    (info / "RECORD").write_text("\n".join(rows) + "\n")
    assert applied_runtime_patches(site) == everything
