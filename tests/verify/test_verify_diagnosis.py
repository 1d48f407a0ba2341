"""verify's diagnosis of a failed run reads the machine as doctor does: with the runtime patches in effect."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

# Run by the sub-venv's interpreter: the diagnosis of one failed kernel check there, as JSON.
SCRIPT = """
import json
from jetson_mamba.verify import diagnose_failures
from jetson_mamba.verify.report import FAILED, CheckResult, VerifyReport
check = CheckResult("selective_scan[triton]", "case", "float32", "forward", FAILED, 1.0, 1e-4, backend="triton")
report = VerifyReport(device="cpu", quick=True, checks=[check])
print(json.dumps([vars(finding) for finding in diagnose_failures(report)]))
"""


def diagnosis(python: Path) -> List[Dict[str, Any]]:
    done = subprocess.run([str(python), "-c", SCRIPT], capture_output=True, text=True, timeout=300, check=True)
    return json.loads(done.stdout)


def offers_patch(found: List[Dict[str, Any]]) -> List[str]:
    return [finding["id"] for finding in found if "jetson-mamba patch" in finding["fix"]]


@pytest.mark.slow
def test_a_patched_install_is_not_told_to_patch(pair_venv) -> None:
    """mamba-ssm 2.2.4 + causal-conv1d 1.6.0 need the bridge (and transformers 5 its patch): offered before
    `jetson-mamba patch`, never after (the diagnosis ran without the applied patches, and offered them again)."""
    python = pair_venv("2.2.4", "1.6.0", tag="verify-diagnosis")
    before = diagnosis(python)
    assert "incompatible-pair" in offers_patch(before), before
    assert before[0]["id"] == "wrong-kernel-backend"  # what the failure itself shows comes first
    subprocess.run([sys.executable, "-m", "jetson_mamba", "patch", "--python", str(python)], check=True,
                   capture_output=True)
    after = diagnosis(python)
    assert offers_patch(after) == [], after
    assert after[0]["id"] == "wrong-kernel-backend"
