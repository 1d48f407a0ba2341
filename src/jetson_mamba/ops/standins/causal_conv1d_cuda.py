"""Stand-in for causal-conv1d's compiled `causal_conv1d_cuda`, output-buffer API (>= 1.5.1).

causal_conv1d_fwd(x, weight, bias, seq_idx, initial_states, out, final_states_out, silu) -> None
causal_conv1d_bwd(x, weight, bias, dout, seq_idx, initial_states, dfinal_states,
                  dx, dweight, dbias, dinitial_states, silu) -> None
causal_conv1d_update(x, conv_state, weight, bias, out, silu, cache_seqlens, conv_state_indices) -> None
Every result is written into the buffers the caller passes, as the kernels do (the weight and bias
gradients are added into them).
"""

from __future__ import annotations

from typing import Optional

import torch

from jetson_mamba.ops.standins._buffers import buffers, fill
from jetson_mamba.ops.standins._conv import backend_for

__jetson_mamba_standin__ = True


def causal_conv1d_fwd(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                      seq_idx: Optional[torch.Tensor], initial_states: Optional[torch.Tensor],
                      out: torch.Tensor, final_states_out: Optional[torch.Tensor], silu_activation: bool) -> None:
    with backend_for(x, weight, forward=True) as backend:
        result, final = backend.causal_conv1d_forward(
            x, weight, bias, seq_idx, initial_states, final_states_out is not None, silu_activation,
            **buffers(backend, (x,), out=out))
        fill(out, result)
        if final_states_out is not None:
            final_states_out.copy_(final)


def causal_conv1d_bwd(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], dout: torch.Tensor,
                      seq_idx: Optional[torch.Tensor], initial_states: Optional[torch.Tensor],
                      dfinal_states: Optional[torch.Tensor], dx: torch.Tensor, dweight: torch.Tensor,
                      dbias: Optional[torch.Tensor], dinitial_states: Optional[torch.Tensor],
                      silu_activation: bool) -> None:
    with backend_for(x, weight, backward=True) as backend:
        # the gradients of weight and bias are added into the caller's (zeroed) fp32 buffers, as the
        # compiled kernel adds into them; by the backend itself where it takes them
        grads = [g for g in (dweight, dbias) if g is not None]
        takes = (dbias is None) == (bias is None) and all(g.dtype == torch.float32 and g.is_contiguous() for g in grads)
        into = buffers(backend, (x, dout), dx=dx, **(dict(dweight=dweight, dbias=dbias) if takes else {}))
        if "dweight" not in into:
            into.pop("dbias", None)
        gx, gw, gb, ginit = backend.causal_conv1d_backward(
            x, weight, bias, dout, seq_idx, initial_states, dfinal_states, silu_activation, **into)
        fill(dx, gx)
        if "dweight" not in into:
            dweight.add_(gw)
            if dbias is not None and gb is not None:
                dbias.add_(gb)
        if dinitial_states is not None and ginit is not None:
            dinitial_states.copy_(ginit)


def causal_conv1d_update(x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor,
                         bias: Optional[torch.Tensor], out: torch.Tensor, silu_activation: bool,
                         cache_seqlens: Optional[torch.Tensor], conv_state_indices: Optional[torch.Tensor]) -> None:
    with backend_for(x, weight) as backend:
        fill(out, backend.causal_conv1d_update(x, conv_state, weight, bias, silu_activation, cache_seqlens,
                                               conv_state_indices, **buffers(backend, (x, conv_state), out=out)))
