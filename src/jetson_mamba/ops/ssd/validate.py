"""Input checks for the SSD ops: upstream asserts, turned into errors that say what to pass instead."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jetson_mamba.errors import UsageError

if TYPE_CHECKING:
    import torch


class SSDInputError(UsageError, ValueError):
    """Tensors of the wrong shape or kind passed to an SSD op (also a ValueError for library callers)."""


def check(condition: bool, message: str, fix: str) -> None:
    """Raise SSDInputError(message, fix) unless condition holds."""
    if not condition:
        raise SSDInputError(message, fix)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 accumulation for fp16/bf16/fp32 inputs; fp64 inputs stay fp64 (for exact checks)."""
    import torch

    return torch.float64 if dtype == torch.float64 else torch.float32
