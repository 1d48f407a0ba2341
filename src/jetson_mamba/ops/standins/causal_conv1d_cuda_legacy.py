"""Stand-in for causal-conv1d's compiled `causal_conv1d_cuda`, returning API (< 1.5.1; mamba-ssm 2.2.4).

causal_conv1d_fwd(x, weight, bias, seq_idx, initial_states, final_states_out, silu) -> out
causal_conv1d_bwd(x, weight, bias, dout, seq_idx, initial_states, dfinal_states, dx,
                  return_dinitial_states, silu) -> [dx, dweight, dbias, dinitial_states]
causal_conv1d_update(x, conv_state, weight, bias, silu, cache_seqlens=None, conv_state_indices=None) -> out
final_states_out and a caller-supplied dx are written in place (mamba_inner_fn passes dx as a
view into one gradient tensor).
"""

from __future__ import annotations

from typing import List, Optional

import torch

from jetson_mamba.ops.standins._conv import backend_for

__jetson_mamba_standin__ = True


def causal_conv1d_fwd(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                      seq_idx: Optional[torch.Tensor], initial_states: Optional[torch.Tensor],
                      final_states_out: Optional[torch.Tensor], silu_activation: bool) -> torch.Tensor:
    with backend_for(x, weight, forward=True) as backend:
        out, final = backend.causal_conv1d_forward(
            x, weight, bias, seq_idx, initial_states, final_states_out is not None, silu_activation)
    if final_states_out is not None:
        final_states_out.copy_(final)
    return out


def causal_conv1d_bwd(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], dout: torch.Tensor,
                      seq_idx: Optional[torch.Tensor], initial_states: Optional[torch.Tensor],
                      dfinal_states: Optional[torch.Tensor], dx: Optional[torch.Tensor],
                      return_dinitial_states: bool, silu_activation: bool) -> List[Optional[torch.Tensor]]:
    with backend_for(x, weight, backward=True) as backend:
        gx, gw, gb, ginit = backend.causal_conv1d_backward(
            x, weight, bias, dout, seq_idx, initial_states, dfinal_states, silu_activation)
    if dx is not None:
        dx.copy_(gx)
        gx = dx
    return [gx, gw, gb, ginit if return_dinitial_states else None]


def causal_conv1d_update(x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor,
                         bias: Optional[torch.Tensor], silu_activation: bool,
                         cache_seqlens: Optional[torch.Tensor] = None,
                         conv_state_indices: Optional[torch.Tensor] = None) -> torch.Tensor:
    with backend_for(x, weight) as backend:
        return backend.causal_conv1d_update(x, conv_state, weight, bias, silu_activation, cache_seqlens,
                                            conv_state_indices)
