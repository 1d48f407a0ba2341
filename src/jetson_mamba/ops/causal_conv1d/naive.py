"""Reference causal conv1d: upstream `causal_conv1d_ref` / `causal_conv1d_update_ref` semantics
plus what they lack (seq_idx, conv_state_indices), written as plain shifted sums.

Exact in any dtype (float64 included) and differentiable through autograd; faster backends are
checked against it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Tuple, Union

if TYPE_CHECKING:
    import torch


def causal_conv1d_ref(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                      initial_states: Optional[torch.Tensor] = None, return_final_states: bool = False,
                      final_states_out: Optional[torch.Tensor] = None, activation: Optional[str] = None,
                      seq_idx: Optional[torch.Tensor] = None,
                      ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """out[t] = act(bias + sum_j weight[:, j] * xx[t + j]), xx = initial_states (or zeros) ++ x.

    With seq_idx (batch, L), taps that reach into another sequence (seq_idx differs) count as zero,
    and padding tokens (seq_idx < 0) output zero, as causal-conv1d >= 1.6 does; the initial states
    belong to the first position's sequence (seq_idx[:, 0]), as in causal-conv1d >= 1.7.
    """
    import torch
    import torch.nn.functional as F

    if activation not in (None, "silu", "swish"):
        raise NotImplementedError("activation must be None, silu, or swish")
    dtype_in = x.dtype
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    batch, dim, L = x.shape
    width = weight.shape[1]
    xw = x.to(work)
    if initial_states is None:
        xx = F.pad(xw, (width - 1, 0))
    else:
        xx = torch.cat([initial_states.to(work), xw], dim=-1)
    if seq_idx is not None:
        # the sequence of each position of xx: the state's is the first position's (-1: zero padding)
        state_seq = seq_idx[:, :1] if initial_states is not None else torch.full_like(seq_idx[:, :1], -1)
        xx_seq = torch.cat([state_seq.expand(-1, width - 1), seq_idx], dim=-1)
    out = torch.zeros(batch, dim, L, dtype=work, device=x.device)
    for j in range(width):
        tap = xx[:, :, j:j + L] * weight[:, j, None].to(work)
        if seq_idx is not None:
            tap = tap * (xx_seq[:, j:j + L] == seq_idx)[:, None, :].to(work)
        out = out + tap
    if bias is not None:
        out = out + bias[:, None].to(work)
    if activation is not None:
        out = F.silu(out)
    if seq_idx is not None:
        out = out * (seq_idx >= 0)[:, None, :].to(work)
    out = out.to(dtype_in)
    if not return_final_states:
        return out
    final = F.pad(xx, (width - 1 - xx.shape[-1], 0))[..., -(width - 1):].to(dtype_in)
    if final_states_out is not None:
        final_states_out.copy_(final)
        final = final_states_out
    return out, final


def causal_conv1d_update_ref(x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor,
                             bias: Optional[torch.Tensor] = None, activation: Optional[str] = None,
                             cache_seqlens: Optional[torch.Tensor] = None,
                             conv_state_indices: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Decode step(s): convolve x (batch, dim[, L]) after the cached state and update conv_state in place.

    conv_state (n_states, dim, state_len): row conv_state_indices[b] (all rows in order when None;
    a negative index is a padding slot: zero output, state untouched). With cache_seqlens it is a
    circular buffer written at cache_seqlens % state_len.
    """
    import torch
    import torch.nn.functional as F

    if activation not in (None, "silu", "swish"):
        raise NotImplementedError("activation must be None, silu, or swish")
    squeeze = x.dim() == 2
    if squeeze:
        x = x.unsqueeze(-1)
    batch, dim, L = x.shape
    width = weight.shape[1]
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    out = torch.zeros(batch, dim, L, dtype=x.dtype, device=x.device)
    for b in range(batch):
        row = b if conv_state_indices is None else int(conv_state_indices[b])
        if row < 0:
            continue
        state = conv_state[row]
        state_len = state.shape[-1]
        if cache_seqlens is None:
            history = state[:, state_len - (width - 1):]
            new_state = torch.cat([state, x[b]], dim=-1)[:, -state_len:]
        else:
            start = int(cache_seqlens[b])
            read = [(start - (width - 1) + i) % state_len for i in range(width - 1)]
            history = state[:, read]
            new_state = state.clone()
            new_state[:, [(start + i) % state_len for i in range(L)]] = x[b]
        xx = torch.cat([history, x[b]], dim=-1).to(work)
        y = sum(xx[:, j:j + L] * weight[:, j, None].to(work) for j in range(width))
        if bias is not None:
            y = y + bias[:, None].to(work)
        if activation is not None:
            y = F.silu(y)
        out[b] = y.to(x.dtype)
        conv_state[row].copy_(new_state)
    return out.squeeze(-1) if squeeze else out
