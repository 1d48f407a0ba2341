"""Fixtures for the kernel tests: NaN-poisoned allocations, float64 comparison, clean dispatch."""

from __future__ import annotations

from typing import Callable, Iterator, Optional

import pytest
import torch

from jetson_mamba.ops import backend

# Largest error allowed, relative to the reference's largest magnitude, per computed dtype.
TOLERANCE = {torch.float64: 1e-9, torch.float32: 2e-4, torch.float16: 4e-3, torch.bfloat16: 3e-2}


@pytest.fixture
def clean_dispatch(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Built-in backends and automatic choice (not autouse: the Triton suites force a backend)."""
    monkeypatch.delenv(backend.ENV_VAR, raising=False)
    backend.reset_backends()
    yield
    backend.reset_backends()


@pytest.fixture
def nan_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.empty / empty_like / new_empty return NaN-filled float tensors, so any output
    element a kernel forgets to write shows up as NaN instead of passing by luck."""
    real_empty, real_like, real_new = torch.empty, torch.empty_like, torch.Tensor.new_empty

    def poison(t: torch.Tensor) -> torch.Tensor:
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: poison(real_empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: poison(real_like(*a, **k)))
    monkeypatch.setattr(torch.Tensor, "new_empty", lambda self, *a, **k: poison(real_new(self, *a, **k)))


@pytest.fixture
def close() -> Callable[..., None]:
    """close(actual, expected, dtype, name): no NaN, error within TOLERANCE[dtype] of max|expected|."""

    def check(actual: Optional[torch.Tensor], expected: Optional[torch.Tensor], dtype: torch.dtype,
              name: str = "") -> None:
        if expected is None:
            assert actual is None, f"{name}: expected None, got a tensor"
            return
        assert actual is not None, f"{name}: got None"
        assert tuple(actual.shape) == tuple(expected.shape), f"{name}: shape {actual.shape} != {expected.shape}"
        assert not torch.isnan(actual).any(), f"{name}: NaN in result"
        a, e = actual.double(), expected.double()
        scale = e.abs().max().item() + 1e-12
        err = (a - e).abs().max().item() / scale
        assert err <= TOLERANCE[dtype], f"{name}: relative error {err:.3g} > {TOLERANCE[dtype]:.1g} ({dtype})"

    return check
