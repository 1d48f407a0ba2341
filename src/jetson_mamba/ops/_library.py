"""The scan and the conv as PyTorch custom ops (`torch.ops.jetson_mamba.*`), so that torch.compile
(fullgraph, CUDA graphs) and torch.export see one opaque call with a known output, instead of tracing
into the backend dispatch (a graph break: "Missing bytecode handler").

Each op runs the dispatched backend inside its implementation; its fake implementation gives the
outputs' shapes, dtypes and layouts without running anything; the forward ops carry their backward
(`register_autograd`). Custom ops cannot return None: an absent output (final states not asked for,
dD without D, ...) is an empty tensor that the public functions turn back into None.

Mamba2's chunked SSD (`ssd_chunk_scan_fwd`/`_bwd`, and `ssd_varlen_states`) is one too: its backend pads
seqlen to whole chunks and loops over blocks of them, so traced inline it ties the graph to one seqlen
(export's Dim fails).

`torch.library.custom_op` exists from torch 2.4; JetPack 5/6 ship 2.0-2.5. Where it is missing, or
with JETSON_MAMBA_CUSTOM_OPS=0, `ENABLED` is False and `jetson_mamba.ops` keeps its autograd.Function
path (eager only). Triton kernels stay opaque (no `triton_op`): the dispatch, which may pick any
backend per call, lives inside the op. The scan and conv ops take the backend choice as their last argument
(`str backend`, use_backend's form, "" automatic): the caller passes `choice_in_effect()`, the forward's
autograd context keeps it, and the backward op runs under it on whichever thread autograd runs it.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any, List, Optional, Sequence, Tuple

import torch

from jetson_mamba.ops.backend import choice_in_effect, select_backend, use_backend

ENV_VAR = "JETSON_MAMBA_CUSTOM_OPS"
NAMESPACE = "jetson_mamba"
_NEEDED = ("custom_op", "register_fake", "register_autograd")


class OpsConvBackend:
    """The causal_conv1d backend contract over the custom ops, for the stand-ins under torch.compile /
    torch.export (standins._conv.backend_for): functional results, copied into the caller's buffers."""

    @staticmethod
    def causal_conv1d_forward(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                              seq_idx: Optional[torch.Tensor], initial_states: Optional[torch.Tensor],
                              return_final_states: bool, silu: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        out, final = torch.ops.jetson_mamba.causal_conv1d_fwd(x, weight, bias, seq_idx, initial_states,
                                                              bool(return_final_states), bool(silu),
                                                              choice_in_effect())
        return out, (final if return_final_states else None)

    @staticmethod
    def causal_conv1d_backward(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                               dout: torch.Tensor, seq_idx: Optional[torch.Tensor],
                               initial_states: Optional[torch.Tensor], dfinal_states: Optional[torch.Tensor],
                               silu: bool) -> Tuple[Optional[torch.Tensor], ...]:
        dx, dw, db, dinit = torch.ops.jetson_mamba.causal_conv1d_bwd(
            x, weight, bias, dout, seq_idx, initial_states, dfinal_states, bool(silu), choice_in_effect())
        return dx, dw, (db if bias is not None else None), (dinit if initial_states is not None else None)

    @staticmethod
    def causal_conv1d_update(x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor,
                             bias: Optional[torch.Tensor], silu: bool, cache_seqlens: Optional[torch.Tensor],
                             conv_state_indices: Optional[torch.Tensor]) -> torch.Tensor:
        return torch.ops.jetson_mamba.causal_conv1d_update(x, conv_state, weight, bias, bool(silu), cache_seqlens,
                                                           conv_state_indices)


def supports_custom_ops(library: ModuleType) -> bool:
    """Whether this torch.library has the custom-op API used here (torch >= 2.4)."""
    return all(hasattr(library, name) for name in _NEEDED)


def custom_ops_wanted(library: ModuleType, environ: Any = os.environ) -> bool:
    """Custom ops where torch has them, unless JETSON_MAMBA_CUSTOM_OPS=0."""
    return supports_custom_ops(library) and environ.get(ENV_VAR, "1") != "0"


ENABLED = custom_ops_wanted(torch.library)
_is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)


def tracing() -> bool:
    """Whether torch.compile / torch.export is tracing this call and the custom ops exist: the stand-ins
    then call the functional ops (and copy into the caller's buffers), instead of the backends that
    write into those buffers directly (eager's path, one copy less)."""
    return ENABLED and _is_compiling is not None and _is_compiling()


def empty(device: torch.device) -> torch.Tensor:
    """The placeholder for an absent output, on the op's device (a CPU tensor would keep a CUDA op out
    of CUDA graphs)."""
    return torch.empty(0, device=device)


def _opt(t: torch.Tensor) -> Optional[torch.Tensor]:
    """An op's empty placeholder back to None."""
    return t if t.numel() or t.dim() != 1 else None


def _channel_last(x: torch.Tensor) -> bool:
    return x.stride(1) == 1 and x.stride(2) != 1


def _new_like(x: torch.Tensor, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """A new (batch, dim, L) tensor in x's layout (channel-last or contiguous), as the conv kernels
    return it."""
    dtype = dtype or x.dtype
    if _channel_last(x):
        b, d, n = x.shape
        return torch.empty((b, n, d), dtype=dtype, device=x.device).transpose(1, 2)
    return torch.empty(x.shape, dtype=dtype, device=x.device)


def as_layout(t: Optional[torch.Tensor], like: Optional[torch.Tensor], device: torch.device,
              channel_last: bool = False) -> torch.Tensor:
    """A backend's result in the layout and dtype the fake implementation promised (a no-op when it
    already is); None (no such result) as the empty placeholder."""
    if t is None or like is None:
        return empty(device)
    t = t.to(like.dtype)
    if channel_last:
        return t if t.stride(1) == 1 else t.transpose(1, 2).contiguous().transpose(1, 2)
    return t.contiguous()


def distinct(outputs: Sequence[torch.Tensor], inputs: Sequence[Optional[torch.Tensor]]) -> Tuple[torch.Tensor, ...]:
    """A custom op's outputs may alias neither its inputs nor each other, and are whole tensors as their fake
    implementations promise; a backend may return views of one buffer (the Triton conv's dweight and dbias,
    the Triton scan's dA, dD and ddelta_bias): those are copied."""
    seen = {t.untyped_storage().data_ptr() for t in inputs if t is not None and t.numel()}
    result = []
    for t in outputs:
        if t.numel():
            ptr = t.untyped_storage().data_ptr()
            if ptr in seen or t.storage_offset() or t.untyped_storage().nbytes() > t.numel() * t.element_size():
                t = t.clone()
                ptr = t.untyped_storage().data_ptr()
            seen.add(ptr)
        result.append(t)
    return tuple(result)


def new_grads(inputs: Sequence[Optional[torch.Tensor]], device: torch.device) -> List[torch.Tensor]:
    """Gradients as the fake implementations promise them: new, contiguous, each like its input."""
    return [torch.empty(t.shape, dtype=t.dtype, device=t.device) if t is not None else empty(device)
            for t in inputs]


def grads_as_promised(grads: Sequence[Optional[torch.Tensor]], inputs: Sequence[Optional[torch.Tensor]],
                      device: torch.device) -> List[torch.Tensor]:
    """A backend's gradients, each in its input's dtype and contiguous (empty where there is none)."""
    return [as_layout(g, t, device) for g, t in zip(grads, inputs)]


if ENABLED:
    lib = torch.library

    # ---- selective scan -------------------------------------------------------------------------
    @lib.custom_op(f"{NAMESPACE}::selective_scan_fwd", mutates_args=(), schema=(
        "(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, Tensor? delta_bias, "
        "bool delta_softplus, str backend=\"\") -> (Tensor, Tensor)"))
    def selective_scan_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend=""):  # type: ignore[no-untyped-def]
        """(out, or out * silu(z) with z; last state fp32 (batch, dim, dstate))."""
        with use_backend(backend):
            chosen = select_backend("selective_scan", u.device, u.dtype).module
            out, out_z, last = chosen.selective_scan_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
        result = out if z is None else out_z
        return as_layout(result, u, u.device), last.to(torch.float32).contiguous()

    @selective_scan_fwd.register_fake
    def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend=""):  # type: ignore[no-untyped-def]
        batch, dim, n = u.shape[0], u.shape[1], A.shape[1]
        return (torch.empty(u.shape, dtype=u.dtype, device=u.device),
                torch.empty((batch, dim, n), dtype=torch.float32, device=u.device))

    @lib.custom_op(f"{NAMESPACE}::selective_scan_bwd", mutates_args=(), schema=(
        "(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, Tensor? delta_bias, "
        "bool delta_softplus, Tensor dout, str backend=\"\") -> "
        "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"))
    def selective_scan_bwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, dout, backend=""):  # type: ignore[no-untyped-def]
        """(du, ddelta, dA, dB, dC, dD, ddelta_bias, dz), each like its input (empty where the input is None)."""
        with use_backend(backend):
            chosen = select_backend("selective_scan", u.device, u.dtype).module
            grads = chosen.selective_scan_backward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, dout)
        inputs = (u, delta, A, B, C, D, delta_bias, z)
        return distinct(grads_as_promised(grads, inputs, u.device), inputs + (dout,))

    @selective_scan_bwd.register_fake
    def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, dout, backend=""):  # type: ignore[no-untyped-def]
        return tuple(new_grads((u, delta, A, B, C, D, delta_bias, z), u.device))

    def _scan_setup(ctx: Any, inputs: Tuple[Any, ...], output: Any) -> None:
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, ctx.backend = inputs
        ctx.delta_softplus = delta_softplus
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias)

    def _scan_backward(ctx: Any, dout: torch.Tensor, _dlast: Any) -> Tuple[Optional[torch.Tensor], ...]:
        u, delta, A, B, C, D, z, delta_bias = ctx.saved_tensors
        du, ddelta, dA, dB, dC, dD, ddb, dz = selective_scan_bwd(
            u, delta, A, B, C, D, z, delta_bias, ctx.delta_softplus, dout.contiguous(), ctx.backend)
        return (du, ddelta, dA, dB, dC, dD if D is not None else None, dz if z is not None else None,
                ddb if delta_bias is not None else None, None, None)

    selective_scan_fwd.register_autograd(_scan_backward, setup_context=_scan_setup)

    # ---- causal conv1d --------------------------------------------------------------------------
    @lib.custom_op(f"{NAMESPACE}::causal_conv1d_fwd", mutates_args=(), schema=(
        "(Tensor x, Tensor weight, Tensor? bias, Tensor? seq_idx, Tensor? initial_states, "
        "bool return_final_states, bool silu, str backend=\"\") -> (Tensor, Tensor)"))
    def causal_conv1d_fwd(x, weight, bias, seq_idx, initial_states, return_final_states, silu, backend=""):  # type: ignore[no-untyped-def]
        """(out in x's layout, final states (batch, dim, width - 1) or empty)."""
        with use_backend(backend):
            chosen = select_backend("causal_conv1d", x.device, x.dtype).module
            out, final = chosen.causal_conv1d_forward(x, weight, bias, seq_idx, initial_states,
                                                      return_final_states, silu)
        final_like = torch.empty(0, dtype=x.dtype, device=x.device) if return_final_states else None
        return as_layout(out, x, x.device, _channel_last(x)), as_layout(final, final_like, x.device)

    @causal_conv1d_fwd.register_fake
    def _(x, weight, bias, seq_idx, initial_states, return_final_states, silu, backend=""):  # type: ignore[no-untyped-def]
        final = (torch.empty((x.shape[0], x.shape[1], weight.shape[1] - 1), dtype=x.dtype, device=x.device)
                 if return_final_states else empty(x.device))
        return _new_like(x), final

    @lib.custom_op(f"{NAMESPACE}::causal_conv1d_bwd", mutates_args=(), schema=(
        "(Tensor x, Tensor weight, Tensor? bias, Tensor dout, Tensor? seq_idx, Tensor? initial_states, "
        "Tensor? dfinal_states, bool silu, str backend=\"\") -> (Tensor, Tensor, Tensor, Tensor)"))
    def causal_conv1d_bwd(x, weight, bias, dout, seq_idx, initial_states, dfinal_states, silu, backend=""):  # type: ignore[no-untyped-def]
        """(dx in x's layout, dweight, dbias or empty, dinitial_states or empty)."""
        with use_backend(backend):
            chosen = select_backend("causal_conv1d", x.device, x.dtype).module
            dx, dw, db, dinit = chosen.causal_conv1d_backward(x, weight, bias, dout, seq_idx, initial_states,
                                                              dfinal_states, silu)
        return distinct((as_layout(dx, x, x.device, _channel_last(x)),
                          *grads_as_promised((dw, db, dinit), (weight, bias, initial_states), x.device)),
                         (x, weight, bias, dout, seq_idx, initial_states, dfinal_states))

    @causal_conv1d_bwd.register_fake
    def _(x, weight, bias, dout, seq_idx, initial_states, dfinal_states, silu, backend=""):  # type: ignore[no-untyped-def]
        return (_new_like(x), *new_grads((weight, bias, initial_states), x.device))

    def _conv_setup(ctx: Any, inputs: Tuple[Any, ...], output: Any) -> None:
        x, weight, bias, seq_idx, initial_states, return_final_states, silu, ctx.backend = inputs
        ctx.silu = silu
        ctx.return_final_states = return_final_states
        ctx.save_for_backward(x, weight, bias, seq_idx, initial_states)

    def _conv_backward(ctx: Any, dout: torch.Tensor, dfinal: Optional[torch.Tensor]
                       ) -> Tuple[Optional[torch.Tensor], ...]:
        x, weight, bias, seq_idx, initial_states = ctx.saved_tensors
        if dout.stride(2) != 1 and dout.stride(1) != 1:
            dout = dout.contiguous()
        dx, dw, db, dinit = causal_conv1d_bwd(x, weight, bias, dout, seq_idx, initial_states,
                                              dfinal if ctx.return_final_states else None, ctx.silu, ctx.backend)
        return (dx, dw, db if bias is not None else None, None,
                dinit if initial_states is not None else None, None, None, None)

    causal_conv1d_fwd.register_autograd(_conv_backward, setup_context=_conv_setup)

    # ---- SSD chunk scan (Mamba2) ---------------------------------------------------------------
    # Opaque to the tracers: the backend pads seqlen to whole chunks and loops over blocks of them (its
    # memory bound), which a graph with a symbolic seqlen (compile dynamic=True, export's Dim) cannot follow.
    @lib.custom_op(f"{NAMESPACE}::ssd_chunk_scan_fwd", mutates_args=(), schema=(
        "(Tensor x, Tensor dt, Tensor A, Tensor B, Tensor C, int chunk_size, Tensor? initial_states, "
        "Tensor? seq_idx, str backend=\"\") -> (Tensor, Tensor)"))
    def ssd_chunk_scan_fwd(x, dt, A, B, C, chunk_size, initial_states, seq_idx, backend=""):  # type: ignore[no-untyped-def]
        """(y (batch, seqlen, nheads, headdim), final state (batch, nheads, headdim, dstate)), in x's dtype."""
        with use_backend(backend), torch.no_grad():
            chosen = select_backend("ssd", x.device, x.dtype).module
            y, final = chosen.chunk_scan(x, dt, A, B, C, chunk_size, initial_states, seq_idx)
        return distinct((y.contiguous(), final.contiguous()), (x, dt, A, B, C, initial_states, seq_idx))

    @ssd_chunk_scan_fwd.register_fake
    def _(x, dt, A, B, C, chunk_size, initial_states, seq_idx, backend=""):  # type: ignore[no-untyped-def]
        batch, _, nheads, headdim = x.shape
        return (torch.empty(x.shape, dtype=x.dtype, device=x.device),
                torch.empty((batch, nheads, headdim, B.shape[3]), dtype=x.dtype, device=x.device))

    @lib.custom_op(f"{NAMESPACE}::ssd_chunk_scan_bwd", mutates_args=(), schema=(
        "(Tensor x, Tensor dt, Tensor A, Tensor B, Tensor C, int chunk_size, Tensor? initial_states, "
        "Tensor? seq_idx, Tensor dy, Tensor dfinal, str backend=\"\") -> "
        "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"))
    def ssd_chunk_scan_bwd(x, dt, A, B, C, chunk_size, initial_states, seq_idx, dy, dfinal, backend=""):  # type: ignore[no-untyped-def]
        """(dx, ddt, dA, dB, dC, dinitial_states or empty): the backend's chunk_scan is differentiable (the
        ssd contract), so this recomputes it under autograd, block by block as its eager backward does."""
        inputs = (x, dt, A, B, C, initial_states)
        with use_backend(backend):
            chosen = select_backend("ssd", x.device, x.dtype).module
            given = [t for t in inputs if t is not None]  # initial_states, last, may be None
            # torch.func, not autograd.grad: an op's implementation runs below autograd (no grad_fn there)
            _, vjp = torch.func.vjp(lambda *t: chosen.chunk_scan(*t[:5], chunk_size, t[5] if len(t) > 5 else None,
                                                                 seq_idx), *given)
            grads = list(vjp((dy, dfinal))) + [None] * (len(inputs) - len(given))
        return distinct(grads_as_promised(grads, inputs, x.device), inputs + (seq_idx, dy, dfinal))

    @ssd_chunk_scan_bwd.register_fake
    def _(x, dt, A, B, C, chunk_size, initial_states, seq_idx, dy, dfinal, backend=""):  # type: ignore[no-untyped-def]
        return tuple(new_grads((x, dt, A, B, C, initial_states), x.device))

    def _ssd_setup(ctx: Any, inputs: Tuple[Any, ...], output: Any) -> None:
        x, dt, A, B, C, ctx.chunk_size, initial_states, seq_idx, ctx.backend = inputs
        ctx.save_for_backward(x, dt, A, B, C, initial_states, seq_idx)

    def _ssd_backward(ctx: Any, dy: torch.Tensor, dfinal: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        x, dt, A, B, C, initial_states, seq_idx = ctx.saved_tensors
        dx, ddt, dA, dB, dC, dinit = ssd_chunk_scan_bwd(x, dt, A, B, C, ctx.chunk_size, initial_states, seq_idx,
                                                        dy.contiguous(), dfinal.contiguous(), ctx.backend)
        return dx, ddt, dA, dB, dC, None, dinit if initial_states is not None else None, None, None

    ssd_chunk_scan_fwd.register_autograd(_ssd_backward, setup_context=_ssd_setup)

    # The state at the end of each packed sequence (return_varlen_states): opaque for the same reason.
    # Forward only, as upstream (its backward refuses return_varlen_states); eagerly it is differentiable.
    @lib.custom_op(f"{NAMESPACE}::ssd_varlen_states", mutates_args=(), schema=(
        "(Tensor x, Tensor dt, Tensor A, Tensor B, int chunk_size, Tensor? initial_states, Tensor cu_seqlens, "
        "str backend=\"\") -> Tensor"))
    def ssd_varlen_states(x, dt, A, B, chunk_size, initial_states, cu_seqlens, backend=""):  # type: ignore[no-untyped-def]
        """(nseq, nheads, headdim, dstate) in x's dtype."""
        with use_backend(backend), torch.no_grad():
            chosen = select_backend("ssd", x.device, x.dtype).module
            return chosen.varlen_states(x, dt, A, B, chunk_size, initial_states, cu_seqlens).contiguous()

    @ssd_varlen_states.register_fake
    def _(x, dt, A, B, chunk_size, initial_states, cu_seqlens, backend=""):  # type: ignore[no-untyped-def]
        return x.new_empty((cu_seqlens.shape[0] - 1, x.shape[2], x.shape[3], B.shape[3]))

    @lib.custom_op(f"{NAMESPACE}::causal_conv1d_update", mutates_args=("conv_state",), schema=(
        "(Tensor x, Tensor(a!) conv_state, Tensor weight, Tensor? bias, bool silu, Tensor? cache_seqlens, "
        "Tensor? conv_state_indices) -> Tensor"))
    def causal_conv1d_update_op(x, conv_state, weight, bias, silu, cache_seqlens, conv_state_indices):  # type: ignore[no-untyped-def]
        """The decode step: out like x; conv_state updated in place."""
        _, backend = select_backend("causal_conv1d", x.device, x.dtype)
        out = backend.causal_conv1d_update(x, conv_state, weight, bias, silu, cache_seqlens, conv_state_indices)
        return as_layout(out, x, x.device, _channel_last(x))

    @causal_conv1d_update_op.register_fake
    def _(x, conv_state, weight, bias, silu, cache_seqlens, conv_state_indices):  # type: ignore[no-untyped-def]
        return _new_like(x)
