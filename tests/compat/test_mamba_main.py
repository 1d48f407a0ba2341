"""mamba-ssm's main branch (../shared/upstream/mamba-main-*.tar.gz, still calling itself 2.3.2.post1) on the CPU.

Upstream made the compiled selective scan opt-in there (`selective_scan_cuda = None` and a
`_check_selective_scan_cuda()` on every Mamba-1 path) and added Mamba-3, whose TileLang / CuTe-DSL
kernels it imports at import time behind `except ImportError`. Each failure is shown on the real
tree first, then `patch` fixes it, then everything is reverted byte for byte.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Callable, Dict

import pytest
from test_runtime_behaviour import _assert_ok, _files, _patch, _run, _site

from jetson_mamba.compat import registry
from jetson_mamba.compat.installed import runtime_plan
from jetson_mamba.compat.runtime_patches import (
    MAMBA3_LAZY,
    NO_TRITON,
    PORTABLE,
    RUNTIME_PATCHES,
    TRITON_MODULES,
)
from jetson_mamba.probe.python_env import probe_python

pytestmark = pytest.mark.slow


def _shadow(root: Path, package: str, error: str) -> Path:
    """A folder that, first on PYTHONPATH, makes `import <package>` raise `error` (a Python expression)."""
    (root / package).mkdir(parents=True)
    (root / package / "__init__.py").write_text(f"raise {error}\n")
    return root


@pytest.fixture(scope="module")
def main_venv(venv_factory: Callable[..., Path], mamba_main_wheel: Path,
              upstream_wheels: Dict[tuple, Path]) -> Path:
    if ("causal_conv1d", "1.7.0") not in upstream_wheels:
        pytest.skip("no causal-conv1d 1.7.0 sdist in ../shared/sdists")
    python = venv_factory("mamba-main-conv-1.7.0")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(mamba_main_wheel),
                    str(upstream_wheels["causal_conv1d", "1.7.0"])], check=True)
    return python


def test_mamba1_mamba2_and_lazy_mamba3_on_main(main_venv: Path, tmp_path: Path) -> None:
    python, site = main_venv, _site(main_venv)
    upstream = _files(site)
    no_triton = _shadow(tmp_path / "no-triton", "triton", "ModuleNotFoundError(\"No module named 'triton'\", name='triton')")
    # apache-tvm-ffi 0.1.12 under tilelang 0.1.8: an AttributeError escapes upstream's `except ImportError`
    tvm_crash = _shadow(tmp_path / "tvm-crash", "tilelang",
                        "AttributeError(\"module 'tvm_ffi' has no attribute 'register_global_func'\")")

    # upstream as a new user gets it: Mamba-1 refuses, no triton or a crashing tilelang breaks the import
    result = _run(python, "import", "modules")
    assert result["import"]["ok"], result
    assert result["modules"]["error"].startswith("RuntimeError: selective_scan_cuda is not installed"), result
    assert "No module named 'triton'" in _run(python, "import", path=[no_triton])["import"]["error"]
    assert _run(python, "import", path=[tvm_crash])["import"]["error"].startswith("AttributeError: module 'tvm_ffi'")

    plan = _patch(python, [p.name for p in RUNTIME_PATCHES])
    changed = {c.path for c in plan.changes}
    assert {"mamba_ssm/ops/selective_scan_interface.py", "mamba_ssm/modules/mamba3.py"} <= changed
    assert set(TRITON_MODULES) <= changed
    result = _run(python, "import", "fused", "inner", "modules", "generate", "fixed_b_state")
    assert all(r["ok"] for r in result.values()), result
    _assert_ok(result["inner"])
    _assert_ok(result["modules"])  # Mamba and Mamba2: forward, backward, step() against forward
    _assert_ok(result["fixed_b_state"])
    assert result["fixed_b_state"]["standin"], result
    for layer in ("Mamba1", "Mamba2"):
        assert result["generate"][layer]["greedy_matches_forward"], result["generate"]

    # without triton: everything imports, and the routed entry points run the portable kernels
    result = _run(python, "import", "modules", "generate", "varlen", path=[no_triton])
    assert all(r["ok"] for r in result.values()), result
    _assert_ok(result["modules"])
    _assert_ok(result["varlen"])  # Mamba2 imports causal-conv1d's Triton varlen module: guarded and routed

    # Mamba-3's kernels load on first use: a crashing dependency breaks only Mamba-3, with its cause
    result = _run(python, "import", "modules", "mamba3", path=[tvm_crash])
    assert result["import"]["ok"] and result["modules"]["ok"], result
    error = result["mamba3"]["mimo_error"]
    assert error.startswith("ImportError: Fails to import Mamba-3 MIMO kernels") and "AttributeError" in error, error

    # doctor's probe recognises Mamba-3 by its module and names each missing piece (none is installed here)
    _, probed, _ = probe_python(str(python))
    assert probed.mamba3 and set(probed.mamba3_imports) == {"tilelang", "tvm_ffi", "quack", "cutlass"}
    assert all(error for error in probed.mamba3_imports.values()), probed.mamba3_imports

    # patch again: nothing to do; then revert: the upstream bytes
    assert not _patch(python, [p.name for p in RUNTIME_PATCHES]).changes
    registry.revert(site)
    assert _files(site) == upstream


def test_the_new_patches_leave_released_versions_alone(pair_venv: Callable[..., Path]) -> None:
    """2.2.4 has no Mamba-3; its Triton modules still get the optional import; selective_scan_cuda keeps
    the old guard (a plain `import`)."""
    python = pair_venv("2.2.4", "1.6.0", "main-shapes")
    _, plan = runtime_plan(str(python), [p for p in RUNTIME_PATCHES if p.name in (PORTABLE, NO_TRITON, MAMBA3_LAZY)])
    statuses = {(s.patch, s.path): s.status for s in plan.statuses}
    assert statuses[MAMBA3_LAZY, "mamba_ssm/modules/mamba3.py"] == registry.MISSING
    assert statuses[NO_TRITON, "mamba_ssm/ops/triton/layer_norm.py"] == registry.NEEDED
    scan = next(c for c in plan.changes if c.path == "mamba_ssm/ops/selective_scan_interface.py").after.decode()
    assert "except ModuleNotFoundError as _jm_error" in scan
