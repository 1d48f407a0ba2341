"""The 4-direction cross selective scan of SS2D (VMamba "v2" core), on the backend dispatch.

The four directions are: row-major, column-major, and both reversed. Their K * D channels go
through one call of `jetson_mamba.ops.selective_scan_fn` with grouped B/C of shape
(batch, K, N, L): channel k * D + d reads group k, which is exactly the layout VMamba's
`selective_scan_cuda_core` takes, so no argument re-mapping (or cropping) is needed. When VMamba's
real compiled core is installed (and no backend is forced), it is called directly instead.

While `torch.onnx.export` runs, the scan is computed by `export_selective_scan` instead: standard
ops only (a Loop over chunks, CumSum, Exp, MatMul), no custom op, so ONNX Runtime and TensorRT
can run the exported graph.
"""

from __future__ import annotations

import functools
import warnings
from typing import Callable, Optional

import torch
import torch.nn.functional as F

K_DIRECTIONS = 4
EXPORT_CHUNK = 8  # work per step grows with the chunk, Loop trips shrink: 8 balances both


def cross_scan(x: torch.Tensor) -> torch.Tensor:
    """(B, D, H, W) -> (B, 4, D, H*W): row-major, column-major, and both flipped."""
    b, d, h, w = x.shape
    rows = x.reshape(b, d, h * w)
    cols = x.transpose(2, 3).reshape(b, d, h * w)
    forward = torch.stack([rows, cols], dim=1)
    return torch.cat([forward, forward.flip(-1)], dim=1)


def cross_merge(ys: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, 4, D, H*W) -> (B, D, H*W): undo each direction's ordering and sum the four."""
    b, _, d, length = ys.shape
    both = ys[:, 0:2] + ys[:, 2:4].flip(-1)
    cols = both[:, 1].reshape(b, d, w, h).transpose(2, 3).reshape(b, d, length)
    return both[:, 0] + cols


def _chunked_scan(dts: torch.Tensor, us: torch.Tensor, A: torch.Tensor, Bs: torch.Tensor,
                  Cs: torch.Tensor, chunk: int) -> torch.Tensor:
    """Selective scan as a loop over chunks; inside a chunk the recurrence is closed-form.

    dts, us: (B, G, Dg, L) with L a multiple of `chunk`; A: (G, Dg, N); Bs, Cs: (B, G, N, L).
    Returns y without the D skip term: (n_chunks, B, G, Dg, chunk). Within a chunk
    h_t = exp(S_t) h_prev + sum_{s<=t} exp(S_t - S_s) dt_s B_s u_s with S the cumulative sum of dt * A,
    so only differences S_t - S_s <= 0 are exponentiated (no overflow). Written for TorchScript so
    that the ONNX exporter emits one Loop instead of unrolling the sequence.
    """
    b, g, dg, length = dts.shape
    n = A.shape[-1]
    n_chunks = length // chunk
    idx = torch.arange(chunk, device=dts.device)
    causal = (idx.unsqueeze(1) >= idx.unsqueeze(0)).view(1, 1, 1, 1, chunk, chunk)
    state = torch.zeros(b, g, dg, n, dtype=dts.dtype, device=dts.device)
    out = torch.zeros(n_chunks, b, g, dg, chunk, dtype=dts.dtype, device=dts.device)
    for c in range(n_chunks):
        start = c * chunk
        dt = dts[..., start:start + chunk].unsqueeze(3)                     # (B, G, Dg, 1, T)
        u = us[..., start:start + chunk].unsqueeze(3)
        b_c = Bs[..., start:start + chunk].unsqueeze(2)                     # (B, G, 1, N, T)
        c_c = Cs[..., start:start + chunk].unsqueeze(2)
        s = torch.cumsum(dt * A.view(1, g, dg, n, 1), dim=-1)               # (B, G, Dg, N, T)
        diff = s.unsqueeze(-1) - s.unsqueeze(-2)                            # (..., T, T): S_t - S_s
        decay = torch.exp(torch.where(causal, diff, torch.full_like(diff, float("-inf"))))
        x = (dt * b_c * u).unsqueeze(-1)                                    # (..., T, 1)
        h = torch.exp(s) * state.unsqueeze(-1) + torch.matmul(decay, x)[..., 0]  # [..., 0]: no If node, unlike squeeze
        out[c] = (h * c_c).sum(3)
        state = h[..., chunk - 1]
    return out


@functools.lru_cache(maxsize=None)
def _scripted_chunked_scan() -> Callable[..., torch.Tensor]:
    """`_chunked_scan` compiled by TorchScript, made once, only when an export needs it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated, still what
        return torch.jit.script(_chunked_scan)          # the ONNX exporter turns into a Loop


def export_selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                          C: torch.Tensor, D: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor],
                          delta_softplus: bool, chunk: int = EXPORT_CHUNK) -> torch.Tensor:
    """`selective_scan_fn` semantics (grouped B/C, no z) in ONNX-exportable standard ops, fp32.

    u, delta: (batch, dim, L); A: (dim, N); B, C: (batch, G, N, L); D, delta_bias: (dim,).
    """
    batch, dim, length = u.shape
    groups = B.shape[1]
    dt = delta.float()
    if delta_bias is not None:
        dt = dt + delta_bias.float().view(1, -1, 1)
    if delta_softplus:
        dt = F.softplus(dt)
    pad = (-length) % chunk  # dt = 0 on padding: the state passes through unchanged
    shape = (batch, groups, dim // groups, length + pad)
    scan = _scripted_chunked_scan() if torch.onnx.is_in_onnx_export() else _chunked_scan
    ys = scan(F.pad(dt, (0, pad)).view(shape), F.pad(u.float(), (0, pad)).view(shape),
                       A.float().view(groups, dim // groups, -1),
                       F.pad(B.float(), (0, pad)), F.pad(C.float(), (0, pad)), chunk)
    y = ys.permute(1, 2, 3, 0, 4).reshape(batch, dim, length + pad)[..., :length]
    if D is not None:
        y = y + u.float() * D.float().view(1, -1, 1)
    return y.to(u.dtype)


def cross_selective_scan(x: torch.Tensor, x_proj_weight: torch.Tensor, dt_projs_weight: torch.Tensor,
                         dt_projs_bias: torch.Tensor, A_logs: torch.Tensor, Ds: torch.Tensor,
                         out_norm: torch.nn.Module, force_fp32: bool) -> torch.Tensor:
    """SS2D's core: (B, D, H, W) channel-first -> (B, H, W, D) after `out_norm`, in x's dtype.

    Projections follow VMamba: x_proj_weight (K, R + 2N, D), dt_projs_weight (K, D, R),
    A = -exp(A_logs) with A_logs (K * D, N), delta = softplus(dt + dt_projs_bias).
    """
    b, d, h, w = x.shape
    length = h * w
    n = A_logs.shape[1]
    r = dt_projs_weight.shape[2]
    xs = cross_scan(x)                                                       # (B, K, D, L)
    x_dbl = torch.matmul(x_proj_weight, xs)                                  # (B, K, R + 2N, L)
    dts, Bs, Cs = torch.split(x_dbl, [r, n, n], dim=2)
    dts = torch.matmul(dt_projs_weight, dts)                                 # (B, K, D, L)
    us = xs.reshape(b, -1, length)
    dts = dts.reshape(b, -1, length)
    As = -torch.exp(A_logs.float())
    Ds_f = Ds.float()
    delta_bias = dt_projs_bias.reshape(-1).float()
    if force_fp32:
        us, dts, Bs, Cs = us.float(), dts.float(), Bs.float(), Cs.float()
    else:
        dts, Bs, Cs = dts.to(us.dtype), Bs.to(us.dtype), Cs.to(us.dtype)
    Bs, Cs = Bs.contiguous(), Cs.contiguous()
    if torch.onnx.is_in_onnx_export():
        ys = export_selective_scan(us, dts, As, Bs, Cs, Ds_f, delta_bias, True)
    else:
        from jetson_mamba.models.mamba_yolo import vmamba_core

        us, dts = us.contiguous(), dts.contiguous()
        core = vmamba_core.usable_core(us.device, us.dtype)
        if core is not None:
            ys = vmamba_core.CoreSelectiveScan.apply(core, us, dts, As, Bs, Cs, Ds_f, delta_bias, True)
        else:
            from jetson_mamba.ops import selective_scan_fn

            ys = selective_scan_fn(us, dts, As, Bs, Cs, D=Ds_f, delta_bias=delta_bias, delta_softplus=True)
    y = cross_merge(ys.view(b, K_DIRECTIONS, d, length), h, w)               # (B, D, L)
    weight = getattr(out_norm, "weight", None)
    if isinstance(weight, torch.Tensor):  # a model cast to bf16/fp16 (not autocast): the norm's own dtype
        y = y.to(weight.dtype)            # (the original feeds it fp32 and fails)
    y = out_norm(y.transpose(1, 2)).view(b, h, w, d)
    return y.to(x.dtype)
