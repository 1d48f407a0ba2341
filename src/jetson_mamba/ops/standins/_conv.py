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
def backend_for(x: torch.Tensor, forward: bool = False, backward: bool = False) -> Iterator[Any]:
    """The dispatched backend module, to call inside; under torch.compile / torch.export the custom ops
    (opaque to the tracer, which cannot follow the dispatch). A `forward` keeps the choice in effect with
    its input x; a `backward` on the same x runs under that choice."""
    if _library.tracing():
        yield _library.OpsConvBackend
        return
    if forward:
        remember(x)
    with recalled(x if backward else None):
        yield select_backend("causal_conv1d", x.device, x.dtype).module
