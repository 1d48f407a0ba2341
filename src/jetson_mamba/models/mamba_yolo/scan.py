"""The 4-direction cross selective scan of SS2D (VMamba "v2" core), on the backend dispatch.

The four directions are: row-major, column-major, and both reversed. Their K * D channels go
through one call of `jetson_mamba.ops.selective_scan_fn` with grouped B/C of shape
(batch, K, N, L): channel k * D + d reads group k, which is exactly the layout VMamba's
`selective_scan_cuda_core` takes, so no argument re-mapping (or cropping) is needed. When VMamba's
real compiled core is installed (and no backend is forced), it is called directly instead.

While `torch.onnx.export` runs, the scan is computed by `export_selective_scan` instead: standard
ops only (Exp, Mul, Add, MatMul, Expand, Split, Concat; no Loop, no custom op), so ONNX Runtime and
TensorRT run the exported graph, as fast as the PyTorch scan (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F

K_DIRECTIONS = 4
EXPORT_CHUNK = 64  # steps per chunk, at most; picked by benchmarks/bench_cpu_yolo_onnx.py --chunks
_export_chunk = [EXPORT_CHUNK]


@contextlib.contextmanager
def export_chunk(chunk: int) -> Iterator[None]:
    """Export with at most `chunk` unrolled steps per chunk (the graph has 2 * chunk steps per scan)."""
    if chunk < 1:
        raise ValueError(f"chunk must be positive, got {chunk}")
    previous = _export_chunk[0]
    _export_chunk[0] = chunk
    try:
        yield
    finally:
        _export_chunk[0] = previous


def _static(shape: torch.Size) -> List[int]:
    """Plain ints: traced sizes would become graph arithmetic (Shape, Div: truncating, unlike //)."""
    return [int(s) for s in shape]


def cross_scan(x: torch.Tensor) -> torch.Tensor:
    """(B, D, H, W) -> (B, 4, D, H*W): row-major, column-major, and both flipped."""
    b, d, h, w = _static(x.shape)
    rows = x.reshape(b, d, h * w)
    cols = x.transpose(2, 3).reshape(b, d, h * w)
    forward = torch.stack([rows, cols], dim=1)
    return torch.cat([forward, forward.flip(-1)], dim=1)


def cross_merge(ys: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, 4, D, H*W) -> (B, D, H*W): undo each direction's ordering and sum the four."""
    b, _, d, length = _static(ys.shape)
    both = ys[:, 0:2] + ys[:, 2:4].flip(-1)
    cols = both[:, 1].reshape(b, d, w, h).transpose(2, 3).reshape(b, d, length)
    return both[:, 0] + cols


def _chunk_plan(length: int, chunk: int) -> Tuple[int, int]:
    """(n_chunks, steps per chunk) covering `length` with at most `chunk` steps each and the least padding."""
    n_chunks = -(-length // chunk)
    return n_chunks, -(-length // n_chunks)


def _zeros_along(t: torch.Tensor, dim: int, count: int) -> torch.Tensor:
    """Zeros shaped like t but `count` long on `dim`, of static shape (F.pad's computed pads would
    hide the static shape from ONNX shape inference)."""
    shape = _static(t.shape)
    shape[dim] = count
    return t.new_zeros(()).expand(shape)  # an Expand of a scalar: a zeros tensor would be stored in the file


def _pad_end(t: torch.Tensor, count: int) -> torch.Tensor:
    """t with `count` zeros appended on the last dim."""
    return torch.cat([t, _zeros_along(t, -1, count)], dim=-1) if count else t


def _shift(t: torch.Tensor, k: int) -> torch.Tensor:
    """t moved k places along dim 2 (the chunk axis), zeros in front."""
    return torch.cat([_zeros_along(t, 2, k), t.narrow(2, 0, int(t.shape[2]) - k)], dim=2)


def _exclusive_chunk_scan(h_end: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
    """The state entering each chunk, from the chunk-end states (zero start) and the chunk decays (dim 2).

    carry_c = sum_{j<c} (prod_{j<k<c} decay_k) h_end_j in ceil(log2(n_chunks)) doubling steps
    (Hillis-Steele): products of decays in [0, 1] and sums only, no exponent and no loop.
    """
    n_chunks = int(h_end.shape[2])
    k = 1
    while k < n_chunks:
        h_end = h_end + decay * _shift(h_end, k)
        if 2 * k < n_chunks:
            decay = decay * _shift(decay, k)
        k *= 2
    return _shift(h_end, 1)


def _chunked_scan(dt: torch.Tensor, u: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                  chunk: int) -> torch.Tensor:
    """Selective scan with no loop longer than `chunk` steps: all chunks at once, then their carries.

    dt, u: (batch, G, Dg, L); A: (G, Dg, N); B, C: (batch, G, N, L). Returns y without the D term,
    (batch, G * Dg, L). The sequence is cut into M chunks of T <= `chunk` steps, laid out so that step i
    of every chunk is one (1, batch, M, G, Dg, N) block. Pass 1 runs h = exp(dt A) h + dt u B over the T
    steps of all chunks at once from a zero state and keeps the chunk-end states; the state entering each
    chunk follows from those and the chunk decays exp(sum(dt) A) (`_exclusive_chunk_scan`); pass 2 runs
    the T steps again from that state and contracts each step's state with C (a MatMul). Every exponent
    is dt A <= 0 (dt >= 0, A < 0), so nothing overflows in fp32 or fp16, and every op works on one step's
    block, small enough to stay in cache. Traced, the Python loops unroll into 2T steps of plain ops.
    """
    batch, groups, dg, length = _static(dt.shape)
    n_chunks, steps = _chunk_plan(length, chunk)
    pad = n_chunks * steps - length  # dt = 0 there: the state passes through unchanged

    def step_major(t: torch.Tensor) -> torch.Tensor:
        """(batch, G, X, L) -> (T, batch, M, G, X)."""
        t = _pad_end(t, pad).view(batch, groups, int(t.shape[2]), n_chunks, steps)
        return t.permute(4, 0, 3, 1, 2)

    ones = [1] * steps  # explicit sizes: one Split node with constant sizes
    dt_t = step_major(dt).unsqueeze(-1)                          # (T, batch, M, G, Dg, 1)
    dts = dt_t.split(ones)
    dus = (dt_t * step_major(u).unsqueeze(-1)).split(ones)
    Bs = step_major(B).unsqueeze(-2).split(ones)                  # (1, batch, M, G, 1, N)
    Cs = step_major(C).unsqueeze(-1).split(ones)                  # (1, batch, M, G, N, 1)
    A6 = A.view(1, 1, 1, groups, dg, -1)

    def run(h: Optional[torch.Tensor], ys: Optional[List[torch.Tensor]]) -> torch.Tensor:
        for i in range(steps):
            x = dus[i] * Bs[i]
            h = x if h is None else torch.exp(dts[i] * A6) * h + x
            if ys is not None:
                ys.append(torch.matmul(h, Cs[i]))
        return h  # type: ignore[return-value]

    h_end = run(None, None)
    decay = torch.exp(dt_t.sum(0, keepdim=True) * A6)
    ys: List[torch.Tensor] = []
    run(_exclusive_chunk_scan(h_end, decay), ys)
    y = torch.cat(ys)                                             # (T, batch, M, G, Dg, 1)
    return y.permute(1, 3, 4, 2, 0, 5).reshape(batch, groups * dg, n_chunks * steps)[..., :length]


def export_selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                          C: torch.Tensor, D: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor],
                          delta_softplus: bool) -> torch.Tensor:
    """`selective_scan_fn` semantics (grouped B/C, no z) in ONNX-exportable standard ops, fp32, with at
    most `export_chunk`'s steps per chunk.

    u, delta: (batch, dim, L); A: (dim, N); B, C: (batch, G, N, L); D, delta_bias: (dim,).
    """
    batch, dim, length = _static(u.shape)
    groups = int(B.shape[1])
    dt = delta.float()
    if delta_bias is not None:
        dt = dt + delta_bias.float().view(1, -1, 1)
    if delta_softplus:
        dt = F.softplus(dt)
    shape = (batch, groups, dim // groups, length)
    y = _chunked_scan(dt.view(shape), u.float().view(shape), A.float().view(groups, dim // groups, -1),
                      B.float(), C.float(), _export_chunk[0])
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
    b, d, h, w = _static(x.shape)
    length = h * w
    n, r = int(A_logs.shape[1]), int(dt_projs_weight.shape[2])
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
