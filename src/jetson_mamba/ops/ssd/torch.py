"""Chunked SSD (Mamba2's state-space duality) in plain PyTorch, differentiable through autograd.

Within a chunk of `chunk_size` steps the scan is the quadratic "attention-like" form with a
stable segment sum; between chunks a state of shape (headdim, dstate) per head is carried by
one matrix of cumulative decays over the chunks (as upstream's ssd_minimal), without a loop.
The sequence is processed in blocks of whole chunks, each block checkpointed when gradients
are needed, so memory stays O(batch * nheads * block * chunk_size) however long the sequence
is, and the backward recomputes a block instead of storing every intermediate. torch.compile and
torch.export see this function as one custom op (`jetson_mamba::ssd_chunk_scan_fwd`, ops._library):
its blocks and padding depend on seqlen, which a traced graph with a symbolic seqlen cannot follow.
All arithmetic here runs in the compute dtype the caller chose (fp32, or fp64 for fp64 inputs).

This is the `torch` backend of the `ssd` op in `jetson_mamba.ops.backend`; unlike the selective
scan and conv backends its `chunk_scan` is differentiable itself (autograd, no separate backward).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

# Elements of one (batch, nheads, chunk, chunk) decay matrix allowed per block: a handful of
# tensors of this size are alive at once (segment sum, decays, mixing matrix), ~32 MB each in fp32.
BLOCK_ELEMENTS = 1 << 23


def is_available(device: torch.device, dtype: torch.dtype) -> Optional[str]:
    """Runs wherever PyTorch does, for floating-point inputs."""
    if dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        return f"the torch SSD computes in floating point only, not {dtype}"
    return None


def segsum(x: torch.Tensor) -> torch.Tensor:
    """Stable segment sum: out[..., l, s] = x[..., s+1] + ... + x[..., l] for l >= s, -inf above.

    Summing the masked values directly (instead of subtracting two cumulative sums) keeps the
    exponent exact to rounding even when the cumulative sum itself grows large.
    """
    T = x.shape[-1]
    below = torch.ones(T, T, device=x.device, dtype=torch.bool).tril(-1)
    x = x.unsqueeze(-1).expand(*x.shape, T).masked_fill(~below, 0.0)
    out = torch.cumsum(x, dim=-2)
    return out.masked_fill(~below.logical_or(torch.eye(T, device=x.device, dtype=torch.bool)), float("-inf"))


def _carry(
    chunk_states: torch.Tensor, log_decay: torch.Tensor, state: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The state entering each chunk (b, c, g, r, p, n) and the one leaving the last, in one matmul.

    chunk_states: (b, c, g, r, p, n) what each chunk adds by its end; log_decay: (b, c, g, r) the log
    of the share of the state entering a chunk left at its end (-inf: dropped); state: (b, g, r, p, n)
    entering the first chunk. With s_0 = state, s_{j+1} = chunk_states[j], the state entering chunk
    k is sum_{j <= k} exp(a_j + ... + a_{k-1}) s_j: a (c+1, c+1) matrix of stable segment sums, as
    upstream's ssd_minimal, instead of a Python loop whose trip count is the number of chunks.
    """
    b, c, g, r, p, n = chunk_states.shape
    states = torch.cat([state[:, None], chunk_states], dim=1).permute(0, 2, 3, 1, 4, 5)  # b g r c+1 p n
    decay = torch.exp(segsum(F.pad(log_decay.permute(0, 2, 3, 1), (1, 0))))  # b g r c+1 c+1
    carried = torch.matmul(decay, states.reshape(b, g, r, c + 1, p * n)).reshape(b, g, r, c + 1, p, n)
    return carried[:, :, :, :-1].permute(0, 3, 1, 2, 4, 5), carried[:, :, :, -1]


def _whole_chunks(T: int, *tensors: torch.Tensor) -> Tuple[int, int, List[torch.Tensor]]:
    """(chunk count, padded steps, the (b, L, ...) tensors zero-padded along L to whole chunks of T).

    Padded steps have dt = 0: they neither decay the state nor add to it."""
    L = tensors[0].shape[1]
    nchunks = -(-L // T)
    pad = nchunks * T - L
    if pad:
        tensors = tuple(F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in tensors)
    return nchunks, pad, list(tensors)


def _entering_states(
    x: torch.Tensor,
    dt: torch.Tensor,
    Bg: torch.Tensor,
    cs: torch.Tensor,
    state: torch.Tensor,
    seq: Optional[torch.Tensor],
    before: Optional[torch.Tensor],
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The state entering each chunk (b, c, g, r, p, n) and the one leaving the last.

    x: (b, c, g, r, T, p); dt, cs (its cumulative dt * A): (b, c, g, r, T); Bg: (b, c, g, T, n); state
    entering the first chunk: (b, g, r, p, n); seq: (b, c, T) or None; before: (b, c) the sequence
    index just before each chunk. A chunk adds sum_s exp(cs_last - cs_s) dt_s x_s B_s^T of its last
    sequence's steps; the state entering it survives to its end only if no sequence starts inside.
    """
    decay = torch.exp(cs[..., -1:] - cs) * dt
    if seq is not None:
        decay = decay * (seq == seq[:, :, -1:])[:, :, None, None].to(decay.dtype)
    chunk_states = torch.matmul((x * decay[..., None]).transpose(-1, -2), Bg[:, :, :, None])  # b c g r p n
    log_decay = cs[..., -1]  # b c g r: the log of what survives of the state entering a chunk, at its end
    if seq is not None:
        log_decay = log_decay.masked_fill((seq[:, :, -1] != before)[:, :, None, None], float("-inf"))
    return _carry(chunk_states, log_decay, state)


def _scan_block(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    state: torch.Tensor,
    seq: Optional[torch.Tensor],
    seq_prev: Optional[torch.Tensor],
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One block of whole chunks.

    x: (b, c, T, g, r, p); dt: (b, c, T, g, r); A: (g, r); B, C: (b, c, T, g, n);
    state: (b, g, r, p, n) entering the block; seq: (b, c, T) int or None; seq_prev: (b,) the
    sequence index just before the block. Returns y (b, c, T, g, r, p) and the state leaving it.
    """
    x = x.permute(0, 1, 3, 4, 2, 5)  # b c g r T p
    dt = dt.permute(0, 1, 3, 4, 2)  # b c g r T
    Bg = B.permute(0, 1, 3, 2, 4)  # b c g T n
    Cg = C.permute(0, 1, 3, 2, 4)
    dA = dt * A[:, :, None]
    cs = torch.cumsum(dA, dim=-1)

    # 1. Intra-chunk (diagonal blocks): y[l] = sum_{s<=l} C_l.B_s exp(cs_l - cs_s) dt_s x_s.
    seg = segsum(dA)  # b c g r T T
    if seq is not None:
        same = (seq[:, :, :, None] == seq[:, :, None, :])[:, :, None, None]
        seg = seg.masked_fill(~same, float("-inf"))
    CB = torch.matmul(Cg, Bg.transpose(-1, -2))  # b c g T T
    W = CB[:, :, :, None] * torch.exp(seg) * dt[..., None, :]
    y = torch.matmul(W, x)

    # 2-3. The state entering each chunk (dropped where the sequence index changes) and the one leaving.
    before = torch.cat([seq_prev[:, None], seq[:, :-1, -1]], dim=1) if seq is not None else None
    prev, state = _entering_states(x, dt, Bg, cs, state, seq, before)

    # 4. Contribution of the state entering each chunk: exp(cs_l) C_l . S (same sequence only).
    out_decay = torch.exp(cs)
    if seq is not None:
        out_decay = out_decay * (seq == before[:, :, None])[:, :, None, None].to(out_decay.dtype)
    y = y + torch.matmul(Cg[:, :, :, None], prev.transpose(-1, -2)) * out_decay[..., None]
    return y.permute(0, 1, 4, 2, 3, 5), state


def chunk_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int,
    initial_states: Optional[torch.Tensor] = None,
    seq_idx: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The SSD recurrence h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t^T, y_t = h_t C_t, chunk by chunk.

    x: (b, L, h, p); dt: (b, L, h) already biased/softplus'd/clamped; A: (h,); B, C: (b, L, g, n)
    with head i reading group i // (h // g); initial_states: (b, h, p, n); seq_idx: (b, L), the
    state is dropped where it changes (the initial state belongs to sequence 0, as upstream).
    Returns y (b, L, h, p) without D or gating, and the final state (b, h, p, n).
    """
    b, L, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    r = h // g
    T = chunk_size
    nchunks, pad, (x, dt, B, C) = _whole_chunks(T, x, dt, B, C)
    if pad and seq_idx is not None:
        seq_idx = torch.cat([seq_idx, seq_idx[:, -1:].expand(b, pad)], dim=1)
    x = x.reshape(b, nchunks, T, g, r, p)
    dt = dt.reshape(b, nchunks, T, g, r)
    B = B.reshape(b, nchunks, T, g, n)
    C = C.reshape(b, nchunks, T, g, n)
    seq = seq_idx.reshape(b, nchunks, T) if seq_idx is not None else None
    seq_prev = torch.zeros(b, dtype=seq.dtype, device=x.device) if seq is not None else None
    if initial_states is None:
        state = x.new_zeros(b, g, r, p, n)
    else:
        state = initial_states.reshape(b, g, r, p, n)
    per_block = max(1, BLOCK_ELEMENTS // (b * h * T * T))
    # One block stores what a checkpoint would recompute anyway; several are checkpointed so
    # the backward holds one block's intermediates at a time.
    use_checkpoint = nchunks > per_block and torch.is_grad_enabled() and any(
        t.requires_grad for t in (x, dt, A, B, C, state)
    )
    ys: List[torch.Tensor] = []
    A = A.reshape(g, r)
    for c0 in range(0, nchunks, per_block):
        sl = slice(c0, c0 + per_block)
        block_seq = seq[:, sl] if seq is not None else None
        args = (x[:, sl], dt[:, sl], A, B[:, sl], C[:, sl], state, block_seq, seq_prev)
        if use_checkpoint:
            y, state = checkpoint(_scan_block, *args, use_reentrant=False, preserve_rng_state=False)
        else:
            y, state = _scan_block(*args)
        ys.append(y)
        if block_seq is not None:
            seq_prev = block_seq[:, -1, -1]
    y = torch.cat(ys, dim=1).reshape(b, nchunks * T, h, p)[:, :L]
    return y, state.reshape(b, h, p, n)


def varlen_states(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    chunk_size: int,
    initial_states: Optional[torch.Tensor],
    cu_seqlens: torch.Tensor,
) -> torch.Tensor:
    """The state at the end of each packed sequence [cu_seqlens[i], cu_seqlens[i+1]) of batch row 0,
    each from a zero state (the first, when it starts at 0, from initial_states): (nseq, h, p, n).

    Neither a loop over the sequences (one scan each, before) nor a read of cu_seqlens on the host (a
    sync per call): the chunks' states are carried with the sequence index restarting at each offset
    (as chunk_scan does with seq_idx), and a sequence's state is its last chunk's
    entering state (when the sequence began before that chunk) plus that chunk's steps up to its end,
    as upstream's chunk_state_varlen. x: (1, L, h, p); dt: (1, L, h) discretized; B: (1, L, g, n).
    """
    b, L, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    r, T = h // g, chunk_size
    nchunks, _, (x, dt, B) = _whole_chunks(T, x, dt, B)
    cu = cu_seqlens.to(device=x.device, dtype=torch.long)
    nseq = cu.shape[0] - 1
    # the sequence of each step: -1 before the first offset, nseq after the last
    seq = (torch.searchsorted(cu, torch.arange(nchunks * T, device=x.device), right=True) - 1).reshape(1, nchunks, T)
    init = initial_states if initial_states is not None else x.new_zeros(b, h, p, n)
    init = torch.where(cu[0] == 0, init, torch.zeros_like(init))  # it belongs to a first sequence starting at 0
    xs = x.reshape(b, nchunks, T, g, r, p).permute(0, 1, 3, 4, 2, 5)  # b c g r T p
    dts = dt.reshape(b, nchunks, T, g, r).permute(0, 1, 3, 4, 2)  # b c g r T
    Bg = B.reshape(b, nchunks, T, g, n).permute(0, 1, 3, 2, 4)  # b c g T n
    cs = torch.cumsum(dts * A.reshape(g, r)[:, :, None], dim=-1)
    before = torch.cat([seq.new_zeros(b, 1), seq[:, :-1, -1]], dim=1)  # the initial state is sequence 0's
    prev, _ = _entering_states(xs, dts, Bg, cs, init.reshape(b, g, r, p, n), seq, before)

    end = (cu[1:] - 1).clamp(min=0)  # each sequence's last step, its chunk and its place there
    chunk, step = end // T, end % T
    cs_seq = cs[0, chunk]  # nseq g r T
    cs_end = cs_seq.gather(-1, step[:, None, None, None].expand(nseq, g, r, 1))
    where = chunk[:, None] * T + torch.arange(T, device=x.device)
    inside = ((where >= cu[:-1, None]) & (where <= end[:, None])).to(x.dtype)  # nseq T
    weight = torch.exp((cs_end - cs_seq).clamp(max=0)) * dts[0, chunk] * inside[:, None, None]
    states = torch.einsum("sgrt,sgrtp,sgtn->sgrpn", weight, xs[0, chunk], Bg[0, chunk])
    began_before = (before[0, chunk] == torch.arange(nseq, device=x.device)).to(x.dtype)
    states = states + prev[0, chunk] * (torch.exp(cs_end) * began_before[:, None, None, None])[..., None]
    empty = (cu[1:] == cu[:-1])[:, None, None, None, None]
    first = (torch.arange(nseq, device=x.device) == 0).to(x.dtype)[:, None, None, None, None]
    states = torch.where(empty, init.reshape(1, g, r, p, n) * first, states)
    return states.reshape(nseq, h, p, n)
