"""What the causal-conv1d stand-ins share: dispatch to the causal_conv1d backend."""

from __future__ import annotations

from typing import Any

import torch

from jetson_mamba.ops import _library
from jetson_mamba.ops.backend import select_backend


def backend_for(x: torch.Tensor) -> Any:
    """The dispatched backend module; under torch.compile / torch.export the custom ops (opaque to the
    tracer, which cannot follow the dispatch)."""
    if _library.tracing():
        return _library.OpsConvBackend
    return select_backend("causal_conv1d", x.device, x.dtype).module
