"""Runs the Triton kernel suites on CPU tensors under TRITON_INTERPRET=1, plus their shared helpers
(their fixtures are in conftest.py).

Triton fixes interpreted-vs-compiled when it is imported, and other tests in this process may
already have imported it, so the suites (test_triton_selective_scan.py, test_triton_causal_conv1d.py)
run in a fresh pytest subprocess with TRITON_INTERPRET=1 and JETSON_MAMBA_BACKEND=triton: the
public jetson_mamba.ops functions then run the Triton kernels. On a GPU they run in-process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple, Tuple

import pytest
import torch

from interpreted import pytest_interpreted

HERE = Path(__file__).resolve().parent
SUITES = ["test_triton_selective_scan.py", "test_triton_causal_conv1d.py"]
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
GPU = torch.cuda.is_available() and not INTERPRET
DEVICE = "cuda" if GPU else "cpu"

# Skip marker for the suites: they need a GPU or the interpreter subprocess below.
needs_triton = pytest.mark.skipif(
    not (INTERPRET or GPU), reason="on CPU these run under TRITON_INTERPRET=1 (test_triton_interpreted.py)")


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rel: float, what: str, atol: float = 0.0) -> None:
    """Max abs error within rel * (largest reference value) + atol; NaN/inf anywhere fails."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(actual).all(), f"{what}: non-finite values (an element was never written?)"
    err = (actual.double() - expected.double()).abs().max().item()
    scale = expected.double().abs().max().item() + 1e-6
    assert err <= rel * scale + atol, f"{what}: max error {err:.3g} > {rel} * {scale:.3g} + {atol:.1g}"


class Launch(NamedTuple):
    """One Triton launch through triton_utils.launch_tuned: the autotuned kernel, its positional arguments."""

    kernel: object
    args: Tuple[object, ...]


@pytest.mark.skipif(INTERPRET, reason="this is the outer runner")
def test_triton_suites_under_the_interpreter() -> None:
    out = pytest_interpreted("-m", "not gpu", *[str(HERE / s) for s in SUITES], cwd=HERE)
    assert " passed" in out and "skipped" not in out.splitlines()[-1], out[-2000:]


def test_cpu_needs_the_interpreter() -> None:
    """Compiled Triton cannot take CPU tensors: is_available says so and how to fix it."""
    from jetson_mamba.ops import triton_utils

    reason = triton_utils.is_available(torch.device("cpu"), torch.float32)
    if INTERPRET:
        assert reason is None
    else:
        assert reason is not None and "TRITON_INTERPRET=1" in reason
    assert "float32" in str(triton_utils.is_available(torch.device("cpu"), torch.float64))
