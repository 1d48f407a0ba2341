"""Float64 step-by-step references for the SSD ops: the definition every faster path is checked against.

Deliberately the most literal form (one Python step per token, no chunking, no tricks), slow,
and differentiable through autograd so tests can compare gradients too.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F


def discretize_dt(
    dt: torch.Tensor,
    dt_bias: Optional[torch.Tensor],
    dt_softplus: bool,
    dt_limit: Tuple[float, float],
) -> torch.Tensor:
    """dt as the scan uses it: + bias, softplus (linear above 20, as upstream), clamped to dt_limit.

    Upstream clamps even with the default limit (0, inf), so a negative dt without softplus is 0.
    """
    if dt_bias is not None:
        dt = dt + dt_bias.to(dt.dtype)
    if dt_softplus:
        dt = F.softplus(dt)
    return dt.clamp(min=dt_limit[0], max=dt_limit[1])


def ssd_ref(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: Optional[torch.Tensor] = None,
    z: Optional[torch.Tensor] = None,
    dt_bias: Optional[torch.Tensor] = None,
    initial_states: Optional[torch.Tensor] = None,
    seq_idx: Optional[torch.Tensor] = None,
    dt_softplus: bool = False,
    dt_limit: Tuple[float, float] = (0.0, math.inf),
) -> Tuple[torch.Tensor, torch.Tensor]:
    """mamba_chunk_scan_combined's math as a sequential float64 recurrence.

    Shapes as upstream: x, z (b, L, h, p); dt (b, L, h); A (h,); B, C (b, L, g, n); D (h, p) or (h,);
    initial_states (b, h, p, n); seq_idx (b, L) non-decreasing, the state restarts from zero where it
    changes and the initial state belongs to sequence 0. Returns (out (b, L, h, p), final state
    (b, h, p, n)), both float64.
    """
    f = torch.float64
    x, dt, A, B, C = (t.to(f) for t in (x, dt, A, B, C))
    batch, L, h, p = x.shape
    g = B.shape[2]
    B = B.repeat_interleave(h // g, dim=2)
    C = C.repeat_interleave(h // g, dim=2)
    dt = discretize_dt(dt, dt_bias.to(f) if dt_bias is not None else None, dt_softplus, dt_limit)
    state = initial_states.to(f) if initial_states is not None else x.new_zeros(batch, h, p, B.shape[-1])
    prev_seq = torch.zeros(batch, dtype=torch.long, device=x.device)
    ys = []
    for t in range(L):
        decay = torch.exp(dt[:, t] * A)[:, :, None, None]
        if seq_idx is not None:
            keep = (seq_idx[:, t].long() == prev_seq).to(f)[:, None, None, None]
            decay = decay * keep
            prev_seq = seq_idx[:, t].long()
        state = decay * state + (dt[:, t, :, None, None] * x[:, t, :, :, None]) * B[:, t, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", state, C[:, t]))
    y = torch.stack(ys, dim=1)
    if D is not None:
        Df = D.to(f)
        y = y + x * (Df if Df.dim() == 2 else Df[:, None])
    if z is not None:
        y = y * F.silu(z.to(f))
    return y, state

