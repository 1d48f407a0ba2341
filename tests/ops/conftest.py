"""Fixtures for the kernel tests: NaN-poisoned allocations, float64 comparison, clean dispatch; for the
Triton suites, launch and atomic spies and deterministic mode."""

from __future__ import annotations

import os
from typing import Callable, Iterator, List, Optional, Tuple

import pytest
import torch
from test_triton_interpreted import Launch

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


def _poisoned(make: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def wrapped(*args: object, **kwargs: object) -> torch.Tensor:
        t = make(*args, **kwargs)
        if t.is_floating_point():
            t.fill_(float("nan"))
        return t

    return wrapped


@pytest.fixture
def nan_poison(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every uninitialised float buffer starts as NaN, so an output element a kernel skips shows up."""
    for name in ("empty", "empty_like", "empty_strided"):
        monkeypatch.setattr(torch, name, _poisoned(getattr(torch, name)))
    yield


@pytest.fixture
def launches(monkeypatch: pytest.MonkeyPatch) -> List[Launch]:
    """Every Triton launch (triton_utils.launch_tuned), in order: to check which kernel a layout takes,
    and that a tensor reaches the kernel itself, not a copy."""
    from jetson_mamba.ops import triton_utils as tu

    seen: List[Launch] = []
    launch = tu.launch_tuned

    def spy(kernel: object, key: Tuple[object, ...], grid: object, *args: object, **kwargs: object) -> None:
        seen.append(Launch(kernel, args))
        launch(kernel, key, grid, *args, **kwargs)

    monkeypatch.setattr(tu, "launch_tuned", spy)
    return seen


@pytest.fixture
def atomics(monkeypatch: pytest.MonkeyPatch) -> List[int]:
    """The atomic read-modify-writes the Triton interpreter executes (one entry each): deterministic mode
    must take none (the interpreter runs programs one by one, so its atomics are reproducible anyway)."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("counts the interpreter's atomics")
    from triton.runtime.interpreter import InterpreterBuilder

    seen: List[int] = []
    real = InterpreterBuilder.create_atomic_rmw

    def spy(self: object, *args: object, **kwargs: object) -> object:
        seen.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(InterpreterBuilder, "create_atomic_rmw", spy)
    return seen


@pytest.fixture
def deterministic() -> Iterator[None]:
    """torch.use_deterministic_algorithms(True) for the test, restored after."""
    old = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(old)
