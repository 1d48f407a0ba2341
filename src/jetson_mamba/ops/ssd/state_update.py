"""One decoding step of the SSM, drop-in for mamba_ssm.ops.triton.selective_state_update.

Mamba2.step (and Mamba.step) call it once per generated token; upstream's version is a Triton
kernel that only runs on CUDA. Same arguments, same in-place update of `state`, fp32 arithmetic.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from jetson_mamba.ops._cache import write_rows
from jetson_mamba.ops.ssd.validate import check, compute_dtype


def selective_state_update(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: Optional[torch.Tensor] = None,
    z: Optional[torch.Tensor] = None,
    dt_bias: Optional[torch.Tensor] = None,
    dt_softplus: bool = False,
    state_batch_indices: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """state <- state * exp(dt A) + dt B x (in place); returns (state . C + D x) * silu(z).

    state: (batch, dim, dstate) or (batch, nheads, dim, dstate); x, dt, z: (batch, dim) or
    (batch, nheads, dim); A: (dim, dstate) or (nheads, dim, dstate); B, C: (batch, dstate) or
    (batch, ngroups, dstate); D, dt_bias: (dim,) or (nheads, dim). With state_batch_indices
    (batch,), row i updates state[state_batch_indices[i]]; a negative index is padding (output 0,
    no state touched), as in mamba-ssm 2.3.
    """
    has_heads = state.dim() > 3
    state4 = state if has_heads else state.unsqueeze(1)
    x3 = x if x.dim() == 3 else x.unsqueeze(1)
    dt3 = dt if dt.dim() == 3 else dt.unsqueeze(1)
    A3 = A if A.dim() == 3 else A.unsqueeze(0)
    B3 = B if B.dim() == 3 else B.unsqueeze(1)
    C3 = C if C.dim() == 3 else C.unsqueeze(1)
    D2 = D if D is None or D.dim() == 2 else D.unsqueeze(0)
    z3 = z if z is None or z.dim() == 3 else z.unsqueeze(1)
    bias2 = dt_bias if dt_bias is None or dt_bias.dim() == 2 else dt_bias.unsqueeze(0)
    _, nheads, dim, dstate = state4.shape
    batch = x3.shape[0]
    fix = "pass the shapes documented for mamba_ssm's selective_state_update"
    check(tuple(x3.shape) == (batch, nheads, dim), lambda: f"x has shape {tuple(x.shape)}, state {tuple(state.shape)}", fix)
    check(dt3.shape == x3.shape, lambda: f"dt has shape {tuple(dt.shape)}, x {tuple(x.shape)}", fix)
    check(tuple(A3.shape) == (nheads, dim, dstate), lambda: f"A has shape {tuple(A.shape)}, expected {(nheads, dim, dstate)}", fix)
    ngroups = B3.shape[1]
    check(ngroups >= 1 and nheads % ngroups == 0 and tuple(B3.shape) == (batch, ngroups, dstate) and C3.shape == B3.shape,
          lambda: f"B has shape {tuple(B.shape)} and C {tuple(C.shape)}, expected (batch, ngroups, {dstate}) with {nheads} % ngroups == 0", fix)
    check(D2 is None or tuple(D2.shape) == (nheads, dim), lambda: f"D has shape {tuple(D.shape) if D is not None else None}", fix)
    check(z3 is None or z3.shape == x3.shape, lambda: f"z has shape {tuple(z.shape) if z is not None else None}", fix)
    check(bias2 is None or tuple(bias2.shape) == (nheads, dim),
          lambda: f"dt_bias has shape {tuple(dt_bias.shape) if dt_bias is not None else None}", fix)
    if state_batch_indices is None:
        rows = torch.arange(batch, device=state.device)
        check(state4.shape[0] == batch, lambda: f"state has batch {state4.shape[0]}, x has {batch}",
              "pass state_batch_indices to pick rows of a larger state cache")
    else:
        check(tuple(state_batch_indices.shape) == (batch,), lambda: f"state_batch_indices has shape {tuple(state_batch_indices.shape)}",
              "pass one state row index per batch element")
        rows = state_batch_indices.long()
    valid = rows >= 0
    f = compute_dtype(x.dtype)
    with torch.no_grad(), torch.autocast(device_type=x.device.type, enabled=False):
        dtf = dt3.to(f) + (bias2.to(f) if bias2 is not None else 0.0)
        if dt_softplus:
            dtf = F.softplus(dtf)
        r = nheads // ngroups
        Bh = B3.to(f).repeat_interleave(r, dim=1)[:, :, None, :]
        Ch = C3.to(f).repeat_interleave(r, dim=1)[:, :, None, :]
        old = state4[rows.clamp(min=0)].to(f)
        new = old * torch.exp(A3.to(f) * dtf[..., None]) + Bh * (dtf * x3.to(f))[..., None]
        out = (new * Ch).sum(-1)
        if D2 is not None:
            out = out + x3.to(f) * D2.to(f)
        if z3 is not None:
            out = out * F.silu(z3.to(f))
        out = out * valid[:, None, None].to(f)
        write_rows(state4, rows, new)
    out = out.to(x.dtype)
    return out if has_heads else out.squeeze(1)
