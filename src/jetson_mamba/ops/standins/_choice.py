"""The backend choice of a stand-in's forward, for its backward.

Upstream's autograd.Functions (not ours) call the stand-ins, so there is no autograd context of ours to
save the choice in, and their backward runs later: on CUDA tensors in a thread of autograd's own, outside
the caller's `use_backend`. The forward's choice therefore goes with a tensor that the backward is handed
again (the scan's chunk states x, which the forward makes; the conv's input x), weakly: it goes when that
tensor goes. Where upstream hands the backward a new tensor (mamba_inner_fn re-splits its conv input), the
backward follows the choice of the thread it runs on.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch
from torch.utils.weak import WeakIdKeyDictionary

from jetson_mamba.ops import _library
from jetson_mamba.ops.backend import choice_in_effect, use_backend

_saved: WeakIdKeyDictionary = WeakIdKeyDictionary()  # tensor -> the choice of the forward that saw it


def remember(tensor: torch.Tensor) -> None:
    """Keep the choice in effect now with `tensor` (not while tracing: the custom ops carry it there)."""
    if not _library.tracing():
        _saved[tensor] = choice_in_effect()


@contextlib.contextmanager
def recalled(tensor: Optional[torch.Tensor]) -> Iterator[None]:
    """Run the enclosed dispatch under the choice remembered with `tensor` (else the current one)."""
    with use_backend(_saved.get(tensor) if tensor is not None else None):
        yield
