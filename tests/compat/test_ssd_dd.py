"""The ssd-dD-reduction patch, proven on mamba-ssm's own Triton backward run by the Triton interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from jetson_mamba.compat.runtime_patches import RUNTIME_PATCHES, SSD_COMBINED, SSD_DD, apply_to_tree

pytest.importorskip("triton")
CHECK = Path(__file__).with_name("ssd_dd_check.py")


def _d_grad_error(package: Path) -> float:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, str(CHECK), str(package)], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["block_n"] < result["headdim"]  # the column blocks the D gradient must be summed over
    return float(result["error"])


@pytest.mark.parametrize("version", ["2.2.4", "2.2.5", "2.3.2.post1"])
def test_mamba2_d_gradient_sums_every_column_block(shared: Path, tmp_path: Path, version: str) -> None:
    sdist = shared / "sdists" / f"mamba_ssm-{version}.tar.gz"
    if not sdist.is_file():
        pytest.skip(f"{sdist} is missing")
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path)  # noqa: S202 (our own read-only fixtures)
    root = tmp_path / f"mamba_ssm-{version}"
    before = _d_grad_error(root / "mamba_ssm")
    plan = apply_to_tree(root, [p for p in RUNTIME_PATCHES if p.name == SSD_DD])
    if version.startswith("2.2."):
        assert before > 0.3  # upstream keeps one column block's partial sum: the gradient is wrong
        assert [c.path for c in plan.changes] == [SSD_COMBINED]
        assert _d_grad_error(root / "mamba_ssm") < 1e-5
    else:  # 2.3 sums atomically itself: nothing to patch, and right as it is
        assert before < 1e-5 and plan.changes == ()
