"""What the selective-scan stand-ins share: dispatch, chunk states x, in-place results."""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

from jetson_mamba.ops import _library
from jetson_mamba.ops.backend import choice_in_effect, select_backend, use_backend
from jetson_mamba.ops.selective_scan.cuda import X_CHUNK
from jetson_mamba.ops.standins._buffers import buffers
from jetson_mamba.ops.standins._choice import recalled, remember


def n_chunks(L: int) -> int:
    return -(-L // X_CHUNK)


def chunk_states(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                 delta_bias: Optional[torch.Tensor], delta_softplus: bool, last_state: torch.Tensor
                 ) -> torch.Tensor:
    """x (batch, dim, n_chunks, 2 * dstate) for a backend that cannot return it (a registered one):
    the torch backend's, with that backend's own last state, so a wrong kernel still shows in x."""
    from jetson_mamba.ops.selective_scan import torch as portable

    x = portable.selective_scan_forward_x(u, delta, A, B, C, None, None, delta_bias, delta_softplus, X_CHUNK)[2]
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
    """(out, out_z or None, x) through the dispatched selective-scan backend: in one pass where the
    backend keeps the chunk states itself (selective_scan_forward_x), else with a second scan for x.
    The choice in effect goes with x, for the backward (`_choice`). Under torch.compile / torch.export:
    one custom op (jetson_mamba::selective_scan_fwd_x)."""
    if _library.tracing():
        out, out_z, x = torch.ops.jetson_mamba.selective_scan_fwd_x(u, delta, A, B, C, D, z, delta_bias,
                                                                    bool(delta_softplus), choice_in_effect())
        return out, (out_z if z is not None else None), x
    backend = select_backend("selective_scan", u.device, u.dtype)
    if backend.has("selective_scan_forward_x"):
        out, out_z, x = backend.module.selective_scan_forward_x(u, delta, A, B, C, D, z, delta_bias,
                                                                delta_softplus, X_CHUNK)
    else:
        out, out_z, last = backend.module.selective_scan_forward(u, delta, A, B, C, D, z, delta_bias,
                                                                 delta_softplus)
        x = chunk_states(u, delta, A, B, C, delta_bias, delta_softplus, last)
    remember(x)
    return out, out_z, x


def backward(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
             D: Optional[torch.Tensor], z: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor],
             dout: torch.Tensor, x: Optional[torch.Tensor], delta_softplus: bool) -> List[Optional[torch.Tensor]]:
    """[du, ddelta, dA, dB, dC, dD, ddelta_bias, dz] through the dispatched backend (x is only checked)."""
    return backward_out_z(u, delta, A, B, C, D, z, delta_bias, dout, x, delta_softplus, None, None)[0]


def backward_out_z(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: Optional[torch.Tensor], z: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor],
                   dout: torch.Tensor, x: Optional[torch.Tensor], delta_softplus: bool, out: Optional[torch.Tensor],
                   dz: Optional[torch.Tensor]) -> Tuple[List[Optional[torch.Tensor]], Optional[torch.Tensor]]:
    """backward, plus out_z = out * silu(z) when `out` is given (mamba_ssm's recompute_out_z): written by
    the backward kernel where the backend has one that does (selective_scan_backward_out_z), else
    computed from `out` in fp32. `dz`: the caller's buffer, which a backend that writes into buffers
    fills directly (the dz returned is then that buffer). Dispatched under the choice of the forward that
    made x (`_choice`)."""
    check_x(x, u, A)
    if _library.tracing():  # one custom op; the caller copies dz into its buffer
        *grads, out_z = torch.ops.jetson_mamba.selective_scan_bwd_x(
            u, delta, A, B, C, D, z, delta_bias, dout, x, bool(delta_softplus), out if z is not None else None,
            choice_in_effect())
        present = (D, delta_bias, z)
        return ([*grads[:5], *(g if t is not None else None for g, t in zip(grads[5:], present))],
                out_z if out is not None and z is not None else None)
    with recalled(x):
        backend = select_backend("selective_scan", u.device, u.dtype)
        args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, dout)
        into = buffers(backend.module, (u, delta, z, dout), dz=dz)
        if out is None or z is None:
            return list(backend.module.selective_scan_backward(*args, **into)), None
        if backend.has("selective_scan_backward_out_z"):
            grads, out_z = backend.module.selective_scan_backward_out_z(*args, **into)
            return list(grads), out_z if out_z.dtype is out.dtype else out_z.to(out.dtype)
        work = torch.promote_types(out.dtype, torch.float32)
        grads = backend.module.selective_scan_backward(*args, **into)
        return list(grads), (out.to(work) * F.silu(z.to(work))).to(out.dtype)


# The stand-ins' scan as custom ops (forward with x; backward with out_z, without a caller's dz), for
# torch.compile / torch.export (see ops._library); registered with the stand-ins that call them.
if _library.ENABLED:
    @torch.library.custom_op(f"{_library.NAMESPACE}::selective_scan_fwd_x", mutates_args=(), schema=(
        "(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, Tensor? delta_bias, "
        "bool delta_softplus, str backend=\"\") -> (Tensor, Tensor, Tensor)"))
    def selective_scan_fwd_x(u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend=""):  # type: ignore[no-untyped-def]
        """(out, out * silu(z) or empty, x (batch, dim, n_chunks, 2 * dstate) fp32): forward."""
        with use_backend(backend):
            out, out_z, x = forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
        return (_library.as_layout(out, u, u.device), _library.as_layout(out_z, z, u.device),
                x.to(torch.float32).contiguous())

    @selective_scan_fwd_x.register_fake
    def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend=""):  # type: ignore[no-untyped-def]
        batch, dim, L = u.shape
        out = torch.empty(u.shape, dtype=u.dtype, device=u.device)
        out_z = torch.empty(u.shape, dtype=u.dtype, device=u.device) if z is not None else _library.empty(u.device)
        return out, out_z, torch.empty((batch, dim, n_chunks(L), 2 * A.shape[1]), dtype=torch.float32,
                                       device=u.device)

    @torch.library.custom_op(f"{_library.NAMESPACE}::selective_scan_bwd_x", mutates_args=(), schema=(
        "(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, Tensor? delta_bias, "
        "Tensor dout, Tensor? x, bool delta_softplus, Tensor? out, str backend=\"\") -> "
        "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"))
    def selective_scan_bwd_x(u, delta, A, B, C, D, z, delta_bias, dout, x, delta_softplus, out, backend=""):  # type: ignore[no-untyped-def]
        """backward_out_z without a caller's dz: (du, ddelta, dA, dB, dC, dD, ddelta_bias, dz,
        out * silu(z)), empty where absent."""
        with use_backend(backend):
            grads, out_z = backward_out_z(u, delta, A, B, C, D, z, delta_bias, dout, x, delta_softplus, out, None)
        inputs = (u, delta, A, B, C, D, delta_bias, z)
        result = (*_library.grads_as_promised(grads, inputs, u.device),
                  _library.as_layout(out_z, out if z is not None else None, u.device))
        return _library.distinct(result, inputs + (dout, x, out))

    @selective_scan_bwd_x.register_fake
    def _(u, delta, A, B, C, D, z, delta_bias, dout, x, delta_softplus, out, backend=""):  # type: ignore[no-untyped-def]
        out_z = (torch.empty(out.shape, dtype=out.dtype, device=u.device) if out is not None and z is not None
                 else _library.empty(u.device))
        return (*_library.new_grads((u, delta, A, B, C, D, delta_bias, z), u.device), out_z)
