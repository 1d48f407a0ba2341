"""What the causal-conv1d stand-ins share: dispatch to the causal_conv1d backend, the backward under its
forward's choice (`_choice`)."""

from __future__ import annotations

from typing import Any, ContextManager, Optional

import torch

from jetson_mamba.ops import _library
from jetson_mamba.ops.backend import select_backend
from jetson_mamba.ops.standins._choice import recalled, remember


class backend_for:
    """`with backend_for(x, weight) as backend:` the dispatched backend module, to call inside; under
    torch.compile / torch.export the custom ops (opaque to the tracer, which cannot follow the dispatch). A
    `forward` keeps the choice in effect with its input x and weight; a `backward` with either runs under that
    choice, and so does a forward that upstream reruns in its backward (no use_backend of its own thread).
    A class, not a generator: every conv call of upstream's enters one."""

    __slots__ = ("_x", "_weight", "_forward", "_recall", "_using")

    def __init__(self, x: torch.Tensor, weight: torch.Tensor, forward: bool = False, backward: bool = False) -> None:
        self._x, self._weight, self._forward, self._recall = x, weight, forward, forward or backward
        self._using: Optional[ContextManager[None]] = None

    def __enter__(self) -> Any:
        if _library.tracing():  # nothing else here is traceable (the choice lives on tensor objects)
            return _library.OpsConvBackend
        if self._recall:
            self._using = recalled(self._x, self._weight, unless_chosen_here=self._forward)
            self._using.__enter__()
        if self._forward:
            remember(self._x, self._weight)
        return select_backend("causal_conv1d", self._x.device, self._x.dtype).module

    def __exit__(self, *exc: object) -> None:
        if self._using is not None:
            self._using.__exit__(*exc)
