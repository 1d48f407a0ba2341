"""Mamba kernels with upstream signatures, on whichever backend can run them here.

`selective_scan_fn`, `causal_conv1d_fn` and `causal_conv1d_update` match mamba-ssm /
causal-conv1d; each call picks a backend (compiled cuda -> triton -> torch, see `backend`)
from the tensors' device and dtype. The Mamba2 pieces (`mamba_chunk_scan_combined`,
`mamba_split_conv1d_scan_combined`, `rmsnorm_fn`) live in `jetson_mamba.ops.ssd` and are
re-exported here lazily.

Under torch.compile / torch.export the scan and the conv are custom ops (`torch.ops.jetson_mamba.*`,
see `_library`) where torch has them (>= 2.4), so the tracer sees one opaque call each; eager calls,
and every call on older torch (or with JETSON_MAMBA_CUSTOM_OPS=0), take the autograd.Functions below
(a custom op's Python dispatch cost ~100 us of host time per call on this 2-core CPU, measured).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple, Union

import torch

from jetson_mamba.ops import _library
from jetson_mamba.ops.backend import (
    BackendInfo,
    list_backends,
    register_backend,
    select_backend,
    unregister_backend,
)

__all__ = [
    "BackendInfo", "list_backends", "register_backend", "select_backend", "unregister_backend",
    "selective_scan_fn", "causal_conv1d_fn", "causal_conv1d_update",
    "SelectiveScanFn", "CausalConv1dFn",
    "mamba_chunk_scan_combined", "mamba_split_conv1d_scan_combined", "rmsnorm_fn", "RMSNormGated",
    "selective_state_update", "causal_conv1d_varlen_states",
]

ACTIVATIONS = (None, "silu", "swish")


def _last_dim_contiguous(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return t if t is None or t.stride(-1) == 1 else t.contiguous()


class SelectiveScanFn(torch.autograd.Function):
    """Selective scan on the dispatched backend; the backward calls the same backend."""

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
            u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus))
        return (out, last_state.detach()) if return_last_state else out
    return SelectiveScanFn.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


def _check_activation(activation: Optional[str]) -> bool:
    if activation not in ACTIVATIONS:
        raise NotImplementedError("activation must be None, silu, or swish")
    return activation is not None


def _check_conv_args(activation: Optional[str], seq_idx: Optional[torch.Tensor], return_final_states: bool) -> bool:
    silu = _check_activation(activation)
    if seq_idx is not None and return_final_states:
        raise ValueError("seq_idx cannot be combined with return_final_states (as in causal-conv1d); "
                         "pass one or the other")
    return silu


class CausalConv1dFn(torch.autograd.Function):
    """Causal depthwise conv1d on the dispatched backend; the backward calls the same backend."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                seq_idx: Optional[torch.Tensor] = None, initial_states: Optional[torch.Tensor] = None,
                return_final_states: bool = False, final_states_out: Optional[torch.Tensor] = None,
                activation: Optional[str] = None) -> Any:
        silu = _check_conv_args(activation, seq_idx, return_final_states)
        if x.stride(2) != 1 and x.stride(1) != 1:
            x = x.contiguous()
        _, backend = select_backend("causal_conv1d", x.device, x.dtype)
        out, final = backend.causal_conv1d_forward(
            x, weight, bias, seq_idx, initial_states, return_final_states, silu)
        ctx.backend = backend
        ctx.silu = silu
        ctx.return_final_states = return_final_states
        ctx.save_for_backward(x, weight, bias, seq_idx, initial_states)
        if not return_final_states:
            return out
        if final_states_out is not None:
            final_states_out.copy_(final)
            ctx.mark_dirty(final_states_out)
            final = final_states_out
        return out, final

    @staticmethod
    def backward(ctx: Any, dout: torch.Tensor, *rest: Any) -> Tuple[Optional[torch.Tensor], ...]:
        x, weight, bias, seq_idx, initial_states = ctx.saved_tensors
        dfinal = rest[0] if ctx.return_final_states and rest else None
        if dout.stride(2) != 1 and dout.stride(1) != 1:
            dout = dout.contiguous()
        dx, dweight, dbias, dinit = ctx.backend.causal_conv1d_backward(
            x, weight, bias, dout, seq_idx, initial_states, dfinal, ctx.silu)
        return (dx, dweight, dbias if bias is not None else None, None,
                dinit if initial_states is not None else None, None, None, None)


def causal_conv1d_fn(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                     seq_idx: Optional[torch.Tensor] = None, initial_states: Optional[torch.Tensor] = None,
                     return_final_states: bool = False, final_states_out: Optional[torch.Tensor] = None,
                     activation: Optional[str] = None) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """causal_conv1d's causal_conv1d_fn: x (batch, dim, L) channel-first or channel-last, weight (dim, width).

    bias (dim,); seq_idx (batch, L); initial_states / final states (batch, dim, width - 1).
    """
    if _library.tracing():
        silu = _check_conv_args(activation, seq_idx, return_final_states)
        if x.stride(2) != 1 and x.stride(1) != 1:
            x = x.contiguous()
        out, final = torch.ops.jetson_mamba.causal_conv1d_fwd(
            x, weight, bias, seq_idx, initial_states, bool(return_final_states), silu)
        if not return_final_states:
            return out
        if final_states_out is not None:
            final_states_out.copy_(final)
            final = final_states_out
        return out, final
    return CausalConv1dFn.apply(x, weight, bias, seq_idx, initial_states, return_final_states,
                                final_states_out, activation)


def causal_conv1d_update(x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor,
                         bias: Optional[torch.Tensor] = None, activation: Optional[str] = None,
                         cache_seqlens: Optional[torch.Tensor] = None,
                         conv_state_indices: Optional[torch.Tensor] = None) -> torch.Tensor:
    """causal_conv1d's decode step: x (batch, dim) or (batch, dim, L); conv_state updated in place.

    conv_state (batch or n_slots, dim, state_len >= width - 1); cache_seqlens (batch,) makes it a
    circular buffer; conv_state_indices (batch,) picks its rows (negative: padding, zero output).
    """
    silu = _check_activation(activation)
    squeeze = x.dim() == 2
    if squeeze:
        x = x.unsqueeze(-1)
    if _library.tracing():
        out = torch.ops.jetson_mamba.causal_conv1d_update(
            x, conv_state, weight, bias, silu, cache_seqlens, conv_state_indices)
    else:
        _, backend = select_backend("causal_conv1d", x.device, x.dtype)
        out = backend.causal_conv1d_update(x, conv_state, weight, bias, silu, cache_seqlens, conv_state_indices)
    return out.squeeze(-1) if squeeze else out


# Mamba2 / SSD: implemented in jetson_mamba.ops.ssd, imported on first use.
SSD_EXPORTS = ("mamba_chunk_scan_combined", "mamba_split_conv1d_scan_combined", "rmsnorm_fn", "RMSNormGated",
               "selective_state_update", "causal_conv1d_varlen_states")


def __getattr__(name: str) -> Any:
    if name in SSD_EXPORTS:
        from jetson_mamba.ops import ssd

        return getattr(ssd, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
