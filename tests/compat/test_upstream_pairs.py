"""`jetson-mamba patch` on every supported pairing of real upstream releases, each in its own venv."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest

from jetson_mamba.compat import registry
from jetson_mamba.compat.runtime_patches import (
    CAUSAL_CONV1D_BRIDGE,
    CAUSAL_CONV1D_CPP,
    CAUSAL_CONV1D_VARLEN,
    NO_DISTRIBUTED,
    NO_TRITON,
    PORTABLE,
    SELECTIVE_SCAN_INTERFACE,
    SSD_COMBINED,
    TRACEABLE_CONV,
    TRANSFORMERS5,
)

MAMBA_VERSIONS = ("2.2.4", "2.2.5", "2.3.2.post1")
CONV_VERSIONS = ("1.4.0", "1.5.0.post8", "1.6.0", "1.7.0")


def _cli(python: Path, *args: str) -> Any:
    done = subprocess.run([sys.executable, "-m", "jetson_mamba", "patch", "--json", "--python", str(python), *args],
                          capture_output=True, text=True, check=False)
    assert done.returncode in (0, 1), done.stderr
    data = json.loads(done.stdout)
    data["rc"] = done.returncode
    return data


def _snapshot(site: Path) -> Dict[str, str]:
    """sha256 of every file of both packages and of the record folder (bytecode caches aside)."""
    files = [p for d in ("mamba_ssm", "causal_conv1d", registry.RECORD_DIR) for p in (site / d).rglob("*")
             if p.is_file() and "__pycache__" not in p.parts]
    return {str(p.relative_to(site)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _applied(data: Dict[str, Any], patch: str, path: str) -> List[str]:
    return [s["status"] for s in data["patches"] if s["patch"] == patch and s["path"] == path]


@pytest.mark.slow
@pytest.mark.parametrize("conv", CONV_VERSIONS)
@pytest.mark.parametrize("mamba", MAMBA_VERSIONS)
def test_patch_check_again_revert(mamba: str, conv: str, pair_venv: Callable[[str, str], Path]) -> None:
    python = pair_venv(mamba, conv)
    site = Path(next(python.parent.parent.glob("lib/python*/site-packages")))
    upstream = _snapshot(site)

    first = _cli(python)
    assert first["rc"] == 0 and first["written"], first
    assert first["versions"]["mamba-ssm"] == mamba and first["versions"]["causal-conv1d"] == conv
    # every pairing gets the bridge in both fused paths and the portable fallbacks
    for path in (SELECTIVE_SCAN_INTERFACE, SSD_COMBINED):
        assert _applied(first, CAUSAL_CONV1D_BRIDGE, path) == [registry.NEEDED]
    assert _applied(first, PORTABLE, SELECTIVE_SCAN_INTERFACE) == [registry.NEEDED]
    assert _applied(first, NO_DISTRIBUTED, "mamba_ssm/distributed/distributed_utils.py") == [registry.NEEDED]
    expected_t5 = registry.NOT_NEEDED if mamba.startswith("2.3") else registry.NEEDED
    assert _applied(first, TRANSFORMERS5, "mamba_ssm/utils/generation.py") == [expected_t5]
    for patch in (PORTABLE, NO_TRITON):  # Mamba2's varlen prefill: the Triton conv states, off the GPU and without triton
        assert _applied(first, patch, CAUSAL_CONV1D_VARLEN) == [registry.NEEDED]
    if conv in ("1.6.0", "1.7.0"):  # cpp_functions' custom ops (>= 1.5.1) are routed while torch.compile traces
        assert _applied(first, TRACEABLE_CONV, CAUSAL_CONV1D_CPP) == [registry.NEEDED]
    patched = _snapshot(site)
    assert patched != upstream
    for path in (SELECTIVE_SCAN_INTERFACE, SSD_COMBINED):
        compile((site / path).read_text(), path, "exec")
        assert "causal_conv1d_cuda.causal_conv1d_fwd(" not in (site / path).read_text()

    check = _cli(python, "--check")
    assert check["rc"] == 0 and check["clean"], check
    assert {s["status"] for s in check["patches"]} <= {registry.APPLIED, registry.NOT_NEEDED, registry.MISSING}

    again = _cli(python)
    assert again["rc"] == 0 and again["written"] == [] and again["changes"] == []
    assert _snapshot(site) == patched

    listed = _cli(python, "--revert", "--dry-run")
    assert len(listed["files"]) == len(first["written"]) and _snapshot(site) == patched
    reverted = _cli(python, "--revert")
    assert {f["action"] for f in reverted["files"]} == {"restored"}
    assert len(reverted["files"]) == len(first["written"])
    assert _snapshot(site) == upstream  # byte-for-byte, and no record, backup or temporary file left
    assert _cli(python, "--check")["rc"] == 1
