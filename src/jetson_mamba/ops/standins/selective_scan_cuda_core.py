"""Stand-in for VMamba's compiled `selective_scan_cuda_core` (used by Mamba-YOLO).

fwd(u, delta, A, B, C, D, delta_bias, delta_softplus, nrows) -> [out, x]
bwd(u, delta, A, B, C, D, delta_bias, dout, x, delta_softplus, nrows)
    -> [du, ddelta, dA, dB, dC, dD, ddelta_bias]
B, C: (batch, K, dstate, L) (or (batch, dstate, L)); `nrows` is a launch-tuning knob, unused here.
"""

from __future__ import annotations

from typing import List, Optional

import torch

from jetson_mamba.ops.standins import _scan

__jetson_mamba_standin__ = True


def fwd(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
        D: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor], delta_softplus: bool,
        nrows: int = 1) -> List[torch.Tensor]:
    out, _, x = _scan.forward(u, delta, A, B, C, D, None, delta_bias, delta_softplus)
    return [out, x]


def bwd(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
        D: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor], dout: torch.Tensor,
        x: Optional[torch.Tensor], delta_softplus: bool, nrows: int = 1) -> List[Optional[torch.Tensor]]:
    return _scan.backward(u, delta, A, B, C, D, None, delta_bias, dout, x, delta_softplus)[:7]
