"""The judging pieces: relative error, tolerances, NaN poisoning."""

from __future__ import annotations

import math

import pytest
import torch

from jetson_mamba.verify.compare import nan_poisoned_memory, relative_error, tolerance


def test_relative_error_is_scale_free_and_catches_nan_and_shape() -> None:
    ref = torch.randn(4, 5, dtype=torch.float64)
    assert relative_error(ref.float(), ref) < 1e-7
    assert relative_error(1000 * ref * 1.01, 1000 * ref) == pytest.approx(0.01, rel=1e-6)
    broken = ref.clone()
    broken[1, 2] = float("nan")
    assert relative_error(broken, ref) == math.inf
    assert relative_error(ref[:, :4], ref) == math.inf


def test_tolerances_grow_with_rounding() -> None:
    assert tolerance(torch.float32, False) < tolerance(torch.float16, False) < tolerance(torch.bfloat16, False)
    assert tolerance(torch.float32, True) > tolerance(torch.float32, False)
    assert tolerance(torch.float32, False, block=True) > tolerance(torch.float32, False)


def test_nan_poisoning_fills_empty_and_restores_settings() -> None:
    before = (torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory)
    with nan_poisoned_memory():
        assert bool(torch.empty(64).isnan().all())
        assert bool(torch.empty_like(torch.ones(3, 3, dtype=torch.bfloat16)).isnan().all())
    assert (torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory) == before
