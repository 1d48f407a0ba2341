"""The arm64 proxy for a Jetson: scripts/arm64-proxy.sh runs a scenario in a cached Debian arm64 root.

What runs (`JETSON_MAMBA_ARM64`):
- unset or `sample`: the CI sample, SAMPLE below, within ~8-10 min of CI's budget on a clean 2-core machine
  (roots, venvs and wheels built natively, no cache);
- `1`: every scenario on both roots (~35-40 min under emulation with cached roots on a loaded 2-core machine);
  `require`: the same, and a machine that cannot run arm64 roots fails instead of skipping;
- `0`: none.
Where the machine cannot run arm64 roots (not root, no binfmt_misc) the tests skip with the script's one-line
reason (exit 77), unless `require`.
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
# The CI sample: (suite, scenario) pairs that run by default. Sampling rule: one root, cold, within ~8-10 min
# of CI: bullseye (JetPack 5's glibc 2.31, the oldest Python, 3.9: it found the causal-conv1d import bug), with
# `patch` (install, patch, import, Mamba/Mamba2 forward and backward, byte-exact revert: the scenario native
# x86_64 tests cannot stand in for) and `select` (~2 min; the glibc 2.31 rejections). `doctor` (~8 min: a
# doctor per fixture root) and `verify` (~4 min), and everything on bookworm, run with JETSON_MAMBA_ARM64=1.
SAMPLE = {("bullseye", "patch"), ("bullseye", "select")}
# A cold root (native build) and a scenario under emulation on a loaded 2-core machine.
SCENARIO_TIMEOUT = 3600
UNUSABLE = 77


def _mode() -> str:
    return os.environ.get("JETSON_MAMBA_ARM64", "sample")


def _unusable(reason: str) -> None:
    if _mode() == "require":
        pytest.fail(f"arm64 roots are required here: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def arm64_available() -> None:
    """`arm64-proxy.sh check` (may install qemu-user-static and debootstrap, mount binfmt_misc and register
    qemu-aarch64, as root)."""
    if _mode() == "0":
        pytest.skip("arm64 scenarios are off (JETSON_MAMBA_ARM64=0)")
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
        if (suite, scenario) not in SAMPLE and _mode() not in ("1", "require"):
            pytest.skip(f"{scenario} on {suite} is not in the CI sample; JETSON_MAMBA_ARM64=1 runs it")
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
