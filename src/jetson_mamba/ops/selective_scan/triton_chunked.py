"""Sequence-parallel selective scan forward, for small batch x channels (batch 1 at the edge).

The one-pass kernel (triton.py) runs one program per (channel block, batch row) down the whole
sequence: Mamba-YOLO's scan at batch 1 (K*D = 512 channels) is 64 programs on a 132-SM GPU, most of
it idle. Here the sequence is cut into chunks of CHUNK steps as well, in three launches:

1. local: every (channel block, batch row, chunk) scans its chunk from a zero state and keeps the end
   state and the chunk's delta sum (its decay is exp(A * sum delta));
2. carry: per (channel block, batch row), a walk over the chunks turns the end states into each
   chunk's true start state, h_in[c + 1] = exp(A dsum[c]) h_in[c] + h_end[c] (a few floats per
   chunk), and writes the last state and the compiled kernels' chunk states x on request;
3. output: every chunk scans again from its true start state and writes out (and out * silu(z)).

The scan runs twice (the price of the parallelism), so this only pays where the one-pass grid leaves
SMs idle: `plan_chunk` decides from the shape and the GPU's SM count. The tiles and helpers are the
one-pass kernel's (triton_kernels.py), so both paths compute the same recurrence step for step.

By default the three passes run as one launch (`_lookback_kernel`): each chunk's program waits for the
previous chunk's published end state instead of a carry launch, so the forward's host cost is the
one-pass kernel's plus a zero fill, and it pays eagerly too where most SMs would idle on a long sequence
(`eager_forward_chunks`; JETSON_MAMBA_SCAN_LOOKBACK=0: three launches, inside CUDA graphs only).

The backward (`backward`, picked by the same rule) is the same idea run both ways, in five launches:
passes 1 and 2 above give every chunk's start state; an adjoint pass runs each chunk's reverse recurrence
for the state gradient from zero (g_t = C_t dy_t + exp(delta_{t+1} A) g_{t+1}) and keeps what leaves
its first step, p = exp(delta A) g; the carry kernel walks the chunks right to left,
p_in[c - 1] = exp(A dsum[c]) p_in[c] + p[c]; and the one-pass backward kernel (triton_kernels.py, CHUNKED) runs
once per chunk from that chunk's start state and incoming p_in, writing du, ddelta, dz (and out_z) and
adding dA, dB, dC, dD and ddelta_bias with atomics, or into per-chunk partial sums in deterministic mode.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Optional, Tuple

import torch

from jetson_mamba.ops import triton_utils as tu
from jetson_mamba.ops.triton_utils import grid_size, tl, triton

ENV_VAR = "JETSON_MAMBA_SCAN_CHUNKED"  # 0: never, 1: always (where allowed), unset: by shape
# The chunked forward runs in one launch (_lookback_kernel), eagerly too where eager_forward_chunks says so; 0: in
# three launches, and eagerly never (only inside CUDA graphs, where launches cost no host time).
LOOKBACK_VAR = "JETSON_MAMBA_SCAN_LOOKBACK"
MIN_CHUNK = 64
MAX_CHUNK = 2048  # divides the stand-ins' x interval (2048), so x's chunk ends are chunk ends here
# Chunk where the one-pass grid gives each SM fewer than CHUNK_BELOW programs (Mamba-YOLO's scan: 64
# programs at batch 1, chunked; 512 at batch 8, not, on a 132-SM H200), aiming the chunked grid at
# TARGET programs per SM. Guesses until timed (benchmarks/gpu/chunked_scan.sh compares both paths).
CHUNK_BELOW = 2
TARGET = 8
BD_GUESS = 8  # the one-pass kernel's usual channel block, for the decision only
# The eager forward (one launch) chunks only where that was timed to pay: Mamba-YOLO's scan at batch 1, 64
# programs for 132 SMs, L 6400 (0.135 vs 0.353 ms). Whole models at batch 1 with every fitting shape chunked
# (Mamba(1024) and the LM prefill, 192-256 programs; Mamba-YOLO-T's short stages) did not get faster in the one
# run measured (RESULTS.md "Edge latency", thirteenth session): those stay one-pass until timed otherwise.
EAGER_PROGRAMS_PER_SM = 0.5
EAGER_MIN_L = 2048

if triton is not None:
    from jetson_mamba.ops.selective_scan.triton_kernels import (
        _adjoint,
        _bias_and_d,
        _chunk_states,
        _fwd_block,
        _last_row,
        _load_bc_t,
        _load_delta,
        _ssm_bwd_kernel,
        _store_out,
        _store_x,
        _tile_inputs,
        _uniform,
    )
    from jetson_mamba.ops.triton_utils import sigmoid

    @triton.jit
    def _chunk_pass(
        u_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, out_ptr, outz_ptr, h, start, CHUNK, pid_b, offs_d, offs_n, offs_t,
        mask_d, mask_n, A2, bias, Dv, L, DPG_B, DPG_C,
        s_ub, s_ud, s_ul, s_db, s_dd, s_dl, s_zb, s_zd, s_zl, s_ob, s_od, s_ol,
        s_Bb, s_Bg, s_Bn, s_Bl, s_Cb, s_Cg, s_Cn, s_Cl,
        B_VAR: tl.constexpr, C_VAR: tl.constexpr, B_UNIFORM: tl.constexpr, C_UNIFORM: tl.constexpr,
        HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, OUTPUT: tl.constexpr,
        BD: tl.constexpr, T: tl.constexpr,
    ):
        """The steps [start, start + CHUNK) from state h: (end state, delta summed over the chunk); with
        OUTPUT, out (and out * silu(z)) written on the way."""
        dsum = tl.zeros([BD], dtype=tl.float32)
        for t0 in range(start, start + CHUNK, T):
            tt, mask_t, m2, uu, dl, _raw = _tile_inputs(u_ptr, delta_ptr, pid_b, t0, offs_t, offs_d, mask_d, bias, L,
                                                        s_ub, s_ud, s_ul, s_db, s_dd, s_dl, HAS_BIAS, SOFTPLUS)
            dsum += tl.sum(dl, axis=0)
            Bt = _load_bc_t(B_ptr, pid_b, offs_d, offs_n, tt, mask_d, mask_n, mask_t, DPG_B,
                            s_Bb, s_Bg, s_Bn, s_Bl, BD, B_VAR, B_UNIFORM)
            xx, _dA, _dBu = _chunk_states(dl, uu, A2, Bt, h)
            h = _last_row(xx, offs_t, T)
            if OUTPUT:
                Ct = _load_bc_t(C_ptr, pid_b, offs_d, offs_n, tt, mask_d, mask_n, mask_t, DPG_C,
                                s_Cb, s_Cg, s_Cn, s_Cl, BD, C_VAR, C_UNIFORM)
                _store_out(out_ptr, outz_ptr, z_ptr, xx, Ct, Dv, uu, m2, pid_b, tt, offs_d,
                           s_ob, s_od, s_ol, s_zb, s_zd, s_zl, HAS_Z)
        return h, dsum

    @triton.heuristics({
        "B_UNIFORM": lambda a: _uniform(a["G_B"], a["DPG_B"], a["BD"]),
        "C_UNIFORM": lambda a: _uniform(a["G_C"], a["DPG_C"], a["BD"]),
    })
    @triton.jit
    def _chunk_kernel(
        u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, outz_ptr, h_ptr, dsum_ptr,
        dim, L, N, G_B, G_C, DPG_B, DPG_C, CHUNK, n_chunks,
        s_ub, s_ud, s_ul, s_db, s_dd, s_dl, s_zb, s_zd, s_zl, s_ob, s_od, s_ol, s_ad, s_an,
        s_Bb, s_Bg, s_Bn, s_Bl, s_Cb, s_Cg, s_Cn, s_Cl,
        B_VAR: tl.constexpr, C_VAR: tl.constexpr, B_UNIFORM: tl.constexpr, C_UNIFORM: tl.constexpr,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
        OUTPUT: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr, T: tl.constexpr,
    ):
        # OUTPUT=False: pass 1 (zero start, store end state and delta sum); True: pass 3 (start from the
        # carried state in h, store out / out_z). h: (batch, n_chunks, dim, N) fp32; dsum (batch, n_chunks, dim).
        pid_b, offs_d, offs_n, offs_t, mask_d, mask_n, m_nd, A2 = _fwd_block(A_ptr, dim, N, s_ad, s_an, BD, BN, T)
        c = tl.program_id(2)
        bias, Dv = _bias_and_d(bias_ptr, D_ptr, offs_d, mask_d, BD, HAS_BIAS, HAS_D)
        row = pid_b * n_chunks + c
        p_h = h_ptr + row * dim * N + offs_d[None, :] * N + offs_n[:, None]
        if OUTPUT:
            h = tl.load(p_h, mask=m_nd, other=0.0)
        else:
            h = tl.zeros([BN, BD], dtype=tl.float32)
        h, dsum = _chunk_pass(
            u_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, out_ptr, outz_ptr, h, c * CHUNK, CHUNK, pid_b, offs_d, offs_n,
            offs_t, mask_d, mask_n, A2, bias, Dv, L, DPG_B, DPG_C,
            s_ub, s_ud, s_ul, s_db, s_dd, s_dl, s_zb, s_zd, s_zl, s_ob, s_od, s_ol, s_Bb, s_Bg, s_Bn, s_Bl,
            s_Cb, s_Cg, s_Cn, s_Cl, B_VAR, C_VAR, B_UNIFORM, C_UNIFORM, HAS_Z, HAS_BIAS, SOFTPLUS, OUTPUT, BD, T)
        if not OUTPUT:
            tl.store(p_h, h, mask=m_nd)
            tl.store(dsum_ptr + row * dim + offs_d, dsum, mask=mask_d)

    @triton.heuristics({
        "B_UNIFORM": lambda a: _uniform(a["G_B"], a["DPG_B"], a["BD"]),
        "C_UNIFORM": lambda a: _uniform(a["G_C"], a["DPG_C"], a["BD"]),
    })
    @triton.jit
    def _lookback_kernel(
        u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, outz_ptr, h_ptr,
        last_ptr, x_ptr, sync_ptr,
        dim, L, N, G_B, G_C, DPG_B, DPG_C, CHUNK, n_chunks, X_EVERY,
        s_ub, s_ud, s_ul, s_db, s_dd, s_dl, s_zb, s_zd, s_zl, s_ob, s_od, s_ol, s_ad, s_an,
        s_Bb, s_Bg, s_Bn, s_Bl, s_Cb, s_Cg, s_Cn, s_Cl, s_xb, s_xd, s_xc,
        B_VAR: tl.constexpr, C_VAR: tl.constexpr, B_UNIFORM: tl.constexpr, C_UNIFORM: tl.constexpr,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
        HAS_X: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr, T: tl.constexpr,
    ):
        """The three passes in one launch. Each program takes the next chunk of its (channel block, batch
        row) by ticket, scans it from zero, waits for the previous chunk's true end state, publishes its
        own (h: (batch, n_chunks, dim, N), then delta summed from the start (batch, n_chunks, dim)) and
        scans again from its true start, writing out. sync (int32, zeroed): per (batch row, channel block)
        n_chunks "published" flags, then the ticket counter. Tickets, not program ids, order the chunks: a program only waits
        for a chunk whose program took its ticket earlier, so is running, whatever order the GPU starts
        programs in. Publishing: every thread's stores, a barrier, then one release store of the flag
        (the pattern of CUTLASS's semaphore); waiting: an acquire read of the flag, then L1-bypassing loads."""
        pid_b, offs_d, offs_n, offs_t, mask_d, mask_n, m_nd, A2 = _fwd_block(A_ptr, dim, N, s_ad, s_an, BD, BN, T)
        flags = sync_ptr + (pid_b * tl.num_programs(0) + tl.program_id(0)) * (n_chunks + 1)
        dsum_ptr = h_ptr + tl.num_programs(1) * n_chunks * dim * N
        c = tl.atomic_add(flags + n_chunks, 1, sem="relaxed")
        bias, Dv = _bias_and_d(bias_ptr, D_ptr, offs_d, mask_d, BD, HAS_BIAS, HAS_D)
        zero = tl.zeros([BN, BD], dtype=tl.float32)
        h_end, dsum = _chunk_pass(
            u_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, out_ptr, outz_ptr, zero, c * CHUNK, CHUNK, pid_b, offs_d,
            offs_n, offs_t, mask_d, mask_n, A2, bias, Dv, L, DPG_B, DPG_C,
            s_ub, s_ud, s_ul, s_db, s_dd, s_dl, s_zb, s_zd, s_zl, s_ob, s_od, s_ol, s_Bb, s_Bg, s_Bn, s_Bl,
            s_Cb, s_Cg, s_Cn, s_Cl, B_VAR, C_VAR, B_UNIFORM, C_UNIFORM, HAS_Z, HAS_BIAS, SOFTPLUS, False, BD, T)
        row = pid_b * n_chunks + c
        p_h = h_ptr + row * dim * N + offs_d[None, :] * N + offs_n[:, None]
        h_in = zero
        total = dsum
        if c > 0:
            while tl.atomic_add(flags + c - 1, 0, sem="acquire") == 0:
                pass
            h_in = tl.load(p_h - dim * N, mask=m_nd, other=0.0, cache_modifier=".cg")
            total += tl.load(dsum_ptr + (row - 1) * dim + offs_d, mask=mask_d, other=0.0, cache_modifier=".cg")
            h_end = tl.exp2(A2 * dsum[None, :]) * h_in + h_end  # the carry kernel's step
        tl.store(p_h, h_end, mask=m_nd)
        tl.store(dsum_ptr + row * dim + offs_d, total, mask=mask_d)
        tl.debug_barrier()
        tl.atomic_xchg(flags + c, 1, sem="release")
        end = (c + 1) * CHUNK
        if HAS_X and ((end % X_EVERY == 0) | (end >= L)):
            _store_x(x_ptr + pid_b * s_xb, (tl.minimum(end, L) - 1) // X_EVERY, total, A2, h_end, offs_d, offs_n,
                     m_nd, s_xd, s_xc)
        if end >= L:
            tl.store(last_ptr + pid_b * dim * N + offs_d[None, :] * N + offs_n[:, None], h_end, mask=m_nd)
        _chunk_pass(
            u_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, out_ptr, outz_ptr, h_in, c * CHUNK, CHUNK, pid_b, offs_d,
            offs_n, offs_t, mask_d, mask_n, A2, bias, Dv, L, DPG_B, DPG_C,
            s_ub, s_ud, s_ul, s_db, s_dd, s_dl, s_zb, s_zd, s_zl, s_ob, s_od, s_ol, s_Bb, s_Bg, s_Bn, s_Bl,
            s_Cb, s_Cg, s_Cn, s_Cl, B_VAR, C_VAR, B_UNIFORM, C_UNIFORM, HAS_Z, HAS_BIAS, SOFTPLUS, True, BD, T)

    @triton.jit
    def _carry_kernel(
        A_ptr, h_ptr, dsum_ptr, last_ptr, x_ptr, dim, N, L, CHUNK, n_chunks, X_EVERY,
        s_ad, s_an, s_xb, s_xd, s_xc,
        HAS_X: tl.constexpr, REVERSE: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr,
    ):
        """Chunk end states (zero start) -> chunk start states, in place; the last state; x on request.
        REVERSE (the backward): right to left, each chunk's outgoing adjoint p (zero incoming) -> the p
        coming into it from its right; `last` gets the gradient of the initial state (unused)."""
        pid_b, offs_d, offs_n, _offs_t, mask_d, _mask_n, m_nd, A2 = _fwd_block(A_ptr, dim, N, s_ad, s_an, BD, BN, 1)
        h = tl.zeros([BN, BD], dtype=tl.float32)
        total = tl.zeros([BD], dtype=tl.float32)  # delta summed from the start, for x's decay products
        x_base = x_ptr + pid_b * s_xb
        for i in range(0, n_chunks):
            c = i
            if REVERSE:
                c = n_chunks - 1 - i
            row = pid_b * n_chunks + c
            p_h = h_ptr + row * dim * N + offs_d[None, :] * N + offs_n[:, None]
            h_end = tl.load(p_h, mask=m_nd, other=0.0)
            ds = tl.load(dsum_ptr + row * dim + offs_d, mask=mask_d, other=0.0)
            tl.store(p_h, h, mask=m_nd)
            h = tl.exp2(A2 * ds[None, :]) * h + h_end
            total += ds
            end = (c + 1) * CHUNK
            if HAS_X and ((end % X_EVERY == 0) | (end >= L)):
                _store_x(x_base, (tl.minimum(end, L) - 1) // X_EVERY, total, A2, h, offs_d, offs_n, m_nd,
                         s_xd, s_xc)
        tl.store(last_ptr + pid_b * dim * N + offs_d[None, :] * N + offs_n[:, None], h, mask=m_nd)

    @triton.heuristics({"C_UNIFORM": lambda a: a["G_C"] == 1 or a["DPG_C"] % a["BD"] == 0})
    @triton.jit
    def _adjoint_kernel(
        delta_ptr, A_ptr, C_ptr, z_ptr, bias_ptr, dout_ptr, p_ptr, dim, L, N, G_C, DPG_C, CHUNK, n_chunks,
        s_db, s_dd, s_dl, s_zb, s_zd, s_zl, s_gb, s_gd, s_gl, s_ad, s_an, s_Cb, s_Cg, s_Cn, s_Cl,
        C_VAR: tl.constexpr, C_UNIFORM: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
        SOFTPLUS: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr, T: tl.constexpr,
    ):
        """Per (channel block, batch row, chunk): the adjoint recurrence over the chunk from zero, right to
        left; stores p = exp(delta A) g of its first step into p (batch, n_chunks, dim, N). Needs no state:
        the gradient reaching y is dout (times silu(z) with z)."""
        pid_b, offs_d, offs_n, offs_t, mask_d, mask_n, m_nd, A2 = _fwd_block(A_ptr, dim, N, s_ad, s_an, BD, BN, T)
        c = tl.program_id(2)
        bias, _d = _bias_and_d(bias_ptr, bias_ptr, offs_d, mask_d, BD, HAS_BIAS, False)
        p = tl.zeros([BN, BD], dtype=tl.float32)
        start = c * CHUNK
        tiles = tl.cdiv(tl.minimum(CHUNK, L - start), T)
        for i in range(0, tiles):
            tt = start + (tiles - 1 - i) * T + offs_t
            mask_t = tt < L
            m2 = mask_t[:, None] & mask_d[None, :]
            dl, _raw = _load_delta(delta_ptr + pid_b * s_db, tt[:, None] * s_dl + offs_d[None, :] * s_dd, m2,
                                   bias[None, :], HAS_BIAS, SOFTPLUS)
            dy = tl.load(dout_ptr + pid_b * s_gb + tt[:, None] * s_gl + offs_d[None, :] * s_gd,
                         mask=m2, other=0.0).to(tl.float32)
            if HAS_Z:
                zz = tl.load(z_ptr + pid_b * s_zb + tt[:, None] * s_zl + offs_d[None, :] * s_zd,
                             mask=m2, other=0.0).to(tl.float32)
                dy = dy * zz * sigmoid(zz)
            Ct = _load_bc_t(C_ptr, pid_b, offs_d, offs_n, tt, mask_d, mask_n, mask_t, DPG_C,
                            s_Cb, s_Cg, s_Cn, s_Cl, BD, C_VAR, C_UNIFORM)
            dA = tl.exp2(dl[:, None, :] * A2[None, :, :])
            _g, p = _adjoint(dl, dA, dy[:, None, :] * Ct, A2, p, offs_t)
        tl.store(p_ptr + (pid_b * n_chunks + c) * dim * N + offs_d[None, :] * N + offs_n[:, None], p, mask=m_nd)


# (BD, T, num_warps): BD=8 T=8 is the one-pass kernel's first config; the interpreter takes small tiles, or
# the one-pass kernel's wide plan for many channels (upstream's mamba_inner_fn test, 1536 channels: 2-channel
# programs ran past its 300 s case limit).
_CONFIG = (8, 8, 1)
_INTERPRET_CONFIG = (2, 8, 1)
_INTERPRET_WIDE = (tu.INTERPRET_WIDE_CHANNELS, 32, 1)


def _config(dim: int) -> Tuple[int, int, int]:
    if not tu.INTERPRET:
        return _CONFIG
    return _INTERPRET_WIDE if tu.interpret_wide(dim) else _INTERPRET_CONFIG


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return int(torch.cuda.get_device_properties(index).multi_processor_count)


def plan_chunk(batch: int, dim: int, L: int, sms: int, setting: Optional[str] = None) -> int:
    """The chunk length for the sequence-parallel forward, or 0 for the one-pass kernel.

    Chunks where the one-pass grid (batch x dim / BD programs) gives the GPU's `sms` fewer than
    CHUNK_BELOW programs each and the sequence has room for two chunks or more; the chunk count
    aims at TARGET programs per SM. setting "0" never chunks, "1" always (sms may be 0: the interpreter).
    Chunks are powers of two in [MIN_CHUNK, MAX_CHUNK]."""
    if setting == "0" or L < 2 * MIN_CHUNK:
        return 0
    programs = batch * grid_size(dim, BD_GUESS)
    if setting != "1" and programs >= CHUNK_BELOW * sms:
        return 0
    want = max(2, grid_size(TARGET * max(sms, 1), programs))
    return min(max(tu.next_power_of_2(grid_size(L, want)), MIN_CHUNK), MAX_CHUNK)


def chunk_for(u: torch.Tensor, forward: bool = False) -> int:
    """plan_chunk for these tensors (JETSON_MAMBA_SCAN_CHUNKED may force it).

    While a CUDA graph is captured (torch.compile mode="reduce-overhead", upstream's cg=True) the forward
    chunks by plan_chunk's rule, where launches cost no host time. Eagerly, unless forced, it chunks (in one
    launch, the look-back kernel) only where the one-pass grid leaves most SMs idle on a long sequence
    (`eager_forward_chunks`): on the lab H100 (2026-12-06, RESULTS.md "Edge latency") Mamba-YOLO's scan B1
    L6400 took 0.135 ms against 0.353 one-pass and the compiled kernel's 0.176, with the one-pass kernel's
    host path plus a zero fill. With JETSON_MAMBA_SCAN_LOOKBACK=0 (three launches) never eagerly: their host
    time made the forward slower whole (upstream's Mamba(1024) B1 L2048 0.852 vs 0.665 ms, the 130M LM
    prefill B1 26.0 vs 21.4 ms: benchmarks/gpu/profile_edge.py). The backward (GPU-bound) chunks eagerly."""
    setting = os.environ.get(ENV_VAR)
    batch, dim, L = u.shape
    sms = _sm_count(u.device.index or 0) if u.device.type == "cuda" else 0
    if forward and setting is None and not (u.is_cuda and torch.cuda.is_current_stream_capturing()):
        if not (lookback() and eager_forward_chunks(batch, dim, L, sms)):
            return 0
    return plan_chunk(batch, dim, L, sms, setting)


def eager_forward_chunks(batch: int, dim: int, L: int, sms: int) -> bool:
    """Whether the forward chunks outside CUDA graphs: the one-pass grid gives the SMs at most
    EAGER_PROGRAMS_PER_SM programs each and the sequence has EAGER_MIN_L steps or more (see chunk_for)."""
    return batch * grid_size(dim, BD_GUESS) <= EAGER_PROGRAMS_PER_SM * sms and L >= EAGER_MIN_L


def forward(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: Optional[torch.Tensor], z: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor],
    delta_softplus: bool, args: dict, chunk: int, every: int, token: int,
) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor, Optional[torch.Tensor]]:
    """(out, out_z, last state, x or None for every=0), as triton._forward returns them. `args`: its
    _common_args, `token` the token of its plan (which fixes every shape and stride of the inputs); `every`
    must be a multiple of `chunk`."""
    batch, dim, L = u.shape
    N = A.shape[1]
    out = torch.empty((batch, dim, L), device=u.device, dtype=u.dtype)
    out_z = torch.empty_like(out) if z is not None else None
    last = torch.empty((batch, dim, N), device=u.device, dtype=torch.float32)
    x = torch.empty((batch, dim, grid_size(L, every), 2 * N), device=u.device, dtype=torch.float32) if every else None
    dummy = out
    tensors = (u, delta, A, B, C, D if D is not None else dummy, z if z is not None else dummy,
               delta_bias if delta_bias is not None else dummy, out, out_z if out_z is not None else dummy)
    if lookback():
        _one_launch(tensors, args, chunk, bool(delta_softplus), last, x, every, token)
        return out, out_z, last, x
    h, dsum = _start_states(tensors, A, args, chunk, bool(delta_softplus), last, x, every, token)
    _chunks(tensors + (h, dsum), args, chunk, bool(delta_softplus), output=True, key=token)
    return out, out_z, last, x


def lookback() -> bool:
    """Whether the chunked forward runs as one launch (unless JETSON_MAMBA_SCAN_LOOKBACK=0)."""
    return os.environ.get(LOOKBACK_VAR) != "0"


# each launch site's plans (tu.launch_planned): the one-launch forward; the three-launch forward's and the
# backward's chunk and carry kernels; the backward's adjoint and last pass
_LOOKBACK_LAUNCHES: tu.Plans = {}
_CHUNK_LAUNCHES: tu.Plans = {}
_CARRY_LAUNCHES: tu.Plans = {}
_ADJOINT_LAUNCHES: tu.Plans = {}
_BWD_LAUNCHES: tu.Plans = {}


def _chunk_args(args: dict) -> dict:
    """_common_args as the chunk and look-back kernels take them: without the one-pass kernel's tuning keys."""
    return {k: v for k, v in args.items() if k not in ("batch_class", "L_class")}


def _one_launch(tensors: Tuple[torch.Tensor, ...], args: dict, chunk: int, softplus: bool, last: torch.Tensor,
                x: Optional[torch.Tensor], every: int, token: int) -> None:
    """_lookback_kernel over every (channel block, batch row, chunk): the three passes of `forward` in one
    launch and a zero fill (its flags and tickets), where the three launches took two more launches and
    two more allocations; planned once per layout (tu.launch_planned), as the one-pass kernel is."""
    u = tensors[0]
    batch, dim, L = u.shape
    bd, t, warps = _config(dim)
    n_chunks = grid_size(L, chunk)
    blocks = grid_size(dim, bd)
    # the chunks' end states (batch, n_chunks, dim, N), then their delta sums from the start (batch, n_chunks, dim)
    work = torch.empty(batch * n_chunks * dim * (args["N"] + 1), device=u.device, dtype=torch.float32)
    sync = torch.zeros((batch * blocks, n_chunks + 1), device=u.device, dtype=torch.int32)

    def make() -> Tuple[None, Tuple[int, int, int], Tuple[()], dict]:
        out = tensors[8]
        xs = x.stride() if x is not None else (0, 0, 0)
        return None, (blocks, batch, n_chunks), (), dict(
            CHUNK=chunk, n_chunks=n_chunks, X_EVERY=every or 1, s_ob=out.stride(0), s_od=out.stride(1),
            s_ol=out.stride(2), s_xb=xs[0], s_xd=xs[1], s_xc=xs[2], HAS_X=x is not None, SOFTPLUS=softplus, BD=bd,
            T=t, num_warps=warps, **_chunk_args(args))

    # the key fixes every shape and stride (token), the chunks, x's interval and the flags; the tensors after the
    # first 8 are new allocations of dtypes the key fixes
    tu.launch_planned(_LOOKBACK_LAUNCHES, (token, chunk, every, softplus), _lookback_kernel,
                      (*tensors, work, last, x if x is not None else last, sync), make, checked=8)


def _chunks(tensors: Tuple[torch.Tensor, ...], args: dict, chunk: int, softplus: bool, output: bool,
            key: Any) -> None:
    """_chunk_kernel over every (channel block, batch row, chunk): pass 1, or pass 3 with output. `key`: the
    caller's plan key, which fixes every shape and stride of the inputs (the first 8 tensors; the others are
    new allocations of dtypes it fixes)."""
    u, out = tensors[0], tensors[8]
    batch, dim, L = u.shape

    def make() -> Tuple[None, Tuple[int, int, int], Tuple[()], dict]:
        bd, t, warps = _config(dim)
        n_chunks = grid_size(L, chunk)
        return None, (grid_size(dim, bd), batch, n_chunks), (), dict(
            CHUNK=chunk, n_chunks=n_chunks, s_ob=out.stride(0), s_od=out.stride(1), s_ol=out.stride(2),
            SOFTPLUS=softplus, OUTPUT=output, BD=bd, T=t, num_warps=warps, **_chunk_args(args))

    tu.launch_planned(_CHUNK_LAUNCHES, (key, chunk, softplus, output), _chunk_kernel, tensors, make, checked=8)


def _carry(A: torch.Tensor, h: torch.Tensor, dsum: torch.Tensor, last: torch.Tensor, x: Optional[torch.Tensor],
           args: dict, chunk: int, every: int, reverse: bool, key: Any) -> None:
    """_carry_kernel per (channel block, batch row): h (batch, n_chunks, dim, N) in place. `key` as _chunks';
    h, dsum, last and x are new allocations whose layouts follow from it, chunk and every."""
    batch, n_chunks, dim, N = h.shape

    def make() -> Tuple[None, Tuple[int, int], Tuple[int, ...], dict]:
        bd, _t, warps = _config(dim)
        xs = x.stride() if x is not None else (0, 0, 0)
        return None, (grid_size(dim, bd), batch), (
            dim, N, args["L"], chunk, n_chunks, every or 1, args["s_ad"], args["s_an"], xs[0], xs[1], xs[2]), dict(
            HAS_X=x is not None, REVERSE=reverse, BD=bd, BN=args["BN"], num_warps=warps)

    tu.launch_planned(_CARRY_LAUNCHES, (key, chunk, every, reverse, x is not None), _carry_kernel,
                      (A, h, dsum, last, x if x is not None else last), make, checked=1)


def _start_states(tensors: Tuple[torch.Tensor, ...], A: torch.Tensor, args: dict, chunk: int, softplus: bool,
                  last: torch.Tensor, x: Optional[torch.Tensor], every: int,
                  key: Any) -> Tuple[torch.Tensor, torch.Tensor]:
    """Passes 1 and 2: (every chunk's start state (batch, n_chunks, dim, N), its delta sum (batch, n_chunks,
    dim)); the last state into `last`, x on request. `tensors`: _chunk_kernel's first ten arguments."""
    batch, dim, L = tensors[0].shape
    n_chunks = grid_size(L, chunk)
    f32 = dict(device=A.device, dtype=torch.float32)
    h = torch.empty((batch, n_chunks, dim, args["N"]), **f32)
    dsum = torch.empty((batch, n_chunks, dim), **f32)
    _chunks(tensors + (h, dsum), args, chunk, softplus, output=False, key=key)
    _carry(A, h, dsum, last, x, args, chunk, every, reverse=False, key=key)
    return h, dsum


def backward(tensors: Tuple[torch.Tensor, ...], kw: dict, args: dict, chunk: int, key: Any,
             config: Optional[Tuple[int, int, int]] = None) -> None:
    """The chunked backward into triton._backward's buffers. `tensors`: _ssm_bwd_kernel's first 22
    arguments (u, delta, A, B, C, D, z, delta_bias, dout, ...; stand-ins where absent), `kw` its strides and
    flags, `args` _common_args', as triton._backward builds them; `key` its plan key, which fixes all of
    them but the tensors after dout (new allocations, or a dz whose alignment it holds). `config`: the
    backward kernel's (BD, T, num_warps) where the caller laid its buffers out per channel block
    (deterministic mode's partial sums), else this module's; the other passes keep per-channel buffers and
    take this module's. Five launches, each planned once per layout (tu.launch_planned)."""
    u, delta, A, C, z, bias, dout = (tensors[i] for i in (0, 1, 2, 4, 6, 7, 8))
    batch, dim, L = u.shape
    softplus = kw["SOFTPLUS"]
    scratch = torch.empty((batch, dim, args["N"]), device=u.device, dtype=torch.float32)  # the unused last states
    h, dsum = _start_states(tensors[:8] + (scratch, scratch), A, args, chunk, softplus, scratch, None, 0, key)
    p = torch.empty_like(h)

    def adjoint() -> Tuple[None, Tuple[int, int, int], Tuple[int, ...], dict]:
        bd, t, warps = _config(dim)
        return None, (grid_size(dim, bd), batch, grid_size(L, chunk)), (
            dim, L, args["N"], args["G_C"], args["DPG_C"], chunk, grid_size(L, chunk),
            args["s_db"], args["s_dd"], args["s_dl"], args["s_zb"], args["s_zd"], args["s_zl"],
            kw["s_gb"], kw["s_gd"], kw["s_gl"], args["s_ad"], args["s_an"],
            args["s_Cb"], args["s_Cg"], args["s_Cn"], args["s_Cl"]), dict(
            C_VAR=args["C_VAR"], HAS_Z=args["HAS_Z"], HAS_BIAS=args["HAS_BIAS"], SOFTPLUS=softplus, BD=bd,
            BN=args["BN"], T=t, num_warps=warps)

    # delta ... dout are the caller's (z and delta_bias, or the new du standing in); p is new
    tu.launch_planned(_ADJOINT_LAUNCHES, (key, chunk), _adjoint_kernel, (delta, A, C, z, bias, dout, p), adjoint,
                      checked=6)
    _carry(A, p, dsum, scratch, None, args, chunk, 0, reverse=True, key=key)

    def last_pass() -> Tuple[None, Tuple[int, int, int], Tuple[()], dict]:
        bd, t, warps = config or _config(dim)
        return None, (grid_size(dim, bd), batch, grid_size(L, chunk)), (), dict(
            CHUNK=chunk, CHUNKED=True, BD=bd, T=t, num_warps=warps, **kw, **args)

    tu.launch_planned(_BWD_LAUNCHES, (key, chunk, config), _ssm_bwd_kernel, (*tensors, h, p), last_pass, checked=9)
