"""Dtype rules shared by the portable (torch) backends."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    import torch

PORTABLE_DTYPES = ("float32", "float16", "bfloat16", "float64")


def portable_reason(dtype: torch.dtype) -> Optional[str]:
    """None for the float dtypes the torch backends take, else why not."""
    name = str(dtype).replace("torch.", "")
    if name in PORTABLE_DTYPES:
        return None
    return f"dtype {name} is not supported (use one of {', '.join(PORTABLE_DTYPES)})"


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulate in float32 (fp16/bf16/fp32 inputs), or float64 for float64 inputs."""
    import torch

    return torch.float64 if dtype == torch.float64 else torch.float32
