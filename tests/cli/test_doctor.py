"""`jetson-mamba doctor` through the real command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

ROOTS = Path(__file__).parents[1] / "probe" / "roots"
CONTRACT = {"jetson", "gpu", "cuda", "torch", "packages", "findings"}


def doctor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jetson_mamba", "doctor", *args],
                          capture_output=True, text=True, timeout=300)


def as_json(done: subprocess.CompletedProcess) -> Dict[str, Any]:
    data = json.loads(done.stdout)
    assert CONTRACT <= set(data), data.keys()
    assert data["schema_version"] == 1
    for finding in data["findings"]:
        assert set(finding) >= {"id", "severity", "message", "fix"}
        assert finding["severity"] in ("error", "warning", "info")
    return data


def test_this_machine() -> None:
    done = doctor("--json")
    data = as_json(done)
    assert data["jetson"] is None
    assert data["torch"]["version"] is not None  # the test venv has torch
    assert done.returncode == (1 if any(f["severity"] == "error" for f in data["findings"]) else 0)


@pytest.mark.parametrize("root, arch, jetpack", [
    ("orin-agx-jp6", "8.7", "6.1"), ("orin-nx-jp5", "8.7", "5.1.2"), ("xavier-nx-jp4", "7.2", "4.6.1"),
    ("nano-jp4", "5.3", "4.6.1"), ("thor-jp7", "11.0", "7.0"),
])
def test_fixture_roots(root: str, arch: str, jetpack: str) -> None:
    data = as_json(doctor("--json", "--root", str(ROOTS / root)))
    jetson = data["jetson"]
    assert {"model", "soc", "l4t", "jetpack", "cuda_arch"} <= set(jetson)
    assert (jetson["cuda_arch"], jetson["jetpack"]) == (arch, jetpack)
    assert data["gpu"]["arch"] == arch
    # this test venv's torch is a CUDA build that sees no GPU on the (fixture) Jetson
    assert "torch-cpu-only" in [f["id"] for f in data["findings"]]


def test_nano_needs_swap_for_building() -> None:
    findings: List[Dict[str, str]] = as_json(doctor("--json", "--root", str(ROOTS / "nano-jp4")))["findings"]
    build = next(f for f in findings if f["id"] == "build-memory")
    assert "MAX_JOBS=1" in build["message"]


def test_broken_interpreter_is_reported_not_raised(tmp_path: Path) -> None:
    broken = tmp_path / "broken-python"
    broken.write_text("#!/bin/sh\necho 'this interpreter is broken' >&2\nexit 1\n")
    broken.chmod(0o755)
    data = as_json(doctor("--json", "--python", str(broken)))
    assert data["torch"]["version"] is None
    assert "torch-missing" in [f["id"] for f in data["findings"]]


def test_missing_interpreter_is_a_usage_error(tmp_path: Path) -> None:
    done = doctor("--json", "--python", str(tmp_path / "missing-python"))
    assert done.returncode == 2
    error = json.loads(done.stdout)
    assert "no such interpreter" in error["message"] and "--python" in error["fix"]


def test_human_output() -> None:
    done = doctor("--root", str(ROOTS / "orin-agx-jp6"))
    assert "NVIDIA Jetson AGX Orin Developer Kit" in done.stdout and "JetPack 6.1" in done.stdout
    assert "fix:" in done.stdout


@pytest.mark.slow
def test_real_pinned_pair_is_diagnosed(pair_venv) -> None:
    """mamba-ssm 2.2.4 + causal-conv1d 1.6.0 (their real Python code) with transformers 5."""
    python = pair_venv("2.2.4", "1.6.0", tag="doctor")
    done = doctor("--json", "--python", str(python))
    data = as_json(done)
    assert data["packages"]["distributions"]["mamba-ssm"] == "2.2.4"
    found = {f["id"] for f in data["findings"]}
    assert {"incompatible-pair", "transformers5-import", "extension-not-compiled"} <= found
    assert done.returncode == 1

    subprocess.run([sys.executable, "-m", "jetson_mamba", "patch", "--python", str(python)], check=True,
                   capture_output=True)
    patched = as_json(doctor("--json", "--python", str(python)))
    found = {f["id"] for f in patched["findings"]}
    assert not {"incompatible-pair", "transformers5-import"} & found, patched["findings"]
    assert "causal-conv1d-bridge" in patched["packages"]["patches_applied"]
