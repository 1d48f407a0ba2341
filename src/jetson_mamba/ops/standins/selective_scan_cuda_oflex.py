"""Stand-in for VMamba's compiled `selective_scan_cuda_oflex` (used by Mamba-YOLO).

fwd(u, delta, A, B, C, D, delta_bias, delta_softplus, nrows, out_float) -> [out, x]
    out is float32 when out_float, else u's dtype; delta may have fewer rows than u
    (delta_dim dividing dim: channel d uses row d // (dim // delta_dim)), delta_bias likewise.
bwd(u, delta, A, B, C, D, delta_bias, dout, x, delta_softplus, nrows)
    -> [du, ddelta, dA, dB, dC, dD, ddelta_bias]; dout may be float32; ddelta/ddelta_bias
    come back in delta's own (delta_dim) shape.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch

from jetson_mamba.ops.standins import _scan

__jetson_mamba_standin__ = True


def _expand_delta(u: torch.Tensor, delta: torch.Tensor, delta_bias: Optional[torch.Tensor]
                  ) -> Tuple[torch.Tensor, Optional[torch.Tensor], int]:
    dim, delta_dim = u.shape[1], delta.shape[1]
    if dim % delta_dim:
        raise RuntimeError(f"dims should be dividable by delta_dim ({dim} vs {delta_dim})")
    repeat = dim // delta_dim
    if repeat == 1:
        return delta, delta_bias, 1
    bias = None if delta_bias is None else delta_bias.repeat_interleave(repeat)
    return delta.repeat_interleave(repeat, dim=1), bias, repeat


def fwd(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
        D: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor], delta_softplus: bool,
        nrows: int = 1, out_float: bool = False) -> List[torch.Tensor]:
    delta, delta_bias, _ = _expand_delta(u, delta, delta_bias)
    if out_float:  # the kernel writes its fp32 accumulator without rounding to u's dtype
        u, delta, B, C = u.float(), delta.float(), B.float(), C.float()
    out, _, x = _scan.forward(u, delta, A, B, C, D, None, delta_bias, delta_softplus)
    return [out, x]


def bwd(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
        D: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor], dout: torch.Tensor,
        x: Optional[torch.Tensor], delta_softplus: bool, nrows: int = 1) -> List[Optional[torch.Tensor]]:
    batch, delta_dim, L = delta.shape
    wide, wide_bias, repeat = _expand_delta(u, delta, delta_bias)
    grads = _scan.backward(u, wide, A, B, C, D, None, wide_bias, dout, x, delta_softplus)[:7]
    if repeat > 1:
        grads[1] = grads[1].view(batch, delta_dim, repeat, L).sum(2)
        if grads[6] is not None:
            grads[6] = grads[6].view(delta_dim, repeat).sum(1)
    return grads
