"""The 4-direction cross selective scan of SS2D (VMamba "v2" core), on the backend dispatch.

The four directions are: row-major, column-major, and both reversed. Their K * D channels go
through one call of `jetson_mamba.ops.selective_scan_fn` with grouped B/C of shape
(batch, K, N, L): channel k * D + d reads group k, which is exactly the layout VMamba's
`selective_scan_cuda_core` takes, so no argument re-mapping (or cropping) is needed. When VMamba's
real compiled core is installed (and no backend is forced), it is called directly instead.

While `torch.onnx.export` runs, SS2D's core is `_export_cross_selective_scan` instead: time-major,
standard ops only (Exp, Mul, Add, MatMul, Expand, Split, Concat; no Loop, no custom op), so ONNX
Runtime and TensorRT run the exported graph (speed vs PyTorch: benchmarks/RESULTS.md).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional, Tuple

import torch

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


def softplus_exp_free(x: torch.Tensor) -> torch.Tensor:
    """softplus as max(x, 0) + log(1 + exp(-|x|)): exponent <= 0, and plain Relu/Abs/Exp/Log ops, which
    ONNX Runtime vectorises (its Softplus op is ~10x slower); off by < 6e-8 absolute in fp32."""
    return torch.relu(x) + torch.log(torch.exp(-x.abs()) + 1)


def _chunked_scan(dt: torch.Tensor, u: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                  chunk: int) -> torch.Tensor:
    """Selective scan with no loop longer than `chunk` steps, time-major: all chunks at once, then their carries.

    dt, u: (batch, G, L, Dg); A: (G, N, Dg); B, C: (batch, G, L, N). Returns y without the D term,
    (batch, G, L, Dg). The sequence is cut into M chunks of T <= `chunk` steps; step i of every chunk
    is one contiguous (batch, G, M, 1, N, Dg) block, channels innermost, so no Transpose is needed and
    each op works on one step's block. Pass 1 runs h = exp(dt A) h + B (dt u) over the T steps of all
    chunks at once from a zero state and contracts each step's state with C (MatMuls); the state entering
    each chunk follows from the chunk-end states and the chunk decays (`_exclusive_chunk_scan`); pass 2
    only decays that state, g = exp(dt A) g, and adds C g to each step's output (no input term: 4 ops a
    step, not pass 1's 6). Every exponent is dt A <= 0 (dt >= 0, A < 0), so nothing overflows in fp32
    or fp16. Traced, the Python loops unroll into 2T steps of plain ops.
    """
    batch, groups, length, dg = _static(dt.shape)
    n = int(A.shape[1])
    n_chunks, steps = _chunk_plan(length, chunk)
    pad = n_chunks * steps - length  # dt = 0 there: the state passes through unchanged

    def chunked(t: torch.Tensor, dim: int) -> torch.Tensor:
        """(batch, G, L, X) -> (batch, G, M, T, 1, X) (dim=-2) or (batch, G, M, T, X, 1) (dim=-1)."""
        if pad:
            t = torch.cat([t, _zeros_along(t, 2, pad)], dim=2)
        return t.reshape(batch, groups, n_chunks, steps, -1).unsqueeze(dim)

    ones = [1] * steps  # explicit sizes: one Split node with constant sizes
    dt6 = chunked(dt, -2)                                         # (batch, G, M, T, 1, Dg)
    dts = dt6.split(ones, dim=3)
    dus = (dt6 * chunked(u, -2)).split(ones, dim=3)
    Bs = chunked(B, -1).split(ones, dim=3)                        # (batch, G, M, 1, N, 1)
    Cs = chunked(C, -2).split(ones, dim=3)                        # (batch, G, M, 1, 1, N)
    A6 = A.reshape(1, groups, 1, 1, n, dg)
    h = torch.matmul(Bs[0], dus[0])  # the outer product B dt u: a MatMul is cheaper than a broadcast Mul
    ys = [torch.matmul(Cs[0], h)]
    for i in range(1, steps):
        h = torch.exp(dts[i] * A6) * h + torch.matmul(Bs[i], dus[i])
        ys.append(torch.matmul(Cs[i], h))
    if n_chunks > 1:
        g = _exclusive_chunk_scan(h, torch.exp(dt6.sum(3, keepdim=True) * A6))
        for i in range(steps):
            g = torch.exp(dts[i] * A6) * g
            ys[i] = ys[i] + torch.matmul(Cs[i], g)
    y = torch.cat(ys, dim=3)                                      # (batch, G, M, T, 1, Dg)
    return y.reshape(batch, groups, n_chunks * steps, dg).narrow(2, 0, length)


def _time_major_scan(dt: torch.Tensor, u: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                     D: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor],
                     delta_softplus: bool) -> torch.Tensor:
    """`selective_scan_fn` on time-major fp32 tensors: dt, u (batch, G, L, Dg); A (G, N, Dg);
    B, C (batch, G, L, N); D, delta_bias (G, Dg). Returns (batch, G, L, Dg), with at most
    `export_chunk`'s steps per chunk."""
    batch, groups, _, dg = _static(u.shape)
    if delta_bias is not None:
        dt = dt + delta_bias.reshape(1, groups, 1, dg)
    if delta_softplus:
        dt = softplus_exp_free(dt)
    y = _chunked_scan(dt, u, A, B, C, _export_chunk[0])
    return y if D is None else y + u * D.reshape(1, groups, 1, dg)


def export_selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                          C: torch.Tensor, D: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor],
                          delta_softplus: bool) -> torch.Tensor:
    """`selective_scan_fn` semantics (grouped B/C, no z) in ONNX-exportable standard ops, fp32, with at
    most `export_chunk`'s steps per chunk.

    u, delta: (batch, dim, L); A: (dim, N); B, C: (batch, G, N, L); D, delta_bias: (dim,).
    """
    batch, dim, length = _static(u.shape)
    groups = int(B.shape[1])
    shape = (batch, groups, dim // groups, length)

    def time_major(t: torch.Tensor) -> torch.Tensor:
        return t.float().reshape(shape).transpose(2, 3)

    def grouped(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        return None if t is None else t.float().reshape(groups, dim // groups)

    y = _time_major_scan(time_major(delta), time_major(u), A.float().reshape(groups, dim // groups, -1).transpose(1, 2),
                         B.float().transpose(2, 3), C.float().transpose(2, 3), grouped(D), grouped(delta_bias),
                         delta_softplus)
    return y.transpose(2, 3).reshape(batch, dim, length).to(u.dtype)


def _export_cross_selective_scan(x: torch.Tensor, x_proj_weight: torch.Tensor, dt_projs_weight: torch.Tensor,
                                 dt_projs_bias: torch.Tensor, A_logs: torch.Tensor, Ds: torch.Tensor,
                                 out_norm: torch.nn.Module) -> torch.Tensor:
    """`cross_selective_scan` for ONNX export, time-major with channels innermost from start to end:
    one NCHW -> NHWC Transpose in, the (H, W) swap of the column directions, and nothing else moves
    (a channel-first scan needs a 6-D Transpose of every scan input, which ONNX Runtime runs slowly)."""
    b, d, h, w = _static(x.shape)
    length, k = h * w, K_DIRECTIONS
    n = int(A_logs.shape[1])
    rows = x.float().permute(0, 2, 3, 1)                                     # (B, H, W, D)
    forward = torch.stack([rows.reshape(b, length, d), rows.transpose(1, 2).reshape(b, length, d)], dim=1)
    xs = torch.cat([forward, forward.flip(2)], dim=1)                        # (B, K, L, D)
    x_dbl = torch.matmul(xs, x_proj_weight.float().transpose(1, 2))          # (B, K, L, R + 2N)
    r = int(x_dbl.shape[-1]) - 2 * n
    dts, Bs, Cs = torch.split(x_dbl, [r, n, n], dim=-1)
    dts = torch.matmul(dts, dt_projs_weight.float().transpose(1, 2))         # (B, K, L, D)
    As = -torch.exp(A_logs.float()).reshape(k, d, n).transpose(1, 2)         # (K, N, D)
    ys = _time_major_scan(dts, xs, As, Bs, Cs, Ds.float().reshape(k, d), dt_projs_bias.float(), True)
    both = ys[:, 0:2] + ys[:, 2:4].flip(2)                                   # (B, 2, L, D)
    y = both[:, 0] + both[:, 1].reshape(b, w, h, d).transpose(1, 2).reshape(b, length, d)
    weight = getattr(out_norm, "weight", None)
    if isinstance(weight, torch.Tensor):
        y = y.to(weight.dtype)
    return out_norm(y).view(b, h, w, d).to(x.dtype)


def cross_selective_scan(x: torch.Tensor, x_proj_weight: torch.Tensor, dt_projs_weight: torch.Tensor,
                         dt_projs_bias: torch.Tensor, A_logs: torch.Tensor, Ds: torch.Tensor,
                         out_norm: torch.nn.Module, force_fp32: bool) -> torch.Tensor:
    """SS2D's core: (B, D, H, W) channel-first -> (B, H, W, D) after `out_norm`, in x's dtype.

    Projections follow VMamba: x_proj_weight (K, R + 2N, D), dt_projs_weight (K, D, R),
    A = -exp(A_logs) with A_logs (K * D, N), delta = softplus(dt + dt_projs_bias).
    """
    if torch.onnx.is_in_onnx_export():
        return _export_cross_selective_scan(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, out_norm)
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
