"""What each runtime patch fixes, on real upstream code in sub-venvs, on the CPU with the portable kernels.

Patches are added one at a time, so each check first shows the upstream failure the next patch
removes; then everything is reverted byte-for-byte.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Callable, Dict, Sequence

import pytest

from jetson_mamba.compat import registry
from jetson_mamba.compat.installed import runtime_plan
from jetson_mamba.compat.runtime_patches import (
    CAUSAL_CONV1D_BRIDGE,
    FIXED_B_STATE,
    NO_DISTRIBUTED,
    PORTABLE,
    RUNTIME_PATCHES,
    TRANSFORMERS5,
)

CHECKS = Path(__file__).with_name("mamba_checks.py")
FP32 = 1e-4  # portable kernels in fp32 against upstream's references / unfused paths

pytest.importorskip("jetson_mamba.ops.standins.selective_scan_cuda", reason="portable stand-ins not available")


def _patch(python: Path, names: Sequence[str]) -> registry.PatchPlan:
    _, plan = runtime_plan(str(python), [p for p in RUNTIME_PATCHES if p.name in names])
    registry.apply_plan(plan)
    return plan


def _run(python: Path, *checks: str, path: Sequence[Path] = ()) -> Dict[str, Any]:
    """The checks' results; `path` goes first on PYTHONPATH (shadowing packages, e.g. a missing triton)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in path)} if path else None
    done = subprocess.run([str(python), str(CHECKS), *checks], capture_output=True, text=True, check=False,
                          timeout=900, env=env)
    assert done.returncode == 0 and done.stdout.strip(), done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _assert_ok(result: Dict[str, Any], tolerance: float = FP32) -> None:
    assert result["ok"], result
    for name, value in result.get("errors", {}).items():
        assert value < tolerance, (name, value, result)


def _site(python: Path) -> Path:
    return next(python.parent.parent.glob("lib/python*/site-packages"))


def _compiled_conv1d(site: Path, standin: str) -> None:
    """Stand in for an installed compiled `causal_conv1d_cuda` (exact signatures of that API style)."""
    (site / "causal_conv1d_cuda.py").write_text(f"from jetson_mamba.ops.standins.{standin} import *  # noqa\n")


def _files(site: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(site)): p.read_bytes() for p in site.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


@pytest.mark.slow
def test_each_patch_fixes_its_failure_on_the_pinned_pair(pair_venv: Callable[..., Path]) -> None:
    """mamba-ssm 2.2.4 + causal-conv1d 1.6.0 with its output-buffer compiled API, transformers 5."""
    python = pair_venv("2.2.4", "1.6.0", "behaviour")
    site = _site(python)
    _compiled_conv1d(site, "causal_conv1d_cuda")
    upstream = _files(site)

    _patch(python, [PORTABLE])
    result = _run(python, "import")["import"]
    assert not result["ok"] and "GreedySearchDecoderOnlyOutput" in result["error"]

    _patch(python, [PORTABLE, TRANSFORMERS5])
    result = _run(python, "import", "fused")
    assert result["import"]["ok"], result
    fused = result["fused"]  # the compiled API mismatch, as on the GPU
    assert not fused["ok"] and fused["error"].startswith("TypeError: causal_conv1d_fwd()"), fused
    result = _run(python, "--no-distributed", "import")["import"]
    assert not result["ok"] and "_all_gather_base" in result["error"], result
    result = _run(python, "--no-process-group", "distributed")["distributed"]
    assert not result["ok"] and "ProcessGroup" in result["error"], result

    _patch(python, [PORTABLE, TRANSFORMERS5, NO_DISTRIBUTED])
    result = _run(python, "--no-distributed", "import", "distributed")
    assert result["import"]["ok"], result
    messages = result["distributed"]["messages"]
    assert result["distributed"]["introspection"] == {"dunder": False, "unknown": "default"}, result
    assert messages.pop("ProcessGroup()") is None  # torch's own stub class there, not ours
    messages.update({f"old torch: {k}": v for k, v in
                     _run(python, "--no-process-group", "distributed")["distributed"]["messages"].items()})
    assert len(messages) == 7, messages
    assert all(m and "this PyTorch build" in m and "torch.distributed." in m for m in messages.values()), messages

    plan = _patch(python, [PORTABLE, TRANSFORMERS5, NO_DISTRIBUTED, CAUSAL_CONV1D_BRIDGE])
    assert {c.path for c in plan.changes} == {"mamba_ssm/ops/selective_scan_interface.py",
                                              "mamba_ssm/ops/triton/ssd_combined.py"}
    result = _run(python, "fused", "inner", "modules", "generate", "bridge")
    assert result["fused"]["ok"], result["fused"]
    _assert_ok(result["inner"])
    _assert_ok(result["modules"])
    for layer in ("Mamba1", "Mamba2"):  # transformers 5: generate() returns its output type
        assert result["generate"][layer] == {"type": "GenerateDecoderOnlyOutput", "shape": [2, 12],
                                             "greedy_matches_forward": True}, result["generate"]
    assert set(result["bridge"]["modules"].values()) == {"causal_conv1d.cpp_functions"}

    entries = registry.read_record(site)
    assert sorted(entries["mamba_ssm/ops/selective_scan_interface.py"]["patches"]) == sorted(
        [PORTABLE, CAUSAL_CONV1D_BRIDGE])
    # nothing new outside the patched packages but the record: no sitecustomize.py, no .pth import hook
    added = {Path(p).parts[0] for p in _files(site)} - {Path(p).parts[0] for p in upstream}
    assert added == {registry.RECORD_DIR}
    registry.revert(site)
    assert _files(site) == upstream


@pytest.mark.slow
def test_reverse_pairing_new_mamba_with_old_causal_conv1d(pair_venv: Callable[..., Path]) -> None:
    """mamba-ssm 2.2.5 imports causal_conv1d.cpp_functions, which causal-conv1d 1.4.0 lacks."""
    python = pair_venv("2.2.5", "1.4.0", "behaviour")
    _compiled_conv1d(_site(python), "causal_conv1d_cuda_legacy")
    _patch(python, [PORTABLE, TRANSFORMERS5])
    fused = _run(python, "fused")["fused"]
    assert not fused["ok"] and "causal_conv1d_cuda is not available" in fused["error"], fused

    _patch(python, [p.name for p in RUNTIME_PATCHES])
    result = _run(python, "fused", "inner", "bridge")
    assert result["fused"]["ok"], result
    _assert_ok(result["inner"])
    # the old compiled functions (here jetson-mamba's legacy stand-in) are called directly
    assert set(result["bridge"]["modules"].values()) == {"jetson_mamba.ops.standins.causal_conv1d_cuda_legacy"}
    registry.revert(_site(python))


@pytest.mark.slow
def test_latest_mamba_runs_on_the_cpu(pair_venv: Callable[..., Path], tmp_path: Path) -> None:
    """mamba-ssm 2.3.2.post1 + causal-conv1d 1.6.0, no compiled kernel at all: the stand-ins come in by the patch."""
    python = pair_venv("2.3.2.post1", "1.6.0", "behaviour")
    _patch(python, [p.name for p in RUNTIME_PATCHES])
    result = _run(python, "import", "fused", "inner", "modules", "generate", "varlen")
    assert result["import"]["ok"] and result["fused"]["ok"], result
    _assert_ok(result["inner"])
    _assert_ok(result["modules"])
    assert result["generate"]["Mamba2"]["greedy_matches_forward"], result["generate"]
    _assert_ok(result["varlen"])  # causal-conv1d's Triton varlen states, routed off the GPU

    # jetson-mamba uninstalled (here: shadowed by a package that cannot be imported): upstream's own error
    gone = tmp_path / "gone" / "jetson_mamba"
    gone.mkdir(parents=True)
    (gone / "__init__.py").write_text("raise ImportError('jetson-mamba is not installed')\n")
    done = subprocess.run([str(python), "-c", "import mamba_ssm"], capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(gone.parent)})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == "ModuleNotFoundError: No module named 'selective_scan_cuda'"
    registry.revert(_site(python))


KERNEL_LIKE_SCAN = Path(__file__).with_name("kernel_like_scan.py")


@pytest.mark.slow
def test_fixed_B_final_state_with_the_compiled_kernel(pair_venv: Callable[..., Path]) -> None:
    """Upstream's selective_scan_fn returns the compiled kernel's fixed-B state without B; the patch multiplies
    it back, and leaves jetson-mamba's stand-in (which stores the true state) alone."""
    python = pair_venv("2.3.2.post1", "1.6.0", "behaviour")
    site = _site(python)
    _patch(python, [p.name for p in RUNTIME_PATCHES if p.name != FIXED_B_STATE])
    kernel = site / "selective_scan_cuda.py"
    try:
        result = _run(python, "fixed_b_state")["fixed_b_state"]
        assert result["standin"], result
        _assert_ok(result)  # the stand-in: right without the patch
        kernel.write_text(KERNEL_LIKE_SCAN.read_text())
        result = _run(python, "fixed_b_state")["fixed_b_state"]
        assert not result["standin"] and result["errors"]["out"] < FP32, result
        assert result["errors"]["last_state"] > 0.1, result  # upstream's bug
        _patch(python, [p.name for p in RUNTIME_PATCHES])
        _assert_ok(_run(python, "fixed_b_state")["fixed_b_state"])
        kernel.unlink()
        _assert_ok(_run(python, "fixed_b_state")["fixed_b_state"])  # the stand-in again, not multiplied twice
    finally:
        kernel.unlink(missing_ok=True)
        registry.revert(site)
