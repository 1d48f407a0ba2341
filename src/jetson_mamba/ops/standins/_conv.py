"""What the causal-conv1d stand-ins share: dispatch to the causal_conv1d backend."""

from __future__ import annotations

from types import ModuleType

import torch

from jetson_mamba.ops.backend import select_backend


def backend_for(x: torch.Tensor) -> ModuleType:
    return select_backend("causal_conv1d", x.device, x.dtype)[1]
