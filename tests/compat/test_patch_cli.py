"""`jetson-mamba patch` as people use it: dry-run diffs, --check status, refusals with the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Callable, Dict

import pytest

from jetson_mamba.cli import main
from jetson_mamba.compat import registry

NO_CUDA_BUILD = {"MAMBA_SKIP_CUDA_BUILD": "TRUE", "MAMBA_FORCE_BUILD": "TRUE"}
TARGET = "mamba_ssm/ops/selective_scan_interface.py"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jetson_mamba", "patch", *args], capture_output=True, text=True,
                          check=False, env={**os.environ, "COLUMNS": "200"})


def _tree(site: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(site)): p.read_bytes() for d in ("mamba_ssm", "causal_conv1d", registry.RECORD_DIR)
            for p in (site / d).rglob("*.py")}


@pytest.fixture(scope="module")
def venv(pair_venv: Callable[..., Path]) -> Path:
    return pair_venv("2.2.4", "1.6.0", "cli")


@pytest.mark.slow
def test_dry_run_prints_the_diff_and_changes_nothing(venv: Path) -> None:
    site = next(venv.parent.parent.glob("lib/python*/site-packages"))
    before = _tree(site)
    done = _cli("--dry-run", "--python", str(venv))
    assert done.returncode == 0, done.stderr
    assert f"--- a/{TARGET}" in done.stdout and "+    from causal_conv1d.cpp_functions import" in done.stdout
    assert "-    import causal_conv1d_cuda" in done.stdout
    assert "would change" in done.stdout
    assert _tree(site) == before and not (site / registry.RECORD_DIR).exists()

    check = _cli("--check", "--python", str(venv))
    assert check.returncode == 1 and "needed" in check.stdout and "causal-conv1d-bridge" in check.stdout


@pytest.mark.slow
def test_hand_edited_file_is_refused_with_the_fix(venv: Path) -> None:
    site = next(venv.parent.parent.glob("lib/python*/site-packages"))
    path = site / TARGET
    original = path.read_bytes()
    path.write_bytes(original + b"# local edit\n")
    try:
        before = _tree(site)
        done = _cli("--json", "--python", str(venv))
        error = json.loads(done.stdout)
        assert done.returncode == 4 and error["error"] == "patch" and error["schema_version"] == 1, done
        assert "neither the file mamba-ssm 2.2.4 installed" in error["message"]
        assert "pip install --force-reinstall --no-deps mamba-ssm==2.2.4" in error["fix"]
        assert _tree(site) == before  # not one file patched, no record
    finally:
        path.write_bytes(original)


@pytest.mark.slow
def test_read_only_site_packages_is_a_clear_error(venv: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    site = next(venv.parent.parent.glob("lib/python*/site-packages"))
    before = _tree(site)
    if os.geteuid() == 0:  # root writes anyway: make this site-packages read-only as seen by the tool
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, m: False if str(p).startswith(str(site)) else real(p, m))
    else:
        os.chmod(site, 0o555)
    try:
        assert main(["patch", "--json", "--python", str(venv)]) == 5
    finally:
        os.chmod(site, 0o755)
    error = json.loads(capsys.readouterr().out)
    assert error["error"] == "permission" and "not writable" in error["message"] and "sudo" in error["fix"]
    assert _tree(site) == before


def test_bad_interpreter_and_empty_environment() -> None:
    done = _cli("--python", "/nonexistent/python")
    assert done.returncode == 2 and "no such interpreter" in done.stderr and "--python" in done.stderr
    empty = _cli("--check")  # the test venv has neither package
    assert empty.returncode == 0 and "nothing to patch" in empty.stdout


@pytest.mark.slow
def test_editable_install_patches_its_checkout(shared: Path, tmp_path: Path,
                                               venv_factory: Callable[[str], Path]) -> None:
    """`pip install -e` of a mamba-ssm checkout: the files Python imports are the checkout's."""
    with tarfile.open(shared / "sdists" / "mamba_ssm-2.2.4.tar.gz") as archive:
        archive.extractall(tmp_path)  # noqa: S202 (our own read-only fixture)
    checkout = tmp_path / "mamba_ssm-2.2.4"
    python = venv_factory("editable-mamba-2.2.4")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-e", str(checkout)], check=True, env={**os.environ, **NO_CUDA_BUILD})
    before = {p: p.read_bytes() for p in checkout.rglob("*.py")}
    done = json.loads(_cli("--json", "--python", str(python)).stdout)
    assert str(checkout / TARGET) in done["written"]
    assert "causal_conv1d_fwd_function(" in (checkout / TARGET).read_text()
    assert json.loads(_cli("--json", "--check", "--python", str(python)).stdout)["clean"]
    assert _cli("--revert", "--python", str(python)).returncode == 0
    assert {p: p.read_bytes() for p in checkout.rglob("*.py")} == before
