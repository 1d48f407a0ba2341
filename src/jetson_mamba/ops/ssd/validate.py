"""Input checks for the SSD ops: upstream asserts, turned into errors that say what to pass instead."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Union

from jetson_mamba.errors import UsageError

if TYPE_CHECKING:
    import torch


class SSDInputError(UsageError, ValueError):
    """Tensors of the wrong shape or kind passed to an SSD op (also a ValueError for library callers)."""


Text = Union[str, Callable[[], str]]


def check(condition: bool, message: Text, fix: Text) -> None:
    """Raise SSDInputError(message, fix) unless condition holds.

    A message that shows shapes is a callable, formatted only on failure: formatting a shape while
    torch.compile traces specializes it (a graph per seqlen), and eagerly it is host time per call."""
    if not condition:
        raise SSDInputError(*(t() if callable(t) else t for t in (message, fix)))


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 accumulation for fp16/bf16/fp32 inputs; fp64 inputs stay fp64 (for exact checks)."""
    import torch

    return torch.float64 if dtype == torch.float64 else torch.float32
