"""Mamba2's SSD entry points with mamba_ssm's exact signatures and return values, on any device.

Drop-in for mamba_ssm.ops.triton.ssd_combined.mamba_chunk_scan_combined and
mamba_split_conv1d_scan_combined (mamba-ssm 2.2.4 - 2.3.x): same arguments, same shapes and
dtypes out (out in x's dtype, final states in fp32, varlen states in C's dtype), gradients for
every tensor input. Arithmetic runs in fp32 (fp64 for fp64 inputs) with autocast off, as the
Triton kernels do; only the output projection follows the caller's autocast.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F

from jetson_mamba.ops import _library
from jetson_mamba.ops.backend import choice_in_effect, select_backend
from jetson_mamba.ops.causal_conv1d.autograd import causal_conv1d_fn
from jetson_mamba.ops.ssd.layernorm_gated import rmsnorm_fn
from jetson_mamba.ops.ssd.naive import discretize_dt
from jetson_mamba.ops.ssd.validate import check, compute_dtype

Result = Union[torch.Tensor, Tuple[torch.Tensor, ...]]


def _shape(t: Optional[torch.Tensor]) -> Optional[Tuple[int, ...]]:
    return tuple(t.shape) if t is not None else None


def _check_scan_inputs(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int,
    D: Optional[torch.Tensor],
    z: Optional[torch.Tensor],
    dt_bias: Optional[torch.Tensor],
    initial_states: Optional[torch.Tensor],
    seq_idx: Optional[torch.Tensor],
) -> None:
    layout = ("x (batch, seqlen, nheads, headdim), dt (batch, seqlen, nheads), A (nheads,), "
              "B and C (batch, seqlen, ngroups, dstate) with nheads % ngroups == 0")
    check(x.dim() == 4, lambda: f"x has shape {_shape(x)}, expected (batch, seqlen, nheads, headdim)", f"pass {layout}")
    batch, seqlen, nheads, headdim = x.shape
    check(seqlen >= 1, "x has seqlen 0", "pass at least one time step")
    check(isinstance(chunk_size, int) and chunk_size >= 1, lambda: f"chunk_size={chunk_size!r} is not a positive int",
          "pass chunk_size as a positive int (Mamba2 uses 256)")
    check(_shape(dt) == (batch, seqlen, nheads), lambda: f"dt has shape {_shape(dt)}, expected {(batch, seqlen, nheads)}",
          f"pass {layout}")
    check(_shape(A) == (nheads,), lambda: f"A has shape {_shape(A)}, expected ({nheads},)", f"pass {layout}")
    check(B.dim() == 4 and tuple(B.shape[:2]) == (batch, seqlen) and B.shape[2] >= 1 and nheads % B.shape[2] == 0,
          lambda: f"B has shape {_shape(B)}, expected ({batch}, {seqlen}, ngroups, dstate) with {nheads} % ngroups == 0",
          f"pass {layout}")
    check(_shape(C) == _shape(B), lambda: f"C has shape {_shape(C)}, B has {_shape(B)}", "pass B and C of the same shape")
    check(z is None or _shape(z) == _shape(x), lambda: f"z has shape {_shape(z)}, x has {_shape(x)}",
          "pass z of exactly x's shape, or None")
    check(D is None or _shape(D) in ((nheads, headdim), (nheads,)),
          lambda: f"D has shape {_shape(D)}, expected ({nheads}, {headdim}) or ({nheads},)", "pass D per head (or per channel), or None")
    check(dt_bias is None or _shape(dt_bias) == (nheads,), lambda: f"dt_bias has shape {_shape(dt_bias)}, expected ({nheads},)",
          "pass one dt_bias per head, or None")
    check(initial_states is None or _shape(initial_states) == (batch, nheads, headdim, B.shape[3]),
          lambda: f"initial_states has shape {_shape(initial_states)}, expected {(batch, nheads, headdim, B.shape[3])}",
          "pass initial_states as (batch, nheads, headdim, dstate), or None")
    check(seq_idx is None or (_shape(seq_idx) == (batch, seqlen) and not seq_idx.is_floating_point()),
          lambda: f"seq_idx has shape {_shape(seq_idx)} and dtype {seq_idx.dtype if seq_idx is not None else None}, "
          f"expected integers of shape {(batch, seqlen)}", "pass seq_idx as an int32 tensor (batch, seqlen), or None")


def _varlen_states(
    module: object,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    chunk_size: int,
    initial_states: Optional[torch.Tensor],
    cu_seqlens: torch.Tensor,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """Final state of each packed sequence [cu_seqlens[i], cu_seqlens[i+1]) of batch row 0, in out_dtype.

    Each sequence is scanned on its own from a zero state (the first one, when it starts at 0,
    from initial_states), so the result does not depend on how the sequences fall into chunks.
    The offsets are checked eagerly only (one read of cu_seqlens on the host: a sync on a GPU, the
    only one; the states themselves read none): a traced graph cannot read them.
    """
    check(cu_seqlens.dim() == 1 and cu_seqlens.shape[0] >= 2 and not cu_seqlens.is_floating_point(),
          lambda: f"cu_seqlens has shape {_shape(cu_seqlens)} and dtype {cu_seqlens.dtype}",
          "pass cu_seqlens = [0, len0, len0 + len1, ..., seqlen] (int32)")
    if not _library.tracing():
        bounds = [int(v) for v in cu_seqlens.tolist()]
        check(bounds[0] >= 0 and bounds[-1] <= x.shape[1] and all(a <= b for a, b in zip(bounds, bounds[1:])),
              lambda: f"cu_seqlens {bounds} is not a non-decreasing list of offsets within seqlen {x.shape[1]}",
              "pass cu_seqlens = [0, len0, len0 + len1, ..., seqlen] (int32)")
        states = module.varlen_states(x, dt, A, B, chunk_size, initial_states, cu_seqlens)
    else:  # one opaque op, as the chunk scan (ops._library)
        states = torch.ops.jetson_mamba.ssd_varlen_states(x, dt, A, B, chunk_size, initial_states, cu_seqlens,
                                                          choice_in_effect())
    return states.to(out_dtype)


def mamba_chunk_scan_combined(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int,
    D: Optional[torch.Tensor] = None,
    z: Optional[torch.Tensor] = None,
    dt_bias: Optional[torch.Tensor] = None,
    initial_states: Optional[torch.Tensor] = None,
    seq_idx: Optional[torch.Tensor] = None,
    cu_seqlens: Optional[torch.Tensor] = None,
    dt_softplus: bool = False,
    dt_limit: Tuple[float, float] = (0.0, float("inf")),
    return_final_states: bool = False,
    return_varlen_states: bool = False,
) -> Result:
    """y_t = C_t . h_t (+ D x_t) (* silu(z_t)), h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T.

    x, z: (batch, seqlen, nheads, headdim); dt: (batch, seqlen, nheads); A: (nheads,);
    B, C: (batch, seqlen, ngroups, dstate); D: (nheads, headdim) or (nheads,); dt_bias: (nheads,);
    initial_states: (batch, nheads, headdim, dstate); seq_idx: (batch, seqlen) restarts the state
    where it changes; cu_seqlens: (nseq + 1,) with return_varlen_states (batch must be 1).
    Returns out, then final_states if return_final_states, then varlen_states if
    return_varlen_states, exactly as upstream.
    """
    _check_scan_inputs(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx)
    check(not return_varlen_states or (cu_seqlens is not None and x.shape[0] == 1),
          "return_varlen_states needs cu_seqlens and batch 1",
          "pack the sequences into one batch row and pass cu_seqlens (nseq + 1,), or drop return_varlen_states")
    _, module = select_backend("ssd", x.device, x.dtype)
    f = compute_dtype(x.dtype)
    with torch.autocast(device_type=x.device.type, enabled=False):
        dtf = discretize_dt(dt.to(f), dt_bias.to(f) if dt_bias is not None else None, dt_softplus, dt_limit)
        xf, Af, Bf, Cf = x.to(f), A.to(f), B.to(f), C.to(f)
        init = initial_states.to(f) if initial_states is not None else None
        if _library.tracing():  # one opaque op: the backend's padding and blocks follow seqlen (ops._library)
            y, final_states = torch.ops.jetson_mamba.ssd_chunk_scan_fwd(xf, dtf, Af, Bf, Cf, chunk_size, init, seq_idx,
                                                                       choice_in_effect())
        else:
            y, final_states = module.chunk_scan(xf, dtf, Af, Bf, Cf, chunk_size, init, seq_idx)
        if D is not None:
            Df = D.to(f)
            y = y + xf * (Df if Df.dim() == 2 else Df[:, None])
        if z is not None:
            y = y * F.silu(z.to(f))
        out = y.to(x.dtype)
        results = [out]
        if return_final_states:
            results.append(final_states)
        if return_varlen_states:
            results.append(_varlen_states(module, xf, dtf, Af, Bf, chunk_size, init, cu_seqlens, C.dtype))
    return results[0] if len(results) == 1 else tuple(results)


def mamba_split_conv1d_scan_combined(
    zxbcdt: torch.Tensor,
    conv1d_weight: torch.Tensor,
    conv1d_bias: Optional[torch.Tensor],
    dt_bias: torch.Tensor,
    A: torch.Tensor,
    D: torch.Tensor,
    chunk_size: int,
    initial_states: Optional[torch.Tensor] = None,
    seq_idx: Optional[torch.Tensor] = None,
    dt_limit: Tuple[float, float] = (0.0, float("inf")),
    return_final_states: bool = False,
    activation: Optional[str] = "silu",
    rmsnorm_weight: Optional[torch.Tensor] = None,
    rmsnorm_eps: float = 1e-6,
    outproj_weight: Optional[torch.Tensor] = None,
    outproj_bias: Optional[torch.Tensor] = None,
    headdim: Optional[int] = None,
    ngroups: int = 1,
    norm_before_gate: bool = True,
) -> Result:
    """Mamba2's whole mixer after in_proj: split, causal conv1d, SSD, gated RMSNorm, out_proj.

    zxbcdt: (batch, seqlen, 2 * d_nonssm + 2 * dim + 2 * ngroups * dstate + nheads), ordered
    [z0 x0 | z | x B C | dt]; the d_nonssm part is a SwiGLU MLP silu(z0) * x0 placed before the
    SSM output. conv1d_weight: (dim + 2 * ngroups * dstate, width); D: (nheads, headdim) or
    (nheads,) with headdim given. Returns out (or (out, final_states) with return_final_states).
    """
    check(activation in (None, "silu", "swish"), lambda: f"activation={activation!r} is not supported",
          'pass activation="silu" (or "swish", or None)')
    check(zxbcdt.dim() == 3, lambda: f"zxbcdt has shape {_shape(zxbcdt)}, expected (batch, seqlen, channels)",
          "pass in_proj's output as (batch, seqlen, channels)")
    if D.dim() == 1:
        check(headdim is not None, "D is per head (1-D) but headdim is None", "pass headdim= (Mamba2 passes self.headdim)")
        nheads = D.shape[0]
    else:
        nheads, headdim = D.shape
    batch, seqlen, channels = zxbcdt.shape
    dim = nheads * headdim
    check(ngroups >= 1 and nheads % ngroups == 0, lambda: f"nheads={nheads} is not a multiple of ngroups={ngroups}",
          "pass ngroups dividing the number of heads")
    dstate = (conv1d_weight.shape[0] - dim) // ngroups // 2
    check(conv1d_weight.dim() == 2 and dstate >= 1 and conv1d_weight.shape[0] == dim + 2 * ngroups * dstate,
          lambda: f"conv1d_weight has shape {_shape(conv1d_weight)}, which is not (dim + 2 * ngroups * dstate, width) "
          f"for dim={dim}, ngroups={ngroups}", "pass the depthwise conv weight as (channels, width), e.g. "
          "rearrange(conv1d.weight, 'd 1 w -> d w')")
    rest = channels - 2 * dim - 2 * ngroups * dstate - nheads
    check(rest >= 0 and rest % 2 == 0,
          lambda: f"zxbcdt has {channels} channels; 2 * d_nonssm + 2 * {dim} + 2 * {ngroups} * {dstate} + {nheads} cannot match",
          "pass in_proj's full output [z0 x0 | z | x B C | dt] for these nheads, headdim, ngroups and dstate")
    d_nonssm = rest // 2
    check(_shape(dt_bias) == (nheads,) and _shape(A) == (nheads,),
          lambda: f"dt_bias has shape {_shape(dt_bias)} and A {_shape(A)}, expected ({nheads},)", "pass one value per head")
    check(rmsnorm_weight is None or _shape(rmsnorm_weight) == (dim,),
          lambda: f"rmsnorm_weight has shape {_shape(rmsnorm_weight)}, expected ({dim},)", "pass norm.weight, or None")
    check(outproj_weight is not None or outproj_bias is None, "outproj_bias given without outproj_weight",
          "pass outproj_weight too, or drop outproj_bias")
    zx0, z, xBC, dt = torch.split(zxbcdt, [2 * d_nonssm, dim, dim + 2 * ngroups * dstate, nheads], dim=-1)
    with torch.autocast(device_type=zxbcdt.device.type, enabled=False):
        xBC = causal_conv1d_fn(xBC.transpose(1, 2), conv1d_weight, conv1d_bias, seq_idx=seq_idx,
                               activation="silu" if activation is not None else None).transpose(1, 2)
        x, B, C = torch.split(xBC, [dim, ngroups * dstate, ngroups * dstate], dim=-1)
        z4 = z.reshape(batch, seqlen, nheads, headdim)
        res = mamba_chunk_scan_combined(
            x.reshape(batch, seqlen, nheads, headdim), dt, A,
            B.reshape(batch, seqlen, ngroups, dstate), C.reshape(batch, seqlen, ngroups, dstate),
            chunk_size, D=D, z=z4 if rmsnorm_weight is None else None, dt_bias=dt_bias,
            initial_states=initial_states, seq_idx=seq_idx, dt_softplus=True, dt_limit=dt_limit,
            return_final_states=return_final_states)
        y, final_states = res if return_final_states else (res, None)
        y = y.reshape(batch, seqlen, dim)
        if rmsnorm_weight is not None:
            y = rmsnorm_fn(y, rmsnorm_weight, None, z=z, eps=rmsnorm_eps, group_size=dim // ngroups,
                           norm_before_gate=norm_before_gate)
        if d_nonssm > 0:
            z0, x0 = zx0.float().chunk(2, dim=-1)
            y = torch.cat([(F.silu(z0) * x0).to(y.dtype), y], dim=-1)
    out = F.linear(y, outproj_weight, outproj_bias) if outproj_weight is not None else y
    return (out, final_states) if return_final_states else out

