"""VMamba's compiled `selective_scan_cuda_core` for SS2D's cross scan, when the real one is installed.

It is the kernel the original Mamba-YOLO calls (grouped B/C (batch, K, N, L), no z), so when it is
importable, the tensors are on CUDA and no backend is chosen (`use_backend`, JETSON_MAMBA_BACKEND), SS2D uses
it; otherwise the scan goes through `jetson_mamba.ops.selective_scan_fn` (compiled mamba kernel,
Triton or torch). jetson-mamba's own stand-in under that name is never used here.
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any, Optional, Tuple

import torch

from jetson_mamba.ops._compiled import load_extension, why_unavailable
from jetson_mamba.ops.backend import requested_backend

EXTENSION = "selective_scan_cuda_core"
logger = logging.getLogger("jetson_mamba.ops")
_logged = []


def usable_core(device: torch.device, dtype: torch.dtype) -> Optional[ModuleType]:
    """The real extension when it can run tensors of device/dtype and dispatch is automatic, else None."""
    if requested_backend() is not None or why_unavailable(EXTENSION, "VMamba", device, dtype) is not None:
        return None
    if not _logged:
        logger.info("selective_scan (Mamba-YOLO SS2D): using VMamba's compiled %s", EXTENSION)
        _logged.append(True)
    return load_extension(EXTENSION)


class CoreSelectiveScan(torch.autograd.Function):
    """Forward and backward through the extension's fwd/bwd (its chunk states x kept for backward)."""

    @staticmethod
    def forward(ctx: Any, core: ModuleType, u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor,
                B: torch.Tensor, C: torch.Tensor, D: torch.Tensor, delta_bias: torch.Tensor,
                delta_softplus: bool) -> torch.Tensor:
        out, x, *_ = core.fwd(u, delta, A, B, C, D, delta_bias, delta_softplus, 1)
        ctx.core, ctx.delta_softplus = core, delta_softplus
        ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, x)
        return out

    @staticmethod
    def backward(ctx: Any, dout: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        u, delta, A, B, C, D, delta_bias, x = ctx.saved_tensors
        du, ddelta, dA, dB, dC, dD, ddelta_bias, *_ = ctx.core.bwd(
            u, delta, A, B, C, D, delta_bias, dout.contiguous(), x, ctx.delta_softplus, 1)
        return None, du, ddelta, dA, dB, dC, dD, ddelta_bias, None
