"""The compiled `selective_scan_cuda` (from mamba-ssm) behind the backend contract.

The contract's backward receives only the inputs, so it reruns the compiled forward to get
the chunk states `x` and `out` that `selective_scan_cuda.bwd` needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Tuple

from jetson_mamba.ops._compiled import load_extension, why_unavailable

if TYPE_CHECKING:
    import torch

EXTENSION = "selective_scan_cuda"
X_CHUNK = 2048  # steps per chunk state in x, for every L above 2048


def is_available(device: torch.device, dtype: torch.dtype) -> Optional[str]:
    return why_unavailable(EXTENSION, "mamba-ssm", device, dtype)


def _prepare(u: torch.Tensor, delta: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
             z: Optional[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
    """Layouts and dtypes the kernel checks: last dim contiguous, variable B/C 4-D in u's dtype."""

    def prep(t: torch.Tensor, variable: bool) -> torch.Tensor:
        if variable:
            t = (t.unsqueeze(1) if t.dim() == 3 else t).to(u.dtype)
        return t if t.stride(-1) == 1 else t.contiguous()

    zc = None if z is None else prep(z.to(u.dtype), False)
    return (prep(u, False), prep(delta.to(u.dtype), False), prep(B, B.dim() >= 3), prep(C, C.dim() >= 3), zc)


def selective_scan_forward(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                           C: torch.Tensor, D: Optional[torch.Tensor] = None,
                           z: Optional[torch.Tensor] = None, delta_bias: Optional[torch.Tensor] = None,
                           delta_softplus: bool = False,
                           ) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
    out, out_z, x = _forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return out, out_z, last_state(x, B)


def selective_scan_forward_x(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                             C: torch.Tensor, D: Optional[torch.Tensor], z: Optional[torch.Tensor],
                             delta_bias: Optional[torch.Tensor], delta_softplus: bool, every: int,
                             ) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
    """(out, out_z or None, x): the kernel's own chunk states x, with true states for a fixed B."""
    if every != X_CHUNK:
        raise ValueError(f"the compiled kernel keeps its states every {X_CHUNK} steps, not every {every}")
    out, out_z, x = _forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return out, out_z, true_chunk_states(x, B)


def _forward(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
             D: Optional[torch.Tensor], z: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor],
             delta_softplus: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
    ext = load_extension(EXTENSION)
    u, delta, B4, C4, z = _prepare(u, delta, B, C, z)
    out, x, *rest = ext.fwd(u, delta, A, B4, C4, D, z, delta_bias, delta_softplus)
    return out, (rest[0] if z is not None else None), x


def last_state(x: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """The true final state from the kernel's chunk states x (batch, dim, n_chunks, 2N)."""
    return true_chunk_states(x[:, :, -1:], B)[:, :, 0, 1::2]


def true_chunk_states(x: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """The kernel's chunk states x with true states (x itself unless B is fixed).

    With a fixed B (dim, N) the kernel scans delta*u and applies B only when it forms the output, so
    its stored states lack the B factor (mamba-ssm's own `selective_scan_fn(return_last_state=True)`
    returns them so: an upstream bug, harmless to Mamba, whose B is variable). B is constant in time,
    so multiplying it back gives the true states.
    """
    if B.dim() != 2:
        return x
    fixed = x.clone()
    fixed[..., 1::2] *= B[:, None, :]
    return fixed


def selective_scan_backward(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                            C: torch.Tensor, D: Optional[torch.Tensor], z: Optional[torch.Tensor],
                            delta_bias: Optional[torch.Tensor], delta_softplus: bool, dout: torch.Tensor,
                            ) -> Tuple[Optional[torch.Tensor], ...]:
    ext = load_extension(EXTENSION)
    uc, dc, B4, C4, zc = _prepare(u, delta, B, C, z)
    out, x, *_ = ext.fwd(uc, dc, A, B4, C4, D, zc, delta_bias, delta_softplus)
    dout = dout.to(uc.dtype)
    dout = dout if dout.stride(-1) == 1 else dout.contiguous()
    du, ddelta, dA, dB, dC, dD, ddelta_bias, *rest = ext.bwd(
        uc, dc, A, B4, C4, D, zc, delta_bias, dout, x, out, None, delta_softplus, False)
    dB = dB.squeeze(1) if B.dim() == 3 else dB
    dC = dC.squeeze(1) if C.dim() == 3 else dC
    return (du, ddelta.to(delta.dtype), dA, dB.to(B.dtype), dC.to(C.dtype), dD, ddelta_bias,
            rest[0] if z is not None else None)
