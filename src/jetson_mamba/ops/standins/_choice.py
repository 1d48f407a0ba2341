"""The backend choice of a stand-in's forward, for its backward.

Upstream's autograd.Functions (not ours) call the stand-ins, so there is no autograd context of ours to
save the choice in, and their backward runs later: on CUDA tensors in a thread of autograd's own, outside
the caller's `use_backend`. The forward's choice therefore goes with a tensor that the backward is handed
again (the scan's chunk states x, which the forward makes; the conv's input x and its weight), as an attribute
of that tensor object: it goes when the tensor goes (a torch.utils.weak.WeakIdKeyDictionary did the same at ~10 us
a conv call, here ~1 us). mamba_inner_fn hands its conv backward a new view of the input (it splits xz
again) but the weight view its forward saved, and may rerun the conv forward inside its backward
(checkpoint_lvl=1): such a forward, without a use_backend of its own thread, takes the remembered choice too.
"""

from __future__ import annotations

from typing import ContextManager, Optional, Tuple

import torch

from jetson_mamba.ops import _library
from jetson_mamba.ops.backend import choice_in_effect, chosen_here, use_backend

_ATTRIBUTE = "_jetson_mamba_backend"  # on a tensor: the choice of the forward that saw it


def remember(*tensors: Optional[torch.Tensor]) -> None:
    """Keep the choice in effect now with each tensor (not while tracing: the custom ops carry it there)."""
    if not _library.tracing():
        choice = choice_in_effect()
        for tensor in tensors:
            if tensor is not None:
                tensor.__dict__[_ATTRIBUTE] = choice


def _remembered(tensors: Tuple[Optional[torch.Tensor], ...]) -> Optional[str]:
    for tensor in tensors:
        choice = tensor.__dict__.get(_ATTRIBUTE) if tensor is not None else None
        if choice is not None:
            return choice
    return None


def recalled(*tensors: Optional[torch.Tensor], unless_chosen_here: bool = False) -> ContextManager[None]:
    """A context that runs the enclosed dispatch under the choice remembered with the first of `tensors` that
    has one (else the current one). `unless_chosen_here` (a forward): a use_backend of this thread wins over it.
    use_backend's own context, not a generator around it: every stand-in call enters one (~1 us, not ~4)."""
    return use_backend(None if unless_chosen_here and chosen_here() else _remembered(tensors))
