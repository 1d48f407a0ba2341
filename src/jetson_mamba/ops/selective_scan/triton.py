"""Selective scan (mamba-ssm semantics) as Triton kernels: forward, and a backward that recomputes.

Layout of the work: one program per (block of BD channels, batch row) holds the fp32 state of
its channels (N x BD) and walks the sequence in chunks of T steps. Inside a chunk the linear
recurrence x_t = exp(delta_t A) x_{t-1} + delta_t B_t u_t is an associative scan over
(decay, input) pairs; the state is carried from chunk to chunk. Tiles are (T, N, BD) with the
channels last, so Triton puts the lanes on channels (and states) and each thread scans its
T steps in registers: a tile with time last put the lanes on time and cost ~13 warp shuffles
per element (measured from the SASS), the bottleneck of the first version.

The backward first runs the recurrence forward once, keeping only the state at each chunk
boundary (batch x dim x L/T x N floats, not the L x N history), then walks the chunks in reverse:
it recomputes the chunk's states from its boundary state and runs the adjoint recurrence
g_t = C_t dy_t + exp(delta_{t+1} A) g_{t+1} as a reverse scan. Gradients that sum over channels
(variable B and C) or over batch rows (A, D, delta_bias, fixed B and C) go through fp32 atomics, or, in
deterministic mode (torch.use_deterministic_algorithms), into per-program slots that the host adds up in a
fixed order: float atomics add in whatever order the programs arrive, so their sums change run to run.
"""

from __future__ import annotations

import functools
import operator
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from jetson_mamba.errors import BackendUnavailableError
from jetson_mamba.ops import triton_utils as tu
from jetson_mamba.ops.triton_utils import grid_size, tl, triton

is_available = tu.is_available
WRITES_INTO_BUFFERS = True  # the backward takes a caller's dz buffer (standins._buffers)

if triton is not None:
    from jetson_mamba.ops.triton_utils import sigmoid, softplus

    @tu.elementwise_combine
    @triton.jit
    def _affine_combine(a1, b1, a2, b2):
        """Compose x -> a1 x + b1 then x -> a2 x + b2."""
        return a1 * a2, a2 * b1 + b2

    @triton.jit
    def _bias_and_d(bias_ptr, D_ptr, offs_d, mask_d, BD: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_D: tl.constexpr):
        """delta_bias and D of a channel block in fp32 (zeros where absent), shared by every scan kernel."""
        bias = tl.zeros([BD], dtype=tl.float32)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
        Dv = tl.zeros([BD], dtype=tl.float32)
        if HAS_D:
            Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
        return bias, Dv

    @triton.jit
    def _fwd_block(A_ptr, dim, N, s_ad, s_an, BD: tl.constexpr, BN: tl.constexpr, T: tl.constexpr):
        """A scan kernel's program (channel block: axis 0, batch row: axis 1; forward and backward): its batch
        row, channel, state and step offsets, masks, and A * log2(e) (BN, BD) for exp2."""
        pid_d = tl.program_id(0)
        pid_b = tl.program_id(1).to(tl.int64)
        offs_d = pid_d * BD + tl.arange(0, BD)
        offs_n = tl.arange(0, BN)
        offs_t = tl.arange(0, T)
        mask_d = offs_d < dim
        mask_n = offs_n < N
        m_nd = mask_n[:, None] & mask_d[None, :]
        A2 = tl.load(A_ptr + offs_n[:, None] * s_an + offs_d[None, :] * s_ad, mask=m_nd, other=0.0) * 1.4426950408889634
        return pid_b, offs_d, offs_n, offs_t, mask_d, mask_n, m_nd, A2

    @triton.jit
    def _fwd_inputs(u_ptr, delta_ptr, pid_b, tt, offs_d, mask_t, mask_d, bias, s_ub, s_ud, s_ul, s_db, s_dd, s_dl,
                    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
        """A forward tile's (T, BD) mask, u and delta (fp32, + bias, softplus; 0 on masked steps)."""
        m2 = mask_t[:, None] & mask_d[None, :]
        uu = tl.load(u_ptr + pid_b * s_ub + tt[:, None] * s_ul + offs_d[None, :] * s_ud,
                     mask=m2, other=0.0).to(tl.float32)
        dl, _raw = _load_delta(delta_ptr + pid_b * s_db, tt[:, None] * s_dl + offs_d[None, :] * s_dd,
                               m2, bias[None, :], HAS_BIAS, SOFTPLUS)
        return m2, uu, dl

    @triton.jit
    def _store_out(out_ptr, outz_ptr, z_ptr, xx, Ct, Dv, uu, m2, pid_b, tt, offs_d,
                   s_ob, s_od, s_ol, s_zb, s_zd, s_zl, HAS_Z: tl.constexpr):
        """A forward tile's out = C . states + D u, and out * silu(z) with z."""
        y = tl.sum(xx * Ct, axis=1) + Dv[None, :] * uu
        o = tt[:, None] * s_ol + offs_d[None, :] * s_od
        tl.store(out_ptr + pid_b * s_ob + o, y.to(out_ptr.dtype.element_ty), mask=m2)
        if HAS_Z:
            zz = tl.load(z_ptr + pid_b * s_zb + tt[:, None] * s_zl + offs_d[None, :] * s_zd,
                         mask=m2, other=0.0).to(tl.float32)
            tl.store(outz_ptr + pid_b * s_ob + o, (y * zz * sigmoid(zz)).to(outz_ptr.dtype.element_ty), mask=m2)

    @triton.jit
    def _load_delta(delta_ptr, offs, m2, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
        """delta (+ bias, broadcast to the tile) in fp32, softplus; 0 on masked steps (no decay, no input)."""
        raw = tl.load(delta_ptr + offs, mask=m2, other=0.0).to(tl.float32)
        if HAS_BIAS:
            raw = raw + bias
        dl = raw
        if SOFTPLUS:
            dl = softplus(raw)
        return tl.where(m2, dl, 0.0), raw

    @triton.jit
    def _load_bc_t(ptr, pid_b, offs_d, offs_n, tt, mask_d, mask_n, mask_t, dpg,
                   s_b, s_g, s_n, s_l, BD: tl.constexpr, VAR: tl.constexpr, UNIFORM: tl.constexpr):
        """B or C for one chunk, shaped to broadcast against the forward's (T, BN, BD) tile."""
        if VAR:
            base = ptr + pid_b * s_b
            if UNIFORM:
                g = (tl.program_id(0) * BD) // dpg
                p = base + g * s_g + tt[:, None] * s_l + offs_n[None, :] * s_n
                v = tl.load(p, mask=mask_t[:, None] & mask_n[None, :], other=0.0).to(tl.float32)
                res = v[:, :, None]
            else:
                g = offs_d // dpg
                p = base + tt[:, None, None] * s_l + offs_n[None, :, None] * s_n + g[None, None, :] * s_g
                m = mask_t[:, None, None] & mask_n[None, :, None] & mask_d[None, None, :]
                res = tl.load(p, mask=m, other=0.0).to(tl.float32)
        else:
            p = ptr + offs_n[:, None] * s_n + offs_d[None, :] * s_g
            v = tl.load(p, mask=mask_n[:, None] & mask_d[None, :], other=0.0).to(tl.float32)
            res = v[None, :, :]
        return res

    @triton.heuristics({
        "B_UNIFORM": lambda a: a["G_B"] == 1 or a["DPG_B"] % a["BD"] == 0,
        "C_UNIFORM": lambda a: a["G_C"] == 1 or a["DPG_C"] % a["BD"] == 0,
    })
    @triton.jit(do_not_specialize=["batch_class", "L_class"])  # keys for the autotuner, not variants
    def _ssm_fwd_kernel(
        u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, outz_ptr, last_ptr, x_ptr,
        dim, L, N, G_B, G_C, DPG_B, DPG_C, batch_class, L_class, X_EVERY,
        s_ub, s_ud, s_ul, s_db, s_dd, s_dl, s_zb, s_zd, s_zl, s_ob, s_od, s_ol, s_ad, s_an,
        s_Bb, s_Bg, s_Bn, s_Bl, s_Cb, s_Cg, s_Cn, s_Cl, s_xb, s_xd, s_xc,
        B_VAR: tl.constexpr, C_VAR: tl.constexpr, B_UNIFORM: tl.constexpr, C_UNIFORM: tl.constexpr,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
        HAS_X: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr, T: tl.constexpr,
    ):
        # Tile (T, BN, BD) with channels last: Triton spreads lanes over channels (then states),
        # so the scan over time and most of the sum over states stay inside each thread (no shuffles).
        pid_b, offs_d, offs_n, offs_t, mask_d, mask_n, m_nd, A2 = _fwd_block(A_ptr, dim, N, s_ad, s_an, BD, BN, T)
        bias, Dv = _bias_and_d(bias_ptr, D_ptr, offs_d, mask_d, BD, HAS_BIAS, HAS_D)
        h = tl.zeros([BN, BD], dtype=tl.float32)
        dsum = tl.zeros([BD], dtype=tl.float32)  # delta summed from the start, for x's decay products
        x_base = x_ptr + pid_b * s_xb
        for t0 in range(0, L, T):
            tt = t0 + offs_t
            mask_t = tt < L
            m2, uu, dl = _fwd_inputs(u_ptr, delta_ptr, pid_b, tt, offs_d, mask_t, mask_d, bias,
                                     s_ub, s_ud, s_ul, s_db, s_dd, s_dl, HAS_BIAS, SOFTPLUS)
            if HAS_X:
                dsum += tl.sum(dl, axis=0)
            Bt = _load_bc_t(B_ptr, pid_b, offs_d, offs_n, tt, mask_d, mask_n, mask_t, DPG_B,
                            s_Bb, s_Bg, s_Bn, s_Bl, BD, B_VAR, B_UNIFORM)
            Ct = _load_bc_t(C_ptr, pid_b, offs_d, offs_n, tt, mask_d, mask_n, mask_t, DPG_C,
                            s_Cb, s_Cg, s_Cn, s_Cl, BD, C_VAR, C_UNIFORM)
            xx, _dA, _dBu = _chunk_states(dl, uu, A2, Bt, h)
            h = _last_row(xx, offs_t, T)
            end = t0 + T  # X_EVERY is a multiple of T, so chunk ends fall on tile ends; the last one is below
            if HAS_X and (end % X_EVERY == 0) & (end < L):
                _store_x(x_base, end // X_EVERY - 1, dsum, A2, h, offs_d, offs_n, m_nd, s_xd, s_xc)
            _store_out(out_ptr, outz_ptr, z_ptr, xx, Ct, Dv, uu, m2, pid_b, tt, offs_d,
                       s_ob, s_od, s_ol, s_zb, s_zd, s_zl, HAS_Z)
        p_last = last_ptr + pid_b * dim * N + offs_d[None, :] * N + offs_n[:, None]
        tl.store(p_last, h, mask=m_nd)
        if HAS_X:
            _store_x(x_base, (L - 1) // X_EVERY, dsum, A2, h, offs_d, offs_n, m_nd, s_xd, s_xc)

    @triton.jit
    def _store_x(base, c, dsum, A2, h, offs_d, offs_n, m_nd, s_xd, s_xc):
        """Chunk c's entry of x, the compiled kernels' layout: (decay product, state) pairs over states."""
        p = base + c * s_xc + offs_d[None, :] * s_xd + 2 * offs_n[:, None]
        tl.store(p, tl.exp2(A2 * dsum[None, :]), mask=m_nd)
        tl.store(p + 1, h, mask=m_nd)

    @triton.jit
    def _chunk_states(dl, uu, A2, Bt, h):
        """States (T, BN, BD) of one chunk from its start state h (BN, BD); also decays and inputs."""
        dA = tl.exp2(dl[:, None, :] * A2[None, :, :])
        dBu = (dl * uu)[:, None, :] * Bt
        aa, xx = tl.associative_scan((dA, dBu), 0, _affine_combine)
        return aa * h[None, :, :] + xx, dA, dBu

    @triton.jit
    def _reverse_scan(a, b):
        """associative_scan(..., reverse=True) over time as flip, scan, flip: Triton lowers a reverse scan
        with lane shuffles even though each thread holds its whole time axis (640 per backward tile, most
        of the kernel's shuffles, in the sm_90 SASS of Triton 3.6 and 3.8); flipping that axis is free."""
        ar, br = tl.associative_scan((tl.flip(a, 0), tl.flip(b, 0)), 0, _affine_combine)
        return tl.flip(ar, 0), tl.flip(br, 0)

    @tu.elementwise_combine
    @triton.jit
    def _keep_previous(f1, p1, x1, f2, p2, x2):
        """Scan step over (more than one element?, predecessor, value): each position keeps the value
        before it."""
        return f1 + f2 + 1.0, tl.where(f2 > 0.0, p2, x1), x2

    @triton.jit
    def _next_row(x):
        """x[t + 1] along axis 0, 0 in the last row. A gather would move time onto the lanes, and a second
        load of delta cost a second softplus per step; a forward scan over the flipped axis that keeps
        each position's predecessor stays in registers."""
        zero = tl.zeros_like(x)
        _f, prev, _x = tl.associative_scan((zero, zero, tl.flip(x, 0)), 0, _keep_previous)
        return tl.flip(prev, 0)

    @triton.jit
    def _adjoint(dl, dA, dxx, A2, p_next, offs_t):
        """One tile's adjoint states g (T, BN, BD), g_t = dxx_t + exp(delta_{t+1} A) g_{t+1}, from the
        carried p_next = exp(delta A) g of the next tile's first step; and this tile's p_next.
        exp(delta_{t+1} A): delta one step on, shifted inside each thread (_next_row); 0 in the tile's
        last row (its decay is carried by p_next) and on masked steps, so the factor is 1."""
        dA_next = tl.exp2(_next_row(dl)[:, None, :] * A2[None, :, :])
        ag, gg = _reverse_scan(dA_next, dxx)
        gg = gg + ag * p_next[None, :, :]
        return gg, tl.sum(tl.where(offs_t[:, None, None] == 0, dA * gg, 0.0), axis=0)

    @triton.jit
    def _last_row(x, offs_t, T: tl.constexpr):
        """x[T - 1] (masked steps carry the state unchanged, so this is the chunk's end state)."""
        return tl.sum(tl.where(offs_t[:, None, None] == T - 1, x, 0.0), axis=0)

    @triton.jit
    def _add_bc_grad(acc_ptr, part_ptr, grad, pid_b, offs_d, offs_n, tt, mask_d, mask_n, mask_t, dpg, N, L,
                     s_b, s_g, s_n, s_l, BD: tl.constexpr, UNIFORM: tl.constexpr, DET: tl.constexpr,
                     SLOTS: tl.constexpr):
        """Accumulate a variable/grouped B or C gradient (T, BN, BD) into its fp32 buffer; in deterministic
        mode store this program's sums over its channels of each group instead, into its own SLOTS rows
        ((batch, channel block, slot, N, L), slot s: the block's first group + s) of the partial buffer."""
        base = acc_ptr + pid_b * s_b
        if DET:
            row = (pid_b * tl.num_programs(0) + tl.program_id(0)) * SLOTS
            p = part_ptr + row * N * L + offs_n[None, :] * L + tt[:, None]
            m = mask_t[:, None] & mask_n[None, :]
            if UNIFORM:
                tl.store(p, tl.sum(grad, axis=2), mask=m)
            else:
                local = offs_d // dpg - (tl.program_id(0) * BD) // dpg
                for s in tl.static_range(SLOTS):
                    sel = (local == s) & mask_d
                    tl.store(p + s * N * L, tl.sum(tl.where(sel[None, None, :], grad, 0.0), axis=2), mask=m)
        elif UNIFORM:
            g = (tl.program_id(0) * BD) // dpg
            p = base + g * s_g + tt[:, None] * s_l + offs_n[None, :] * s_n
            tl.atomic_add(p, tl.sum(grad, axis=2), mask=mask_t[:, None] & mask_n[None, :], sem="relaxed")
        else:
            g = offs_d // dpg
            p = base + tt[:, None, None] * s_l + offs_n[None, :, None] * s_n + g[None, None, :] * s_g
            m = mask_t[:, None, None] & mask_n[None, :, None] & mask_d[None, None, :]
            tl.atomic_add(p, grad, mask=m, sem="relaxed")

    @triton.heuristics({
        "B_UNIFORM": lambda a: _uniform(a["G_B"], a["DPG_B"], a["BD"]),
        "C_UNIFORM": lambda a: _uniform(a["G_C"], a["DPG_C"], a["BD"]),
        "B_SLOTS": lambda a: _slots(a["G_B"], a["DPG_B"], a["BD"]),
        "C_SLOTS": lambda a: _slots(a["G_C"], a["DPG_C"], a["BD"]),
    })
    @triton.jit(do_not_specialize=["batch_class", "L_class"])  # keys for the autotuner, not variants
    def _ssm_bwd_kernel(
        u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr, ckpt_ptr,
        du_ptr, ddelta_ptr, dz_ptr, outz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr,
        part_ptr, bpart_ptr, cpart_ptr, hs_ptr, pc_ptr,
        dim, L, N, G_B, G_C, DPG_B, DPG_C, batch_class, L_class, s_ck, CHUNK,
        s_ub, s_ud, s_ul, s_db, s_dd, s_dl, s_zb, s_zd, s_zl, s_gb, s_gd, s_gl, s_ob, s_od, s_ol,
        s_wb, s_wd, s_wl, s_ad, s_an,
        s_Bb, s_Bg, s_Bn, s_Bl, s_Cb, s_Cg, s_Cn, s_Cl,
        B_VAR: tl.constexpr, C_VAR: tl.constexpr, B_UNIFORM: tl.constexpr, C_UNIFORM: tl.constexpr,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_OUTZ: tl.constexpr, HAS_BIAS: tl.constexpr,
        SOFTPLUS: tl.constexpr, DET: tl.constexpr, B_SLOTS: tl.constexpr, C_SLOTS: tl.constexpr,
        CHUNKED: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr, T: tl.constexpr,
    ):
        # Same (T, BN, BD) tiles as the forward. dB/dC buffers are fp32 and laid out like B/C
        # (fixed: (dim, N) through s_*g, s_*n). Strides: dout s_g*, du/ddelta/out_z s_o* (delta's
        # layout), dz s_w* (a caller's buffer: mamba_inner_fn's dz is a view into its dxz).
        # CHUNKED (triton_chunked's backward): program axis 2 is a chunk of CHUNK steps (a multiple of T);
        # the program starts from the chunk's true start state (hs) and the adjoint carried in from the
        # chunks to its right (pc), both (batch, chunk, dim, N), and its partial sums get their own slot.
        pid_b, offs_d, offs_n, offs_t, mask_d, mask_n, m_nd, A2 = _fwd_block(A_ptr, dim, N, s_ad, s_an, BD, BN, T)
        pnd = offs_n[:, None] * s_an + offs_d[None, :] * s_ad
        A = tl.load(A_ptr + pnd, mask=m_nd, other=0.0)  # the same load as A2's: one read after CSE
        bias, Dv = _bias_and_d(bias_ptr, D_ptr, offs_d, mask_d, BD, HAS_BIAS, HAS_D)
        u_base = u_ptr + pid_b * s_ub
        d_base = delta_ptr + pid_b * s_db
        n_chunks = tl.cdiv(L, T)
        ck = ckpt_ptr + pid_b * dim * s_ck + offs_d[None, :] * s_ck + offs_n[:, None]
        h = tl.zeros([BN, BD], dtype=tl.float32)
        p_next = tl.zeros([BN, BD], dtype=tl.float32)
        first = 0
        stop = n_chunks
        prow = pid_b  # the program's slot in deterministic mode's partial sums
        if CHUNKED:
            k = tl.program_id(2)
            first = k * (CHUNK // T)
            stop = tl.minimum(first + CHUNK // T, n_chunks)
            prow = pid_b * tl.num_programs(2) + k
            p_hs = prow * dim * N + offs_d[None, :] * N + offs_n[:, None]
            h = tl.load(hs_ptr + p_hs, mask=m_nd, other=0.0)
            p_next = tl.load(pc_ptr + p_hs, mask=m_nd, other=0.0)

        # Pass 1: the state at the start of every tile ("chunk" below: T steps).
        for c in range(first, stop):
            tl.store(ck + c * BN, h, mask=m_nd)
            tt = c * T + offs_t
            mask_t = tt < L
            m2 = mask_t[:, None] & mask_d[None, :]
            uu = tl.load(u_base + tt[:, None] * s_ul + offs_d[None, :] * s_ud, mask=m2, other=0.0).to(tl.float32)
            dl, _raw = _load_delta(d_base, tt[:, None] * s_dl + offs_d[None, :] * s_dd, m2, bias[None, :],
                                   HAS_BIAS, SOFTPLUS)
            Bt = _load_bc_t(B_ptr, pid_b, offs_d, offs_n, tt, mask_d, mask_n, mask_t, DPG_B,
                            s_Bb, s_Bg, s_Bn, s_Bl, BD, B_VAR, B_UNIFORM)
            xx, _dA, _dBu = _chunk_states(dl, uu, A2, Bt, h)
            h = _last_row(xx, offs_t, T)
        tl.debug_barrier()

        # Pass 2: chunks in reverse, adjoint carried as p = exp(delta_t A) g_t of the chunk's first step.
        dA_acc = tl.zeros([BN, BD], dtype=tl.float32)
        dBf_acc = tl.zeros([BN, BD], dtype=tl.float32)
        dCf_acc = tl.zeros([BN, BD], dtype=tl.float32)
        dD_acc = tl.zeros([BD], dtype=tl.float32)
        dbias_acc = tl.zeros([BD], dtype=tl.float32)
        for i in range(0, stop - first):
            c = stop - 1 - i
            tt = c * T + offs_t
            mask_t = tt < L
            m2 = mask_t[:, None] & mask_d[None, :]
            uu = tl.load(u_base + tt[:, None] * s_ul + offs_d[None, :] * s_ud, mask=m2, other=0.0).to(tl.float32)
            dl, raw = _load_delta(d_base, tt[:, None] * s_dl + offs_d[None, :] * s_dd, m2, bias[None, :],
                                  HAS_BIAS, SOFTPLUS)
            Bt = _load_bc_t(B_ptr, pid_b, offs_d, offs_n, tt, mask_d, mask_n, mask_t, DPG_B,
                            s_Bb, s_Bg, s_Bn, s_Bl, BD, B_VAR, B_UNIFORM)
            Ct = _load_bc_t(C_ptr, pid_b, offs_d, offs_n, tt, mask_d, mask_n, mask_t, DPG_C,
                            s_Cb, s_Cg, s_Cn, s_Cl, BD, C_VAR, C_UNIFORM)
            h0 = tl.load(ck + c * BN, mask=m_nd, other=0.0)
            xx, dA, dBu = _chunk_states(dl, uu, A2, Bt, h0)
            og = tt[:, None] * s_gl + offs_d[None, :] * s_gd
            oo = pid_b * s_ob + tt[:, None] * s_ol + offs_d[None, :] * s_od
            dy = tl.load(dout_ptr + pid_b * s_gb + og, mask=m2, other=0.0).to(tl.float32)
            if HAS_Z:
                zz = tl.load(z_ptr + pid_b * s_zb + tt[:, None] * s_zl + offs_d[None, :] * s_zd,
                             mask=m2, other=0.0).to(tl.float32)
                y = tl.sum(xx * Ct, axis=1) + Dv[None, :] * uu
                sz = sigmoid(zz)
                dz = dy * y * sz * (1.0 + zz * (1.0 - sz))
                tl.store(dz_ptr + pid_b * s_wb + tt[:, None] * s_wl + offs_d[None, :] * s_wd,
                         dz.to(dz_ptr.dtype.element_ty), mask=m2)
                if HAS_OUTZ:  # the recomputed gated output (mamba_ssm's recompute_out_z)
                    tl.store(outz_ptr + oo, (y * zz * sz).to(outz_ptr.dtype.element_ty), mask=m2)
                dy = dy * zz * sz
            dD_acc += tl.sum(dy * uu, axis=0)
            dxx = dy[:, None, :] * Ct
            dC = dy[:, None, :] * xx
            if C_VAR:
                _add_bc_grad(dC_ptr, cpart_ptr, dC, pid_b, offs_d, offs_n, tt, mask_d, mask_n, mask_t, DPG_C, N, L,
                             s_Cb, s_Cg, s_Cn, s_Cl, BD, C_UNIFORM, DET, C_SLOTS)
            else:
                dCf_acc += tl.sum(dC, axis=0)
            gg, p_next = _adjoint(dl, dA, dxx, A2, p_next, offs_t)
            dB = gg * (dl * uu)[:, None, :]
            if B_VAR:
                _add_bc_grad(dB_ptr, bpart_ptr, dB, pid_b, offs_d, offs_n, tt, mask_d, mask_n, mask_t, DPG_B, N, L,
                             s_Bb, s_Bg, s_Bn, s_Bl, BD, B_UNIFORM, DET, B_SLOTS)
            else:
                dBf_acc += tl.sum(dB, axis=0)
            gB = tl.sum(gg * Bt, axis=1)
            w = gg * (xx - dBu)  # g_t exp(delta_t A) x_{t-1}
            du = dy * Dv[None, :] + gB * dl
            ddl = gB * uu + tl.sum(w * A[None, :, :], axis=1)
            dA_acc += tl.sum(w * dl[:, None, :], axis=0)
            if SOFTPLUS:
                ddl = tl.where(raw <= 20.0, ddl * sigmoid(raw), ddl)
            ddl = tl.where(m2, ddl, 0.0)
            dbias_acc += tl.sum(ddl, axis=0)
            tl.store(du_ptr + oo, du.to(du_ptr.dtype.element_ty), mask=m2)
            tl.store(ddelta_ptr + oo, ddl.to(ddelta_ptr.dtype.element_ty), mask=m2)

        if DET:  # this batch row's (and chunk's) sums, into its own slot (rows, 3 N + 2, dim) of the partial buffer
            slot = part_ptr + prow * (3 * N + 2) * dim + offs_n[:, None] * dim + offs_d[None, :]
            tl.store(slot, dA_acc, mask=m_nd)
            if not B_VAR:
                tl.store(slot + N * dim, dBf_acc, mask=m_nd)
            if not C_VAR:
                tl.store(slot + 2 * N * dim, dCf_acc, mask=m_nd)
            row = part_ptr + prow * (3 * N + 2) * dim + 3 * N * dim + offs_d
            if HAS_D:
                tl.store(row, dD_acc, mask=mask_d)
            if HAS_BIAS:
                tl.store(row + dim, dbias_acc, mask=mask_d)
        else:
            tl.atomic_add(dA_ptr + pnd, dA_acc, mask=m_nd, sem="relaxed")
            if not B_VAR:
                tl.atomic_add(dB_ptr + offs_n[:, None] * s_Bn + offs_d[None, :] * s_Bg, dBf_acc, mask=m_nd,
                              sem="relaxed")
            if not C_VAR:
                tl.atomic_add(dC_ptr + offs_n[:, None] * s_Cn + offs_d[None, :] * s_Cg, dCf_acc, mask=m_nd,
                              sem="relaxed")
            if HAS_D:
                tl.atomic_add(dD_ptr + offs_d, dD_acc, mask=mask_d, sem="relaxed")
            if HAS_BIAS:
                tl.atomic_add(dbias_ptr + offs_d, dbias_acc, mask=mask_d, sem="relaxed")

# (BD, T, num_warps), the autotuner's candidates (first: used alone with JETSON_MAMBA_TRITON_AUTOTUNE=0).
# Small T and few warps keep each thread's (T x states) slab in registers; all compile for sm_87.
# BD=2 is for batch 1 with few channels (Mamba-YOLO's first stages): dim/BD programs must fill the GPU.
_FWD_CONFIGS = [(8, 8, 1), (8, 16, 1), (4, 16, 1), (16, 8, 1), (4, 8, 1), (16, 4, 1), (32, 4, 1), (64, 4, 2),
                (2, 16, 1), (2, 32, 1)]
_BWD_CONFIGS = [(8, 8, 1), (4, 8, 1), (16, 4, 1), (8, 4, 1), (2, 16, 1), (4, 4, 1)]
# The interpreter's tiles (triton_utils' launch plan): small up to 64 channels, wide above (one program per
# 1024 channels and batch row, 32 steps a tile: upstream's mamba_inner_fn at dim 768 in 2 programs).
_INTERPRET_CONFIG = (2, 8, 1)
_INTERPRET_WIDE = (tu.INTERPRET_WIDE_CHANNELS, 32, 1)
_T_MAX = max(t for _, t, _ in _FWD_CONFIGS + [_INTERPRET_CONFIG, _INTERPRET_WIDE])  # x's chunk ends: tile ends


def _configs(table):
    return [triton.Config({"BD": bd, "T": t}, num_warps=w) for bd, t, w in table]


def _tuned(kernel, configs, key, interpret=_INTERPRET_CONFIG, **kwargs):
    """Wrap a kernel in Triton's autotuner (one config, `interpret`, when interpreting; results cached on disk)."""
    return triton.autotune(tu.autotune_configs(configs, _configs([interpret])[0]), key=key, **tu.autotune_kwargs(),
                           **kwargs)(kernel)


# batch_class and L_class are in the kernels' signatures for this key alone. Batch: one program per
# (channel block, batch row), so batch 1 wants narrower blocks than batch 8 at the same dim. Length:
# its power-of-two class (triton_utils.next_power_of_2): keyed on the exact length, every new prompt
# length was tuned again (each candidate benchmarked, about 0.1 s apiece with Triton's defaults).
_KEY = ["dim", "L_class", "N", "G_B", "G_C", "DPG_B", "DPG_C", "batch_class"]
_KEY_VALUES = operator.itemgetter(*_KEY)
_fwd = _tuned(_ssm_fwd_kernel, _configs(_FWD_CONFIGS), _KEY) if triton is not None else None
_bwd = _tuned(_ssm_bwd_kernel, _configs(_BWD_CONFIGS), _KEY,
              reset_to_zero=["dA_ptr", "dB_ptr", "dC_ptr", "dD_ptr", "dbias_ptr"]) if triton is not None else None
# the interpreter's wide variants (tu.for_channels picks them above 64 channels); None on a GPU
_fwd_wide = _tuned(_ssm_fwd_kernel, [], _KEY, _INTERPRET_WIDE) if tu.INTERPRET and triton is not None else None
_bwd_wide = _tuned(_ssm_bwd_kernel, [], _KEY, _INTERPRET_WIDE) if tu.INTERPRET and triton is not None else None
# Deterministic mode's backward: one config (the table's first, the interpreter's under it), so the channel
# block, which sizes the buffers of partial sums, is known before the launch; nothing to tune or reset.
_DET_CONFIG = _INTERPRET_CONFIG if tu.INTERPRET else _BWD_CONFIGS[0]
_bwd_det = _tuned(_ssm_bwd_kernel, _configs([_DET_CONFIG]), _KEY) if triton is not None else None


def _uniform(groups: int, dpg: int, bd: int) -> bool:
    """Whether every channel block of bd channels lies in one B/C group (dpg channels per group)."""
    return groups == 1 or dpg % bd == 0


def _slots(groups: int, dpg: int, bd: int) -> int:
    """Deterministic mode: the most B/C groups one channel block touches (its rows in the partial buffer)."""
    return 1 if _uniform(groups, dpg, bd) else min(groups, bd, -(-(bd - 1) // dpg) + 1)


def _bc_layout(M: torch.Tensor, dim: int, N: int, name: str) -> Tuple[bool, int, int, Tuple[int, int, int, int]]:
    """(variable, groups, channels per group, strides (batch, group, state, time)) of B or C."""
    if M.dim() == 2:
        if tuple(M.shape) != (dim, N):
            raise ValueError(f"fixed {name} must have shape (dim, dstate) = ({dim}, {N}), got {tuple(M.shape)}")
        s_d, s_n = M.stride()
        return False, dim, 1, (0, s_d, s_n, 0)
    if M.dim() == 3:
        s_b, s_n, s_l = M.stride()
        return True, 1, dim, (s_b, 0, s_n, s_l)
    if M.dim() == 4:
        G = M.shape[1]
        if dim % G != 0:
            raise ValueError(f"grouped {name} has {G} groups, which does not divide dim={dim}")
        return True, G, dim // G, M.stride()
    raise ValueError(f"{name} must be (dim, dstate), (batch, dstate, L) or (batch, groups, dstate, L)")


def batch_class(batch: int) -> int:
    """The batch as the autotuner sees it: 1, 2, 4, 8 or 16 (16 and more fill any GPU alike)."""
    return min(tu.next_power_of_2(batch), 16)


def _check(u: torch.Tensor, A: torch.Tensor) -> None:
    if A.dtype.is_complex:
        raise BackendUnavailableError(
            "the Triton selective scan takes a real A; complex A is not supported",
            "use JETSON_MAMBA_BACKEND=torch (or the compiled kernel) for complex-valued models")
    reason = is_available(u.device, u.dtype)
    if reason is not None:
        raise BackendUnavailableError(f"the Triton selective scan cannot run: {reason}",
                                      "use JETSON_MAMBA_BACKEND=torch, or run on a CUDA GPU")


def _common_args(u, delta, A, B, C, D, z, delta_bias):
    """Kernel arguments shared by forward and backward, plus the B/C layouts (plain Python: this runs
    on every call, where each microsecond adds to the launch's host cost)."""
    batch, dim, L = u.shape
    N = A.shape[1]
    if delta.shape != u.shape or (z is not None and z.shape != u.shape):
        raise ValueError(f"u, delta and z must all have shape {tuple(u.shape)}")
    b_var, g_b, dpg_b, sb = _bc_layout(B, dim, N, "B")
    c_var, g_c, dpg_c, sc = _bc_layout(C, dim, N, "C")
    us, ds, As = u.stride(), delta.stride(), A.stride()
    zs = z.stride() if z is not None else (0, 0, 0)
    return dict(
        dim=dim, L=L, N=N, G_B=g_b, G_C=g_c, DPG_B=dpg_b, DPG_C=dpg_c, batch_class=batch_class(batch),
        L_class=tu.next_power_of_2(L),
        s_ub=us[0], s_ud=us[1], s_ul=us[2], s_db=ds[0], s_dd=ds[1], s_dl=ds[2],
        s_zb=zs[0], s_zd=zs[1], s_zl=zs[2], s_ad=As[0], s_an=As[1],
        s_Bb=sb[0], s_Bg=sb[1], s_Bn=sb[2], s_Bl=sb[3], s_Cb=sc[0], s_Cg=sc[1], s_Cn=sc[2], s_Cl=sc[3],
        B_VAR=b_var, C_VAR=c_var, HAS_D=D is not None, HAS_Z=z is not None,
        HAS_BIAS=delta_bias is not None, BN=max(tu.next_power_of_2(N), 2),
    )


def _launch_key(args: Dict[str, Any], u: torch.Tensor, delta: torch.Tensor, B: torch.Tensor,
                C: torch.Tensor) -> Tuple[Any, ...]:
    """What the autotuner keys a scan launch on: _KEY's values and the inputs' dtypes (one itemgetter call:
    a generator over the keys cost ~4 us per launch here)."""
    return (*_KEY_VALUES(args), u.dtype, delta.dtype, B.dtype, C.dtype)


def selective_scan_forward(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
    delta_bias: Optional[torch.Tensor] = None, delta_softplus: bool = False,
) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
    """(out = y + D u, out_z = out * silu(z) or None, last state fp32 (batch, dim, dstate))."""
    out, out_z, last, _ = _forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, every=0)
    return out, out_z, last


def selective_scan_forward_x(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: Optional[torch.Tensor], z: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor],
    delta_softplus: bool, every: int,
) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
    """(out, out_z or None, x): x (batch, dim, ceil(L / every), 2 * dstate) fp32 as the compiled kernels
    keep it, written by the same kernel: at each chunk's end the decay product from the start
    ([..., 0::2]) and the state ([..., 1::2]). `every`: a multiple of the largest tile (32 steps)."""
    if every <= 0 or every % _T_MAX:
        raise ValueError(f"x keeps a state every {every} steps; the Triton scan needs a multiple of {_T_MAX}")
    out, out_z, _, x = _forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, every)
    assert x is not None
    return out, out_z, x


def _forward(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: Optional[torch.Tensor], z: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor],
    delta_softplus: bool, every: int,
) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor, Optional[torch.Tensor]]:
    """(out, out_z, last state, x or None for every=0)."""
    _check(u, A)
    batch, dim, L = u.shape
    N = A.shape[1]
    args = _common_args(u, delta, A, B, C, D, z, delta_bias)
    from jetson_mamba.ops.selective_scan import triton_chunked  # imports this module's helpers

    chunk = triton_chunked.chunk_for(u, forward=True)  # small batch x dim, in a CUDA graph: the sequence-parallel path
    if chunk and every % chunk == 0:
        return triton_chunked.forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, args, chunk, every)
    out = torch.empty((batch, dim, L), device=u.device, dtype=u.dtype)
    out_z = torch.empty_like(out) if z is not None else None
    last = torch.empty((batch, dim, N), device=u.device, dtype=torch.float32)
    x = torch.empty((batch, dim, grid_size(L, every), 2 * N), device=u.device, dtype=torch.float32) if every else None
    xs = x.stride() if x is not None else (0, 0, 0)
    dummy = out
    grid = lambda meta: (grid_size(dim, meta["BD"]), batch)  # noqa: E731
    tu.launch_tuned(
        tu.for_channels(dim, _fwd, _fwd_wide), _launch_key(args, u, delta, B, C), grid,
        u, delta, A, B, C, D if D is not None else dummy, z if z is not None else dummy,
        delta_bias if delta_bias is not None else dummy, out, out_z if out_z is not None else dummy, last,
        x if x is not None else last, X_EVERY=every or 1, s_xb=xs[0], s_xd=xs[1], s_xc=xs[2], HAS_X=x is not None,
        s_ob=out.stride(0), s_od=out.stride(1), s_ol=out.stride(2), SOFTPLUS=bool(delta_softplus), **args,
    )
    return out, out_z, last, x


def selective_scan_backward(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: Optional[torch.Tensor], z: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor],
    delta_softplus: bool, dout: torch.Tensor, dz: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
           Optional[torch.Tensor], Optional[torch.Tensor], Optional[torch.Tensor]]:
    """(du, ddelta, dA, dB, dC, dD, ddelta_bias, dz); dout is the gradient of out_z (with z) or out.
    `dz`: a caller's buffer (any strides) that the kernel writes dz into, and returns."""
    return _backward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, dout, False, dz)[0]


def selective_scan_backward_out_z(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: Optional[torch.Tensor], z: torch.Tensor, delta_bias: Optional[torch.Tensor],
    delta_softplus: bool, dout: torch.Tensor, dz: Optional[torch.Tensor] = None,
) -> Tuple[Tuple[torch.Tensor, ...], torch.Tensor]:
    """(the 8 gradients of selective_scan_backward, out_z = out * silu(z)): the gated output that
    mamba_ssm's backward asks the compiled kernel to recompute (recompute_out_z), written by the
    backward kernel, which recomputes out anyway, instead of five elementwise passes afterwards."""
    grads, out_z = _backward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, dout, True, dz)
    assert out_z is not None
    return grads, out_z


def _backward(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: Optional[torch.Tensor], z: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor],
    delta_softplus: bool, dout: torch.Tensor, with_out_z: bool, dz: Optional[torch.Tensor],
) -> Tuple[Tuple[Any, ...], Optional[torch.Tensor]]:
    """(the 8 gradients, out_z or None)."""
    if with_out_z and z is None:
        raise ValueError("out_z = out * silu(z) needs z")
    _check(u, A)
    batch, dim, L = u.shape
    args = _common_args(u, delta, A, B, C, D, z, delta_bias)
    # dout is read with its own strides (mamba_inner_fn's is a transposed matmul result; a copy costs a
    # pass over B x D x L), as the compiled kernel does; only a strided time axis is copied.
    if dout.stride(2) != 1:
        dout = dout.contiguous()
    # du, ddelta and out_z take delta's layout (any strides; contiguous where delta overlaps itself), as
    # the compiled kernel's ddelta and out do: mamba_inner_fn's delta is a transposed matmul result, and
    # its backward rearranges these three to (dim, batch * L) for matmuls: views then, not copies.
    du = torch.empty_like(delta, dtype=u.dtype)
    ddelta = torch.empty_like(delta)
    out_z = torch.empty_like(delta, dtype=u.dtype) if with_out_z else None
    if z is None:
        if dz is not None:
            raise ValueError("a dz buffer was given, but there is no z")
    elif dz is None:
        dz = torch.empty(u.shape, device=u.device, dtype=z.dtype)
    elif dz.shape != u.shape or dz.dtype != z.dtype or dz.device != u.device:
        raise ValueError(f"dz must be like z: {tuple(u.shape)} {z.dtype} on {u.device}; got "
                         f"{tuple(dz.shape)} {dz.dtype} on {dz.device}")
    f32 = dict(device=u.device, dtype=torch.float32)
    vec = ((dim,), (1,))
    layouts = ((B.shape, B.stride()), (C.shape, C.stride()), (A.shape, A.stride()),
               vec if D is not None else None, vec if delta_bias is not None else None)
    flat, (dB, dC, dA, dD, dbias) = _zeroed(u.device, layouts)
    max_chunks = grid_size(L, min(c.kwargs["T"] for c in _bwd.configs))
    ckpt = torch.empty((batch, dim, max_chunks, args["BN"]), **f32)
    dummy = du
    from jetson_mamba.ops.selective_scan import triton_chunked  # imports this module's helpers

    chunk = triton_chunked.chunk_for(u)  # small batch x dim: the sequence-parallel backward
    # deterministic mode (torch.use_deterministic_algorithms): partial sums per program instead of atomics
    det = torch.are_deterministic_algorithms_enabled()
    rows = batch * grid_size(L, chunk) if chunk else batch  # programs per channel block
    part, bpart, cpart = _partials(args, batch, rows, u.device) if det else (None, None, None)
    s_wb, s_wd, s_wl = dz.stride() if dz is not None else (0, 0, 0)
    tensors = (
        u, delta, A, B, C, D if D is not None else dummy, z if z is not None else dummy,
        delta_bias if delta_bias is not None else dummy, dout, ckpt,
        du, ddelta, dz if dz is not None else dummy, out_z if out_z is not None else dummy, dA, dB, dC,
        dD if dD is not None else dummy, dbias if dbias is not None else dummy,
        part if part is not None else dummy, bpart if bpart is not None else dummy,
        cpart if cpart is not None else dummy)
    kw = dict(s_ck=ckpt.stride(1), s_gb=dout.stride(0), s_gd=dout.stride(1), s_gl=dout.stride(2),
              s_ob=du.stride(0), s_od=du.stride(1), s_ol=du.stride(2), s_wb=s_wb, s_wd=s_wd, s_wl=s_wl,
              SOFTPLUS=bool(delta_softplus), HAS_OUTZ=with_out_z, DET=det)
    if chunk:
        triton_chunked.backward(tensors, kw, args, chunk)
    else:
        grid = lambda meta: (grid_size(dim, meta["BD"]), batch)  # noqa: E731
        kernel = _bwd_det if det else tu.for_channels(dim, _bwd, _bwd_wide)
        tu.launch_tuned(kernel, _launch_key(args, u, delta, B, C), grid,
                        *tensors, dummy, dummy, CHUNK=0, CHUNKED=False, **kw, **args)
    if part is not None:
        _add_partials(args, part, bpart, cpart, dA, dB, dC, dD, dbias)
    return (du, ddelta, dA, *_cast_bc(flat, dB, dC, B, C, _offsets(layouts)[2]), dD, dbias, dz), out_z


def _zeroed(device: torch.device, layouts: Tuple[Optional[Tuple[Sequence[int], Sequence[int]]], ...]
            ) -> Tuple[torch.Tensor, List[Optional[torch.Tensor]]]:
    """The fp32 gradient buffers the backward kernel adds into atomically, each with the (shape, strides)
    given (the kernel indexes dB/dC/dA with B's/C's/A's strides), as views of one zeroed allocation:
    one fill launch instead of five (each ~2 us of GPU and ~5 us of host time). Returns the flat buffer
    too (_cast_bc casts dB and dC, laid out first and side by side, in one pass)."""
    offsets = _offsets(layouts)
    flat = torch.zeros(offsets[-1], device=device, dtype=torch.float32)
    return flat, [None if lay is None else flat.as_strided(lay[0], lay[1], at) for lay, at in zip(layouts, offsets)]


@functools.lru_cache(maxsize=256)
def _offsets(layouts: Tuple[Optional[Tuple[Sequence[int], Sequence[int]]], ...]) -> Tuple[int, ...]:
    """Where each layout starts in _zeroed's buffer, then its length: each takes the elements from its
    first to its last one (as empty_strided allocates). Once per layout (the sums cost ~8 us a call)."""
    offsets = [0]
    for lay in layouts:
        offsets.append(offsets[-1] + (1 + sum((n - 1) * st for n, st in zip(*lay)) if lay and all(lay[0]) else 0))
    return tuple(offsets)


def _cast_bc(flat: torch.Tensor, dB: torch.Tensor, dC: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
             end: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """dB and dC in B's and C's dtypes: one cast of their span of `flat` (up to `end`) where they share a
    dtype (a Mamba block's bf16 B and C: one copy launch instead of two), else each on its own."""
    if B.dtype is C.dtype and B.dtype is not torch.float32:
        both = flat[:end].to(B.dtype)
        return (both.as_strided(dB.shape, dB.stride(), 0),
                both.as_strided(dC.shape, dC.stride(), dC.storage_offset()))
    return dB.to(B.dtype), dC.to(C.dtype)


def _partials(args: Dict[str, Any], batch: int, rows: int, device: torch.device
              ) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Deterministic mode's buffers of per-program sums: (rows, 3 N + 2, dim) for dA, fixed dB and dC, dD
    and ddelta_bias (each batch row's program of a channel block, or each (batch row, chunk)'s in the
    chunked backward, writes its own slot), and for variable B and C (batch, channel block, slot, N, L), a
    block's sums over its channels in each group it touches (chunks cover disjoint steps of it).
    Every slot the host reads is written (the channel blocks cover dim), so none needs zeroing."""
    bd, dim, N, L = _DET_CONFIG[0], args["dim"], args["N"], args["L"]
    f32 = dict(device=device, dtype=torch.float32)
    blocks = grid_size(dim, bd)
    part = torch.empty(rows, 3 * N + 2, dim, **f32)
    bc = [torch.empty(batch, blocks, _slots(args[f"G_{m}"], args[f"DPG_{m}"], bd), N, L, **f32)
          if args[f"{m}_VAR"] else None for m in "BC"]
    return part, bc[0], bc[1]


def _add_partials(args: Dict[str, Any], part: torch.Tensor, bpart: Optional[torch.Tensor],
                  cpart: Optional[torch.Tensor], dA: torch.Tensor, dB: torch.Tensor, dC: torch.Tensor,
                  dD: Optional[torch.Tensor], dbias: Optional[torch.Tensor]) -> None:
    """The gradients += the partial sums, reduced in a fixed order (torch's sum over one axis and its
    gathers are deterministic)."""
    N = args["N"]

    def rows(lo: int, hi: int) -> torch.Tensor:
        return part[:, lo:hi].sum(0)

    dA.add_(rows(0, N).t())
    for grad, bc, m, lo in ((dB, bpart, "B", N), (dC, cpart, "C", 2 * N)):
        if bc is None:
            grad.add_(rows(lo, lo + N).t())
        else:
            grad.add_(_group_sums(bc, args[f"G_{m}"], args[f"DPG_{m}"]).view_as(grad))
    if dD is not None:
        dD.add_(rows(3 * N, 3 * N + 1)[0])
    if dbias is not None:
        dbias.add_(rows(3 * N + 1, 3 * N + 2)[0])


def _group_sums(bc: torch.Tensor, groups: int, dpg: int) -> torch.Tensor:
    """(batch, groups, N, L): each group's sum of the channel blocks' partial sums (batch, block, slot, N, L),
    block by block in order. Blocks within one group: one sum over an axis; else, per step k, every group
    gathers its k-th block's slot for it (index_add_ would be the one-liner, but adds with atomics on a GPU)."""
    batch, blocks, slots, N, L = bc.shape
    bd = _DET_CONFIG[0]
    if _uniform(groups, dpg, bd):
        return bc.view(batch, groups, blocks // groups, N, L).sum(2)
    g = torch.arange(groups)
    first, last = g * dpg // bd, ((g + 1) * dpg - 1) // bd
    flat = bc.view(batch, blocks * slots, N, L)
    total = torch.zeros(batch, groups, N, L, device=bc.device, dtype=bc.dtype)
    for k in range(int((last - first).max()) + 1):
        j = torch.minimum(first + k, last)
        take = flat[:, (j * slots + g - j * bd // dpg).to(bc.device)]
        total.add_(torch.where((first + k <= last).to(bc.device)[None, :, None, None], take, 0.0))
    return total
