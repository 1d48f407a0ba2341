"""Reference selective scan: upstream `selective_scan_ref` semantics, one time step at a time.

Slow and memory-hungry on purpose (every step is explicit), but exact in any dtype
(float64 included) and differentiable through autograd: every faster backend is checked
against it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Tuple, Union

if TYPE_CHECKING:
    import torch


def expand_groups(BC: torch.Tensor, dim: int) -> torch.Tensor:
    """Variable B/C as (batch, dim, dstate, L): (batch, dstate, L) is one group, (batch, G, dstate, L) G groups."""
    if BC.dim() == 3:
        BC = BC.unsqueeze(1)
    groups = BC.shape[1]
    if dim % groups:
        raise ValueError(f"dim {dim} is not a multiple of the number of B/C groups {groups}")
    return BC.repeat_interleave(dim // groups, dim=1)


def selective_scan_ref(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                       C: torch.Tensor, D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
                       delta_bias: Optional[torch.Tensor] = None, delta_softplus: bool = False,
                       return_last_state: bool = False,
                       ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """out = y (* silu(z)); computed in float32, or float64 when u is float64; last_state (batch, dim, dstate)."""
    import torch
    import torch.nn.functional as F

    dtype_in = u.dtype
    work = torch.float64 if u.dtype == torch.float64 else torch.float32
    u = u.to(work)
    delta = delta.to(work)
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].to(work)
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, L = u.shape
    A = A.to(work)
    variable_B = B.dim() >= 3
    variable_C = C.dim() >= 3
    Bx = expand_groups(B.to(work), dim) if variable_B else B.to(work)
    Cx = expand_groups(C.to(work), dim) if variable_C else C.to(work)
    x = u.new_zeros((batch, dim, A.shape[1]))
    ys = []
    for i in range(L):
        Bi = Bx[..., i] if variable_B else Bx
        Ci = Cx[..., i] if variable_C else Cx
        x = torch.exp(delta[:, :, i, None] * A) * x + (delta[:, :, i] * u[:, :, i])[..., None] * Bi
        ys.append((x * Ci).sum(-1))
    y = torch.stack(ys, dim=2)
    out = y if D is None else y + u * D[:, None].to(work)
    if z is not None:
        out = out * F.silu(z.to(work))
    out = out.to(dtype_in)
    return (out, x) if return_last_state else out


def chunk_states_ref(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                     delta_bias: Optional[torch.Tensor] = None, delta_softplus: bool = False, every: int = 2048,
                     ) -> torch.Tensor:
    """The compiled kernels' chunk states x (batch, dim, ceil(L / every), 2 * dstate): at the end of each
    `every`-step chunk, [..., 0::2] the product of exp(delta * A) from the start, [..., 1::2] the true
    state. In u's work dtype (float32, or float64 for float64 u); one reference scan per chunk end."""
    import torch
    import torch.nn.functional as F

    work = torch.float64 if u.dtype == torch.float64 else torch.float32
    L = u.shape[-1]
    dt = delta.to(work) if delta_bias is None else delta.to(work) + delta_bias[..., None].to(work)
    dt = F.softplus(dt) if delta_softplus else dt
    ends = list(range(every, L, every)) + [L]
    x = torch.empty(*u.shape[:2], len(ends), 2 * A.shape[1], dtype=work, device=u.device)
    for c, end in enumerate(ends):
        prefix = [t[..., :end] if t.dim() >= 3 else t for t in (u, delta, A, B, C)]
        _, state = selective_scan_ref(*prefix, delta_bias=delta_bias, delta_softplus=delta_softplus,
                                      return_last_state=True)
        x[:, :, c, 1::2] = state
        x[:, :, c, 0::2] = torch.exp(dt[..., :end].sum(-1)[..., None] * A.to(work))
    return x
