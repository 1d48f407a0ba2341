"""The compiled `causal_conv1d_cuda` behind the backend contract, in both of its API styles.

causal-conv1d < 1.5.1 returns its results (`causal_conv1d_fwd(...) -> out`); later versions write
into buffers the caller allocates (`causal_conv1d_fwd(..., out, final_states_out, silu) -> None`).
The pybind signature in the function's docstring says which one is installed.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Optional, Tuple

from jetson_mamba.ops._compiled import load_extension, why_unavailable

if TYPE_CHECKING:
    import torch

EXTENSION = "causal_conv1d_cuda"


def is_available(device: torch.device, dtype: torch.dtype) -> Optional[str]:
    return why_unavailable(EXTENSION, "causal-conv1d", device, dtype)


def writes_into_buffers(ext: ModuleType) -> bool:
    """True for the output-buffer API (>= 1.5.1): its pybind signature returns None."""
    doc = getattr(ext.causal_conv1d_fwd, "__doc__", "") or ""
    return "-> None" in doc


def _channel_last(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(1) == 1 else t.transpose(1, 2).contiguous().transpose(1, 2)


def _kernel_layout(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(2) == 1 or t.stride(1) == 1 else t.contiguous()


def _check_width(weight: torch.Tensor) -> None:
    if not 2 <= weight.shape[1] <= 4:
        raise ValueError(f"the compiled causal_conv1d kernels support width 2-4, not {weight.shape[1]}; "
                         "set JETSON_MAMBA_BACKEND=torch for other widths")


def causal_conv1d_forward(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                          seq_idx: Optional[torch.Tensor], initial_states: Optional[torch.Tensor],
                          return_final_states: bool, silu: bool,
                          ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    import torch

    _check_width(weight)
    ext = load_extension(EXTENSION)
    x = _channel_last(x) if return_final_states else _kernel_layout(x)
    final = None
    if return_final_states:
        final = torch.empty(x.shape[0], weight.shape[1] - 1, x.shape[1], device=x.device,
                            dtype=x.dtype).transpose(1, 2)
    init = None if initial_states is None else _kernel_layout(initial_states)
    if writes_into_buffers(ext):
        out = torch.empty_like(x)
        ext.causal_conv1d_fwd(x, weight, bias, seq_idx, init, out, final, silu)
    else:
        out = ext.causal_conv1d_fwd(x, weight, bias, seq_idx, init, final, silu)
    return out, final


def causal_conv1d_backward(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                           dout: torch.Tensor, seq_idx: Optional[torch.Tensor],
                           initial_states: Optional[torch.Tensor], dfinal_states: Optional[torch.Tensor],
                           silu: bool,
                           ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor],
                                      Optional[torch.Tensor]]:
    import torch

    _check_width(weight)
    ext = load_extension(EXTENSION)
    x = _channel_last(x) if dfinal_states is not None else _kernel_layout(x)
    dout = _kernel_layout(dout)
    init = None if initial_states is None else _kernel_layout(initial_states)
    want_dinit = initial_states is not None
    if not writes_into_buffers(ext):
        dx, dweight, dbias, dinit = ext.causal_conv1d_bwd(
            x, weight, bias, dout, seq_idx, init, dfinal_states, None, want_dinit, silu)
        return dx, dweight, dbias, dinit
    dx = torch.empty_like(x)
    dweight = torch.zeros_like(weight, dtype=torch.float32)
    dbias = None if bias is None else torch.zeros_like(bias, dtype=torch.float32)
    dinit = None
    if want_dinit:
        dinit = torch.empty(x.shape[0], weight.shape[1] - 1, x.shape[1], device=x.device,
                            dtype=x.dtype).transpose(1, 2)
    ext.causal_conv1d_bwd(x, weight, bias, dout, seq_idx, init, dfinal_states, dx, dweight, dbias, dinit, silu)
    return dx, dweight.to(weight.dtype), None if dbias is None else dbias.to(bias.dtype), dinit


def causal_conv1d_update(x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor,
                         bias: Optional[torch.Tensor], silu: bool, cache_seqlens: Optional[torch.Tensor],
                         conv_state_indices: Optional[torch.Tensor]) -> torch.Tensor:
    import torch

    _check_width(weight)
    ext = load_extension(EXTENSION)
    if writes_into_buffers(ext):
        out = torch.empty_like(x)
        ext.causal_conv1d_update(x, conv_state, weight, bias, out, silu, cache_seqlens, conv_state_indices)
        return out
    if conv_state_indices is None:
        return ext.causal_conv1d_update(x, conv_state, weight, bias, silu, cache_seqlens)
    return ext.causal_conv1d_update(x, conv_state, weight, bias, silu, cache_seqlens, conv_state_indices)
