"""The selective scan's Triton kernels and the jit helpers they share: the one-pass forward and
backward (host side: `selective_scan.triton`) and the building blocks of the sequence-parallel kernels
(`selective_scan.triton_chunked`). A module of its own so that both host modules import it and neither
imports the other's kernels (the algorithm: `selective_scan.triton`'s docstring)."""

from __future__ import annotations

from jetson_mamba.ops import triton_utils as tu
from jetson_mamba.ops.triton_utils import tl, triton


def _uniform(groups: int, dpg: int, bd: int) -> bool:
    """Whether every channel block of bd channels lies in one B/C group (dpg channels per group)."""
    return groups == 1 or dpg % bd == 0


def _slots(groups: int, dpg: int, bd: int) -> int:
    """Deterministic mode: the most B/C groups one channel block touches (its rows in the partial buffer)."""
    return 1 if _uniform(groups, dpg, bd) else min(groups, bd, -(-(bd - 1) // dpg) + 1)


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
    def _tile_inputs(u_ptr, delta_ptr, pid_b, t0, offs_t, offs_d, mask_d, bias, L, s_ub, s_ud, s_ul, s_db, s_dd,
                     s_dl, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
        """The (T, BD) tile of steps t0 + offs_t, as every scan kernel reads it: the steps, their mask, the
        tile's mask, u and delta (fp32, + bias, softplus; 0 on masked steps), and delta before softplus."""
        tt = t0 + offs_t
        mask_t = tt < L
        m2 = mask_t[:, None] & mask_d[None, :]
        uu = tl.load(u_ptr + pid_b * s_ub + tt[:, None] * s_ul + offs_d[None, :] * s_ud,
                     mask=m2, other=0.0).to(tl.float32)
        dl, raw = _load_delta(delta_ptr + pid_b * s_db, tt[:, None] * s_dl + offs_d[None, :] * s_dd,
                              m2, bias[None, :], HAS_BIAS, SOFTPLUS)
        return tt, mask_t, m2, uu, dl, raw

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
            tt, mask_t, m2, uu, dl, _raw = _tile_inputs(u_ptr, delta_ptr, pid_b, t0, offs_t, offs_d, mask_d, bias, L,
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
            tt, mask_t, m2, uu, dl, _raw = _tile_inputs(u_ptr, delta_ptr, pid_b, c * T, offs_t, offs_d, mask_d, bias,
                                                        L, s_ub, s_ud, s_ul, s_db, s_dd, s_dl, HAS_BIAS, SOFTPLUS)
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
            tt, mask_t, m2, uu, dl, raw = _tile_inputs(u_ptr, delta_ptr, pid_b, c * T, offs_t, offs_d, mask_d, bias,
                                                       L, s_ub, s_ud, s_ul, s_db, s_dd, s_dl, HAS_BIAS, SOFTPLUS)
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
