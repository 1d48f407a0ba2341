"""What the selective-scan stand-ins share: dispatch, chunk states x, in-place results."""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch

from jetson_mamba.ops.backend import select_backend

X_CHUNK = 2048  # the compiled kernels store one state per 2048 steps


def n_chunks(L: int) -> int:
    return -(-L // X_CHUNK)


def chunk_states(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                 delta_bias: Optional[torch.Tensor], delta_softplus: bool, last_state: torch.Tensor
                 ) -> torch.Tensor:
    """x (batch, dim, n_chunks, 2 * dstate) as the kernels return it: x[..., 0::2] the running
    product of exp(delta * A) from the start, x[..., 1::2] the state, both at each chunk's end."""
    import torch.nn.functional as F

    from jetson_mamba.ops.selective_scan.torch import chunk_end_states

    batch, dim, L = u.shape
    count = n_chunks(L)
    # Every op here is a pass over (batch, dim, L) on top of the backend's kernel: one add (promoting
    # to fp32), the softplus, and one sum per chunk (not a full cumsum), as few as the API allows.
    dt = delta.float() if delta_bias is None else delta + delta_bias.float()[:, None]
    dt = F.softplus(dt) if delta_softplus else dt
    sums = [dt[..., i * X_CHUNK:(i + 1) * X_CHUNK].sum(-1) for i in range(count)]
    cum = torch.stack(sums, dim=-1).cumsum(-1)  # (batch, dim, n_chunks): delta summed to each chunk's end
    x = torch.empty(batch, dim, count, 2 * A.shape[1], dtype=torch.float32, device=u.device)
    x[..., 0::2] = torch.exp(cum[..., None] * A.float()[:, None, :])
    if count > 1:
        x[:, :, :-1, 1::2] = chunk_end_states(u, delta, A, B, C, delta_bias, delta_softplus, X_CHUNK)
    x[:, :, -1, 1::2] = last_state
    return x


def check_x(x: Optional[torch.Tensor], u: torch.Tensor, A: torch.Tensor) -> None:
    """The kernels reject a missing or misshapen x when L spans more than one chunk; so do we."""
    batch, dim, L = u.shape
    want = (batch, dim, n_chunks(L), 2 * A.shape[1])
    if x is None and n_chunks(L) > 1:
        raise RuntimeError("bwd needs the chunk states x returned by fwd when seqlen > 2048")
    if x is not None and tuple(x.shape) != want:
        raise RuntimeError(f"x has shape {tuple(x.shape)}, expected {want} (the x returned by fwd)")


def forward(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
            D: Optional[torch.Tensor], z: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor],
            delta_softplus: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
    """(out, out_z or None, x) through the dispatched selective-scan backend."""
    _, backend = select_backend("selective_scan", u.device, u.dtype)
    out, out_z, last = backend.selective_scan_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return out, out_z, chunk_states(u, delta, A, B, C, delta_bias, delta_softplus, last)


def backward(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
             D: Optional[torch.Tensor], z: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor],
             dout: torch.Tensor, x: Optional[torch.Tensor], delta_softplus: bool) -> List[Optional[torch.Tensor]]:
    """[du, ddelta, dA, dB, dC, dD, ddelta_bias, dz] through the dispatched backend (x is only checked)."""
    check_x(x, u, A)
    _, backend = select_backend("selective_scan", u.device, u.dtype)
    return list(backend.selective_scan_backward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, dout))
