"""causal_conv1d_varlen_states, drop-in for causal_conv1d.causal_conv1d_varlen (a CUDA-only Triton kernel).

Mamba2.forward calls it with cu_seqlens during inference to seed each packed sequence's conv state.
"""

from __future__ import annotations

import torch

from jetson_mamba.ops.ssd.validate import check


def causal_conv1d_varlen_states(x: torch.Tensor, cu_seqlens: torch.Tensor, state_len: int) -> torch.Tensor:
    """The last `state_len` inputs of each packed sequence, zeros where the sequence is shorter.

    x: (total_tokens, dim); cu_seqlens: (batch + 1,) sorted offsets starting at 0.
    Returns (batch, dim, state_len), laid out as upstream (a transposed (batch, state_len, dim)).
    """
    check(x.dim() == 2 and cu_seqlens.dim() == 1 and cu_seqlens.shape[0] >= 1 and state_len >= 0,
          lambda: f"x has shape {tuple(x.shape)}, cu_seqlens {tuple(cu_seqlens.shape)}, state_len {state_len}",
          "pass x as (total_tokens, dim), cu_seqlens as (batch + 1,) offsets and state_len >= 0")
    cu = cu_seqlens.to(device=x.device, dtype=torch.long)
    pos = cu[1:, None] - state_len + torch.arange(state_len, device=x.device)  # (batch, state_len)
    valid = (pos >= cu[:-1, None])[..., None]
    picked = x[pos.clamp(min=0, max=max(x.shape[0] - 1, 0))] if x.shape[0] else x.new_zeros(*pos.shape, x.shape[1])
    return torch.where(valid, picked, torch.zeros((), dtype=x.dtype, device=x.device)).transpose(1, 2)
