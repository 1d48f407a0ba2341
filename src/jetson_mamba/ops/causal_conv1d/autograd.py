"""causal_conv1d_fn / causal_conv1d_update: causal-conv1d's signatures, as an autograd.Function on the
dispatched backend (eager) or the custom ops `jetson_mamba::causal_conv1d_*` (under torch.compile /
torch.export, see `ops._library`)."""

from __future__ import annotations

from typing import Any, Optional, Tuple, Union

import torch

from jetson_mamba.errors import BackendUnavailableError
from jetson_mamba.ops import _library
from jetson_mamba.ops.backend import choice_in_effect, select_backend, use_backend

ACTIVATIONS = (None, "silu", "swish")


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
    """Causal depthwise conv1d on the dispatched backend; the backward calls the same backend, under the
    forward's choice (autograd may run it later, on a thread of its own)."""

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
        ctx.choice = choice_in_effect()
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
        with use_backend(ctx.choice):
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
            x, weight, bias, seq_idx, initial_states, bool(return_final_states), silu, choice_in_effect())
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
        backend = select_backend("causal_conv1d", x.device, x.dtype)
        if not backend.has("causal_conv1d_update"):
            raise BackendUnavailableError(f"the {backend.name} backend of causal_conv1d has no decode step "
                                          "(causal_conv1d_update)", "choose another backend for decoding, "
                                          "e.g. `with jetson_mamba.ops.use_backend('torch'):`")
        out = backend.module.causal_conv1d_update(x, conv_state, weight, bias, silu, cache_seqlens, conv_state_indices)
    return out.squeeze(-1) if squeeze else out
