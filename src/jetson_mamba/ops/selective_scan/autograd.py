"""selective_scan_fn: mamba_ssm's signature, as an autograd.Function on the dispatched backend (eager) or
the custom op `jetson_mamba::selective_scan_fwd` (under torch.compile / torch.export, see `ops._library`)."""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch

from jetson_mamba.ops import _library
from jetson_mamba.ops.backend import choice_in_effect, select_backend, use_backend


def _last_dim_contiguous(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return t if t is None or t.stride(-1) == 1 else t.contiguous()


class SelectiveScanFn(torch.autograd.Function):
    """Selective scan on the dispatched backend; the backward calls the same backend, under the forward's
    choice (autograd may run it later, on a thread of its own)."""

    @staticmethod
    def forward(ctx: Any, u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                C: torch.Tensor, D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
                delta_bias: Optional[torch.Tensor] = None, delta_softplus: bool = False,
                return_last_state: bool = False) -> Any:
        u, delta, B, C, z = (_last_dim_contiguous(t) for t in (u, delta, B, C, z))
        _, backend = select_backend("selective_scan", u.device, u.dtype)
        out, out_z, last_state = backend.selective_scan_forward(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus)
        ctx.backend = backend
        ctx.choice = choice_in_effect()
        ctx.delta_softplus = delta_softplus
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias)
        result = out if z is None else out_z
        if not return_last_state:
            return result
        ctx.mark_non_differentiable(last_state)
        return result, last_state

    @staticmethod
    def backward(ctx: Any, dout: torch.Tensor, *unused: Any) -> Tuple[Optional[torch.Tensor], ...]:
        u, delta, A, B, C, D, z, delta_bias = ctx.saved_tensors
        with use_backend(ctx.choice):
            du, ddelta, dA, dB, dC, dD, ddelta_bias, dz = ctx.backend.selective_scan_backward(
                u, delta, A, B, C, D, z, delta_bias, ctx.delta_softplus, _last_dim_contiguous(dout))
        return (du, ddelta, dA, dB, dC, dD if D is not None else None, dz,
                ddelta_bias if delta_bias is not None else None, None, None)


def selective_scan_fn(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                      D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
                      delta_bias: Optional[torch.Tensor] = None, delta_softplus: bool = False,
                      return_last_state: bool = False) -> Any:
    """mamba_ssm's selective_scan_fn: out (batch, dim, L), plus last_state (batch, dim, dstate) on request.

    u, delta, z: (batch, dim, L); A: (dim, dstate); B, C: (dim, dstate), (batch, dstate, L) or
    (batch, G, dstate, L); D, delta_bias: (dim,). The last state gets no gradient (as upstream).
    """
    if _library.tracing():
        u, delta, B, C, z = (_last_dim_contiguous(t) for t in (u, delta, B, C, z))
        out, last_state = torch.ops.jetson_mamba.selective_scan_fwd(
            u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus), choice_in_effect())
        return (out, last_state.detach()) if return_last_state else out
    return SelectiveScanFn.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
