"""Stand-in for mamba-ssm's compiled `selective_scan_cuda` (fwd / bwd), same signatures and results.

fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus) -> [out, x] (+ [out_z] with z)
bwd(u, delta, A, B, C, D, z, delta_bias, dout, x, out, dz, delta_softplus, recompute_out_z)
    -> [du, ddelta, dA, dB, dC, dD, ddelta_bias] (+ [dz] with z) (+ [out_z] if recompute_out_z)
A caller-supplied dz is written in place and returned (mamba_inner_fn passes a view into dxz).
"""

from __future__ import annotations

from typing import List, Optional

import torch

from jetson_mamba.ops.standins import _scan
from jetson_mamba.ops.standins._buffers import fill

__jetson_mamba_standin__ = True


def fwd(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
        D: Optional[torch.Tensor], z: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor],
        delta_softplus: bool) -> List[torch.Tensor]:
    out, out_z, x = _scan.forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    if out.dtype is not delta.dtype:  # the kernel allocates out like delta (a no-op .to costs ~2 us)
        out = out.to(delta.dtype)
    return [out, x] if z is None else [out, x, out_z]


def bwd(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
        D: Optional[torch.Tensor], z: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor],
        dout: torch.Tensor, x: Optional[torch.Tensor], out: Optional[torch.Tensor], dz: Optional[torch.Tensor],
        delta_softplus: bool, recompute_out_z: bool) -> List[Optional[torch.Tensor]]:
    if z is not None and recompute_out_z and out is None:
        raise RuntimeError("recompute_out_z needs `out` from fwd")
    grads, out_z = _scan.backward_out_z(u, delta, A, B, C, D, z, delta_bias, dout, x, delta_softplus,
                                        out if z is not None and recompute_out_z else None,
                                        dz if z is not None else None)
    du, ddelta, dA, dB, dC, dD, ddelta_bias, dz_new = grads
    result: List[Optional[torch.Tensor]] = [du, ddelta, dA, dB, dC, dD, ddelta_bias]
    if z is not None:
        assert dz_new is not None
        if dz is not None:
            fill(dz, dz_new)
            dz_new = dz
        result.append(dz_new)
        if out_z is not None:
            result.append(out_z)
    return result
