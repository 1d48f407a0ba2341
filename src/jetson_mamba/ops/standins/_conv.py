"""What the causal-conv1d stand-ins share: dispatch to the causal_conv1d backend, the backward under its
forward's choice (`_choice`)."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch

from jetson_mamba.ops import _library
from jetson_mamba.ops.backend import select_backend
from jetson_mamba.ops.standins._choice import recalled, remember


@contextlib.contextmanager
def backend_for(x: torch.Tensor, weight: torch.Tensor, forward: bool = False,
                backward: bool = False) -> Iterator[Any]:
    """The dispatched backend module, to call inside; under torch.compile / torch.export the custom ops
    (opaque to the tracer, which cannot follow the dispatch). A `forward` keeps the choice in effect with
    its input x and weight; a `backward` with either runs under that choice, and so does a forward that
    upstream reruns in its backward (no use_backend of its own thread)."""
    if _library.tracing():
        yield _library.OpsConvBackend
        return
    with recalled(x, weight, unless_chosen_here=forward) if forward or backward else contextlib.nullcontext():
        if forward:
            remember(x, weight)
        yield select_backend("causal_conv1d", x.device, x.dtype).module
