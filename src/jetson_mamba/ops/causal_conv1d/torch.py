"""Portable causal depthwise conv1d in plain PyTorch, written as `width` shifted multiply-adds.

width <= 4, so a handful of in-place passes over (batch, dim, L) beats a generic conv on the
CPU, handles channel-last inputs without copies, and makes seq_idx (taps across a sequence
boundary count as zero) and initial/final states straightforward. Work is in float32
(float64 for float64 inputs); results come back in x's dtype and memory layout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Tuple

from jetson_mamba.ops._cache import write_rows
from jetson_mamba.ops._dtypes import portable_reason, work_dtype

if TYPE_CHECKING:
    import torch


def is_available(device: torch.device, dtype: torch.dtype) -> Optional[str]:
    """Runs on any device torch runs on, for the float dtypes."""
    return portable_reason(dtype)


def _padded(x: torch.Tensor, initial_states: Optional[torch.Tensor], width: int,
            work: torch.dtype) -> torch.Tensor:
    """initial_states (or zeros) ++ x along L, in the work dtype: (batch, dim, width - 1 + L)."""
    import torch
    import torch.nn.functional as F

    if initial_states is None:
        return F.pad(x.to(work), (width - 1, 0))
    return torch.cat([initial_states.to(work), x.to(work)], dim=-1)


def seq_idx_with_state(seq_idx: torch.Tensor, width: int, has_initial_states: bool) -> torch.Tensor:
    """seq_idx (batch, L) extended on the left by the width - 1 state positions: (batch, width - 1 + L).

    As in causal-conv1d >= 1.7, the initial states belong to the first position's sequence
    (seq_idx[:, 0]); without them the zero padding belongs to none (-1).
    """
    import torch

    if has_initial_states:
        head = seq_idx[:, :1].expand(-1, width - 1)
    else:
        head = seq_idx.new_full((seq_idx.shape[0], width - 1), -1)
    return torch.cat([head, seq_idx], dim=-1)


def _masks(seq_idx: Optional[torch.Tensor], has_initial_states: bool, width: int, L: int, work: torch.dtype
           ) -> List[Optional[torch.Tensor]]:
    """Per tap j, (batch, 1, L) = 1 where the tap stays inside the same sequence (None: no seq_idx)."""
    if seq_idx is None:
        return [None] * width
    ext = seq_idx_with_state(seq_idx, width, has_initial_states)
    return [(ext[:, j:j + L] == seq_idx).to(work)[:, None, :] for j in range(width)]


def _conv(xx: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
          masks: List[Optional[torch.Tensor]], L: int) -> torch.Tensor:
    """Pre-activation output (batch, dim, L) from the padded input."""
    import torch

    w = weight.to(xx.dtype)
    pre = torch.zeros(xx.shape[0], xx.shape[1], L, dtype=xx.dtype, device=xx.device)
    if bias is not None:
        pre += bias.to(xx.dtype)[:, None]
    for j, mask in enumerate(masks):
        tap = xx[:, :, j:j + L]
        pre.addcmul_(tap if mask is None else tap * mask, w[:, j, None])
    return pre


def _real_tokens(seq_idx: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    """(batch, 1, L) = 0 at padding tokens (seq_idx < 0), which output 0 as in causal-conv1d >= 1.6."""
    return None if seq_idx is None else (seq_idx >= 0).to(dtype)[:, None, :]


def _like(values: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
    """values in layout's dtype and memory layout (channel-first or channel-last)."""
    import torch

    out = torch.empty_like(layout)
    out.copy_(values)
    return out


def causal_conv1d_forward(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                          seq_idx: Optional[torch.Tensor], initial_states: Optional[torch.Tensor],
                          return_final_states: bool, silu: bool,
                          ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(out, final_states (batch, dim, width - 1) or None)."""
    import torch.nn.functional as F

    width, L = weight.shape[1], x.shape[-1]
    xx = _padded(x, initial_states, width, work_dtype(x.dtype))
    pre = _conv(xx, weight, bias, _masks(seq_idx, initial_states is not None, width, L, xx.dtype), L)
    act = F.silu(pre) if silu else pre
    real = _real_tokens(seq_idx, act.dtype)
    out = _like(act if real is None else act * real, x)
    final = xx[:, :, xx.shape[-1] - (width - 1):].to(x.dtype) if return_final_states else None
    return out, final


def causal_conv1d_backward(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                           dout: torch.Tensor, seq_idx: Optional[torch.Tensor],
                           initial_states: Optional[torch.Tensor], dfinal_states: Optional[torch.Tensor],
                           silu: bool,
                           ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor],
                                      Optional[torch.Tensor]]:
    """(dx, dweight, dbias or None, dinitial_states or None)."""
    import torch

    width, L = weight.shape[1], x.shape[-1]
    xx = _padded(x, initial_states, width, work_dtype(x.dtype))
    masks = _masks(seq_idx, initial_states is not None, width, L, xx.dtype)
    dpre = dout.to(xx.dtype)
    real = _real_tokens(seq_idx, dpre.dtype)
    if real is not None:
        dpre = dpre * real
    if silu:
        pre = _conv(xx, weight, bias, masks, L)
        sig = torch.sigmoid(pre)
        dpre = dpre * sig * (1 + pre * (1 - sig))
    w = weight.to(xx.dtype)
    dxx = torch.zeros_like(xx)
    dweight = torch.empty(weight.shape, dtype=xx.dtype, device=x.device)
    for j, mask in enumerate(masks):
        dtap = dpre if mask is None else dpre * mask
        dxx[:, :, j:j + L].addcmul_(dtap, w[:, j, None])
        dweight[:, j] = (dtap * xx[:, :, j:j + L]).sum((0, 2))
    if dfinal_states is not None:
        dxx[:, :, dxx.shape[-1] - (width - 1):] += dfinal_states.to(xx.dtype)
    dbias = None if bias is None else dpre.sum((0, 2)).to(bias.dtype)
    dinit = None if initial_states is None else _like(dxx[:, :, :width - 1], initial_states)
    return _like(dxx[:, :, width - 1:], x), dweight.to(weight.dtype), dbias, dinit


def causal_conv1d_update(x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor,
                         bias: Optional[torch.Tensor], silu: bool, cache_seqlens: Optional[torch.Tensor],
                         conv_state_indices: Optional[torch.Tensor]) -> torch.Tensor:
    """x (batch, dim, L) after the cached state; conv_state is updated in place (see naive.py)."""
    import torch
    import torch.nn.functional as F

    batch, dim, L = x.shape
    width, S = weight.shape[1], conv_state.shape[-1]
    work = work_dtype(x.dtype)
    rows = (torch.arange(batch, device=x.device) if conv_state_indices is None
            else conv_state_indices.to(device=x.device, dtype=torch.long))
    valid = rows >= 0
    state = conv_state[rows.clamp(min=0)]
    if cache_seqlens is None:
        xx = torch.cat([state, x], dim=-1)
        new_state = xx[:, :, xx.shape[-1] - S:]
        hist = xx[:, :, S - (width - 1):].to(work)
    else:
        start = cache_seqlens.to(device=x.device, dtype=torch.long)[:, None]
        read = torch.remainder(torch.arange(-(width - 1), 0, device=x.device) + start, S)
        hist = torch.cat([state.gather(2, read[:, None, :].expand(-1, dim, -1)), x], dim=-1).to(work)
        write = torch.remainder(torch.arange(L, device=x.device) + start, S)
        new_state = state.scatter(2, write[:, None, :].expand(-1, dim, -1), x)
    pre = _conv(hist, weight, bias, [None] * width, L)
    out = (F.silu(pre) if silu else pre).to(x.dtype).masked_fill(~valid[:, None, None], 0)
    write_rows(conv_state, rows, new_state)
    return out
