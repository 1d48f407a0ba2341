"""The arm64 proxy for a Jetson: scripts/arm64-proxy.sh runs a scenario in a cached Debian arm64 root.

Opt-in: under qemu emulation the eight scenario runs take 45-55 min on a loaded 2-core machine (the
bookworm doctor, selection and verify runs alone 16.5 min with cached roots), more than CI's time
budget, so they run only with `JETSON_MAMBA_ARM64=1` (run where possible) or `=require` (a machine
that cannot run arm64 roots fails instead of skipping). Where it cannot (not root, no binfmt_misc),
they skip with the script's one-line reason.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Callable, Dict, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROXY = ROOT / "scripts" / "arm64-proxy.sh"
SUITES = ("bullseye", "bookworm")
# A cold root: debootstrap and torch under emulation, on a loaded 2-core machine; cached: a few minutes.
SCENARIO_TIMEOUT = 5400
UNUSABLE = 77


def _unusable(reason: str) -> None:
    if os.environ.get("JETSON_MAMBA_ARM64") == "require":
        pytest.fail(f"arm64 roots are required here: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def arm64_available() -> None:
    """`arm64-proxy.sh check` (may mount binfmt_misc and register qemu-aarch64, as root)."""
    if os.environ.get("JETSON_MAMBA_ARM64") not in ("1", "require"):
        pytest.skip("arm64 scenarios are opt-in (45-55 min under emulation): set JETSON_MAMBA_ARM64=1")
    try:
        done = subprocess.run(["bash", str(PROXY), "check"], capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired:
        pytest.fail("arm64-proxy.sh check did not finish in 30 min")
    if done.returncode == UNUSABLE:
        _unusable(done.stderr.strip().splitlines()[-1])
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="session")
def arm64(arm64_available: None) -> Callable[[str, str], Dict[str, Any]]:
    """(suite, scenario) -> the scenario's JSON report; each pair runs once per session."""
    reports: Dict[Tuple[str, str], Dict[str, Any]] = {}

    def run(suite: str, scenario: str) -> Dict[str, Any]:
        if (suite, scenario) not in reports:
            try:
                done = subprocess.run(["bash", str(PROXY), suite, scenario], capture_output=True, text=True,
                                      timeout=SCENARIO_TIMEOUT)
            except subprocess.TimeoutExpired:
                pytest.fail(f"arm64-proxy.sh {suite} {scenario} did not finish in {SCENARIO_TIMEOUT} s")
            if done.returncode == UNUSABLE:
                _unusable(done.stderr.strip().splitlines()[-1])
            assert done.returncode == 0, f"arm64-proxy.sh {suite} {scenario}: exit {done.returncode}\n{done.stderr}"
            reports[suite, scenario] = json.loads(done.stdout)
        return reports[suite, scenario]

    return run
