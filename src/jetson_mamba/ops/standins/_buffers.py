"""Caller's output buffers for the stand-ins: a backend that writes into them directly saves a copy."""

from __future__ import annotations

from types import ModuleType
from typing import Any, Dict, Optional, Tuple

import torch

from jetson_mamba.ops import _library


def buffers(backend: ModuleType, inputs: Tuple[Optional[torch.Tensor], ...],
            **named: Optional[torch.Tensor]) -> Dict[str, Any]:
    """The caller's output buffers as keyword arguments, for a backend that writes into them
    (WRITES_INTO_BUFFERS, see ops.backend); none for one that returns new tensors, nor where a buffer
    shares memory with an input (written in place, the kernel's programs would read each other's outputs).
    None, as a buffer or an input, is no tensor: left out."""
    if not getattr(backend, "WRITES_INTO_BUFFERS", False):
        return {}
    # each tensor's storage asked once (a storage object per ask: ~0.5 us each, on every kernel call); a
    # buffer in none of the inputs' storages (the usual case) is taken without a look at the spans
    given = {t.untyped_storage().data_ptr() for t in inputs if t is not None}
    into = {}
    for k, v in named.items():
        if v is not None:
            base = v.untyped_storage().data_ptr()
            if base not in given or not any(_overlap(v, t) for t in inputs if t is not None):
                into[k] = v
    return into


def _overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two tensors' memory spans (first to last element) intersect."""
    if a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr():
        return False

    def span(t: torch.Tensor) -> Tuple[int, int]:
        start = t.storage_offset() * t.element_size()
        extent = sum((n - 1) * st for n, st in zip(t.shape, t.stride())) if t.numel() else -1
        return start, start + (extent + 1) * t.element_size()

    (a0, a1), (b0, b1) = span(a), span(b)
    return a0 < b1 and b0 < a1


def fill(buffer: torch.Tensor, result: torch.Tensor) -> None:
    """buffer <- result, unless the backend already wrote result into buffer (never while tracing: the
    custom ops return new tensors, whose addresses a tracer does not have)."""
    if result is buffer:  # the backend wrote into it and returned it (eager; the custom ops return new tensors)
        return
    if _library.tracing() or result.data_ptr() != buffer.data_ptr() or result.stride() != buffer.stride():
        buffer.copy_(result)
