"""Causal depthwise conv1d (causal-conv1d semantics) as Triton kernels: forward, backward, update.

out[t] = act(bias + sum_k w[k] x[t - (W-1) + k]), with x extended on the left by the initial
states (or zeros). With `seq_idx`, taps that reach into another sequence read zero and padding
tokens (seq_idx < 0) give zero, as the CUDA kernel; the initial states belong to the first position's
sequence (causal-conv1d >= 1.7). Each program owns a (channels x steps) tile;
the W shifted loads of x hit L1, so x is read from memory once. The backward recomputes the
pre-activation at the W output positions that each input feeds instead of storing it.

Channel-first tensors with unit time stride (the usual layout) take the "rows" kernels instead:
the tile is (channels, rows of RW steps), a row being 16 bytes (RW = 8 steps of a 16-bit type, 4 of
fp32); each row and the row before it (and after it, in the backward) are read with aligned vector
loads, and the W-1 shifted windows are assembled in registers (`tl.split`/`tl.join` of the RW
columns), where shifted loads would be 2-byte loads (the SASS of the general kernel for bf16: 28 of
its 30 loads were LDG.E.U16; the rows kernel has one LDG.E.128 and one LDG.E.64 of x per thread, no
shared memory). A row is one thread's 16-byte vector: 8 fp32 steps were split across two threads
and the windows went through shared memory (21 barriers in the forward's SASS, 66 in the backward's).
The backward computes each pre-activation once (RW + W - 1 per row instead of RW W).
"""

from __future__ import annotations

from typing import Any, Dict, NamedTuple, Optional, Tuple

import torch

from jetson_mamba.errors import BackendUnavailableError
from jetson_mamba.ops import triton_utils as tu
from jetson_mamba.ops.triton_utils import grid_size, tl, triton

# forward, backward and update take the caller's output buffers (out=, dx=), so the stand-ins of the
# compiled module write into them directly instead of copying a result over (one pass over the tensor)
WRITES_INTO_BUFFERS = True

is_available = tu.is_available

if triton is not None:
    from jetson_mamba.ops.triton_utils import sigmoid

    @triton.jit
    def _xcat(x_ptr, init_ptr, pos, offs_d, mask_d, L, s_xd, s_xl, s_id, s_il,
              W: tl.constexpr, HAS_INIT: tl.constexpr):
        """x at positions `pos` (1-D), reading the initial states (or zero) left of position 0."""
        m = mask_d[:, None] & (pos >= 0)[None, :] & (pos < L)[None, :]
        v = tl.load(x_ptr + offs_d[:, None] * s_xd + pos[None, :] * s_xl, mask=m, other=0.0).to(tl.float32)
        if HAS_INIT:
            mi = mask_d[:, None] & (pos < 0)[None, :] & (pos >= 1 - W)[None, :]
            v += tl.load(init_ptr + offs_d[:, None] * s_id + (pos + W - 1)[None, :] * s_il,
                         mask=mi, other=0.0).to(tl.float32)
        return v

    @triton.jit
    def _channel_bias(bias_ptr, offs_d, mask_d, BD: tl.constexpr, HAS_BIAS: tl.constexpr):
        """A channel block's bias in fp32 (zeros without one), as every conv kernel starts."""
        bias = tl.zeros([BD], dtype=tl.float32)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
        return bias

    @triton.jit
    def _silu_grad(g, a):
        """The gradient at pre-activation a of silu(a), given the gradient g at its output."""
        sg = sigmoid(a)
        return g * sg * (1.0 + a * (1.0 - sg))

    @triton.jit
    def _seq(seq_ptr, pos, L, s_sl, W: tl.constexpr, HAS_INIT: tl.constexpr):
        """seq_idx at positions `pos`; the initial states (positions 1-W .. -1) belong to the first
        position's sequence (as in causal-conv1d >= 1.7); -1 elsewhere outside the sequence."""
        if HAS_INIT:
            inside = (pos >= 1 - W) & (pos < L)
            return tl.load(seq_ptr + tl.maximum(pos, 0) * s_sl, mask=inside, other=-1)
        return tl.load(seq_ptr + pos * s_sl, mask=(pos >= 0) & (pos < L), other=-1)

    @triton.jit
    def _pre(x_ptr, init_ptr, w_ptr, seq_ptr, pos, offs_d, mask_d, bias, L,
             s_xd, s_xl, s_id, s_il, s_wd, s_ww, s_sl,
             W: tl.constexpr, HAS_INIT: tl.constexpr, HAS_SEQ: tl.constexpr):
        """Pre-activation bias + conv at output positions `pos` (BD, len(pos)), fp32."""
        acc = tl.zeros([offs_d.shape[0], pos.shape[0]], dtype=tl.float32) + bias[:, None]
        if HAS_SEQ:
            cur = _seq(seq_ptr, pos, L, s_sl, W, HAS_INIT)
        for k in tl.static_range(W):
            src = pos - (W - 1) + k
            xv = _xcat(x_ptr, init_ptr, src, offs_d, mask_d, L, s_xd, s_xl, s_id, s_il, W, HAS_INIT)
            if HAS_SEQ:
                xv = tl.where((_seq(seq_ptr, src, L, s_sl, W, HAS_INIT) == cur)[None, :], xv, 0.0)
            wk = tl.load(w_ptr + offs_d * s_wd + k * s_ww, mask=mask_d, other=0.0).to(tl.float32)
            acc += wk[:, None] * xv
        return acc

    @triton.jit(do_not_specialize=["L_class"])  # a key for the autotuner, not a variant
    def _conv_fwd_kernel(
        x_ptr, w_ptr, bias_ptr, seq_ptr, init_ptr, out_ptr, final_ptr,
        dim, L, L_class, s_xb, s_xd, s_xl, s_wd, s_ww, s_ob, s_od, s_ol, s_ib, s_id, s_il, s_fb, s_fd, s_fl, s_sb, s_sl,
        W: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_SEQ: tl.constexpr, HAS_INIT: tl.constexpr,
        HAS_FINAL: tl.constexpr, SILU: tl.constexpr, BD: tl.constexpr, BL: tl.constexpr,
    ):
        pid_l = tl.program_id(0)
        pid_d = tl.program_id(1)
        pid_b = tl.program_id(2).to(tl.int64)
        offs_d = pid_d * BD + tl.arange(0, BD)
        offs_l = pid_l * BL + tl.arange(0, BL)
        mask_d = offs_d < dim
        x_b = x_ptr + pid_b * s_xb
        init_b = init_ptr + pid_b * s_ib
        seq_b = seq_ptr + pid_b * s_sb
        bias = _channel_bias(bias_ptr, offs_d, mask_d, BD, HAS_BIAS)
        acc = _pre(x_b, init_b, w_ptr, seq_b, offs_l, offs_d, mask_d, bias, L,
                   s_xd, s_xl, s_id, s_il, s_wd, s_ww, s_sl, W, HAS_INIT, HAS_SEQ)
        if SILU:
            acc = acc * sigmoid(acc)
        if HAS_SEQ:
            acc = tl.where((_seq(seq_b, offs_l, L, s_sl, W, False) >= 0)[None, :], acc, 0.0)
        m2 = mask_d[:, None] & (offs_l < L)[None, :]
        tl.store(out_ptr + pid_b * s_ob + offs_d[:, None] * s_od + offs_l[None, :] * s_ol,
                 acc.to(out_ptr.dtype.element_ty), mask=m2)
        if HAS_FINAL:
            if pid_l == tl.num_programs(0) - 1:
                _store_final(x_b, init_b, final_ptr + pid_b * s_fb, offs_d, mask_d, L, s_xd, s_xl, s_id, s_il,
                             s_fd, s_fl, W, HAS_INIT)

    @triton.jit
    def _store_final(x_b, init_b, final_b, offs_d, mask_d, L, s_xd, s_xl, s_id, s_il, s_fd, s_fl,
                     W: tl.constexpr, HAS_INIT: tl.constexpr):
        """The last W-1 inputs (reaching into the initial states when L < W-1) as the final states."""
        j = tl.arange(0, 4)
        v = _xcat(x_b, init_b, L - (W - 1) + j, offs_d, mask_d, L, s_xd, s_xl, s_id, s_il, W, HAS_INIT)
        mf = mask_d[:, None] & (j < W - 1)[None, :]
        tl.store(final_b + offs_d[:, None] * s_fd + j[None, :] * s_fl, v.to(final_b.dtype.element_ty), mask=mf)

    @triton.jit
    def _put_weight_grads(dw_ptr, db_ptr, part_ptr, dws, db, offs_d, mask_d, dim,
                          W: tl.constexpr, HAS_BIAS: tl.constexpr, DET: tl.constexpr):
        """This program's weight gradients (dws[k]: tap k) and bias gradient, (BD,) each: added into the
        fp32 dw (dim, W) and db (dim,) with atomics, or, in deterministic mode, stored into the program's
        own slot of the partial buffer ((batch, program along time), W + 1, dim), which the host then sums
        in a fixed order (float atomics add in whatever order the programs arrive)."""
        if DET:
            row = tl.program_id(2).to(tl.int64) * tl.num_programs(0) + tl.program_id(0)
            slot = part_ptr + row * (W + 1) * dim + offs_d
            for k in tl.static_range(W):
                tl.store(slot + k * dim, dws[k], mask=mask_d)
            if HAS_BIAS:
                tl.store(slot + W * dim, db, mask=mask_d)
        else:
            for k in tl.static_range(W):
                tl.atomic_add(dw_ptr + offs_d * W + k, dws[k], mask=mask_d, sem="relaxed")
            if HAS_BIAS:
                tl.atomic_add(db_ptr + offs_d, db, mask=mask_d, sem="relaxed")

    @triton.jit
    def _split8(t):
        """The 8 columns of a (..., 8) tile, in order (register moves only)."""
        e, o = tl.split(tl.reshape(t, t.shape[:-1] + (4, 2)))
        e0, e1 = tl.split(tl.reshape(e, e.shape[:-1] + (2, 2)))
        o0, o1 = tl.split(tl.reshape(o, o.shape[:-1] + (2, 2)))
        c0, c4 = tl.split(e0)
        c2, c6 = tl.split(e1)
        c1, c5 = tl.split(o0)
        c3, c7 = tl.split(o1)
        return c0, c1, c2, c3, c4, c5, c6, c7

    @triton.jit
    def _split4(t):
        """The 4 columns of a (..., 4) tile, in order (register moves only)."""
        e, o = tl.split(tl.reshape(t, t.shape[:-1] + (2, 2)))
        c0, c2 = tl.split(e)
        c1, c3 = tl.split(o)
        return c0, c1, c2, c3

    @triton.jit
    def _split(t, RW: tl.constexpr):
        """The RW (8 or 4) columns of a (..., RW) tile, in order."""
        if RW == 8:
            return _split8(t)
        else:
            return _split4(t)

    @triton.jit
    def _join(c, RW: tl.constexpr):
        """The inverse of _split: a tuple of RW (...) tiles -> one (..., RW) tile."""
        if RW == 8:
            t = tl.join(tl.join(tl.join(c[0], c[4]), tl.join(c[2], c[6])),
                        tl.join(tl.join(c[1], c[5]), tl.join(c[3], c[7])))
            return tl.reshape(t, t.shape[:-3] + (8,))
        else:
            t = tl.join(tl.join(c[0], c[2]), tl.join(c[1], c[3]))
            return tl.reshape(t, t.shape[:-2] + (4,))

    @triton.jit
    def _rows(x_b, init_b, pos, offs_d, mask_d, L, s_xd, s_id, s_il, W: tl.constexpr, HAS_INIT: tl.constexpr):
        """x (unit time stride) at the (rows, RW) positions `pos` as (channels, rows, RW) fp32, with the
        initial states (or zero) left of position 0: one aligned vector load per row."""
        m = mask_d[:, None, None] & ((pos >= 0) & (pos < L))[None]
        v = tl.load(x_b + offs_d[:, None, None] * s_xd + pos[None], mask=m, other=0.0).to(tl.float32)
        if HAS_INIT:
            mi = mask_d[:, None, None] & ((pos < 0) & (pos >= 1 - W))[None]
            v += tl.load(init_b + offs_d[:, None, None] * s_id + (pos + W - 1)[None] * s_il,
                         mask=mi, other=0.0).to(tl.float32)
        return v

    @triton.jit
    def _rows_program(dim, BD: tl.constexpr, R: tl.constexpr, S: tl.constexpr, RW: tl.constexpr):
        """This program's channels, their mask, its batch and the (rows, RW) time positions of its first
        tile (a program covers S tiles of R rows, one after the other)."""
        offs_d = tl.program_id(1) * BD + tl.arange(0, BD)
        pos = (tl.program_id(0) * R * S + tl.arange(0, R))[:, None] * RW + tl.arange(0, RW)[None, :]
        return offs_d, offs_d < dim, tl.program_id(2).to(tl.int64), pos

    @triton.jit
    def _pre_at(cols, m: tl.constexpr, w_ptr, offs_d, mask_d, s_wd, s_ww, bias, W: tl.constexpr, R: tl.constexpr,
                RW: tl.constexpr):
        """Pre-activation (bias + conv) at offset m of the rows, from the window columns (cols[RW + i]: offset i)."""
        acc = tl.zeros([offs_d.shape[0], R], dtype=tl.float32) + bias[:, None]
        for k in tl.static_range(W):
            wk = tl.load(w_ptr + offs_d * s_wd + k * s_ww, mask=mask_d, other=0.0).to(tl.float32)
            acc += wk[:, None] * cols[RW + m - (W - 1) + k]
        return acc

    @triton.jit(do_not_specialize=["L_class"])  # a key for the autotuner, not a variant
    def _conv_fwd_rows_kernel(
        x_ptr, w_ptr, bias_ptr, init_ptr, out_ptr, final_ptr,
        dim, L, L_class, s_xb, s_xd, s_wd, s_ww, s_ob, s_od, s_ib, s_id, s_il, s_fb, s_fd, s_fl,
        W: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_INIT: tl.constexpr, HAS_FINAL: tl.constexpr,
        SILU: tl.constexpr, BD: tl.constexpr, R: tl.constexpr, RW: tl.constexpr,
    ):
        offs_d, mask_d, pid_b, pos = _rows_program(dim, BD, R, 1, RW)
        x_b = x_ptr + pid_b * s_xb
        init_b = init_ptr + pid_b * s_ib
        # column RW + m of the window is x at offset m (-RW <= m < RW) from the row start
        cols = (_split(_rows(x_b, init_b, pos - RW, offs_d, mask_d, L, s_xd, s_id, s_il, W, HAS_INIT), RW)
                + _split(_rows(x_b, init_b, pos, offs_d, mask_d, L, s_xd, s_id, s_il, W, HAS_INIT), RW))
        bias = _channel_bias(bias_ptr, offs_d, mask_d, BD, HAS_BIAS)
        outs = ()
        for j in tl.static_range(RW):
            acc = _pre_at(cols, j, w_ptr, offs_d, mask_d, s_wd, s_ww, bias, W, R, RW)
            if SILU:
                acc = acc * sigmoid(acc)
            outs = outs + (acc,)
        m2 = mask_d[:, None, None] & (pos < L)[None]
        tl.store(out_ptr + pid_b * s_ob + offs_d[:, None, None] * s_od + pos[None],
                 _join(outs, RW).to(out_ptr.dtype.element_ty), mask=m2)
        if HAS_FINAL:
            if tl.program_id(0) == tl.num_programs(0) - 1:
                _store_final(x_b, init_b, final_ptr + pid_b * s_fb, offs_d, mask_d, L, s_xd, 1, s_id, s_il,
                             s_fd, s_fl, W, HAS_INIT)

    @triton.jit(do_not_specialize=["L_class"])  # a key for the autotuner, not a variant
    def _conv_bwd_rows_kernel(
        x_ptr, w_ptr, bias_ptr, dout_ptr, dx_ptr, dw_ptr, db_ptr, part_ptr,
        dim, L, L_class, s_xb, s_xd, s_wd, s_ww, s_gb, s_gd, s_ob, s_od,
        W: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, DET: tl.constexpr, BD: tl.constexpr,
        R: tl.constexpr, S: tl.constexpr, RW: tl.constexpr,
    ):
        # No initial states, seq_idx or final-state gradient (those take the general kernel).
        # dx has strides (s_ob, s_od, 1); dw (dim, W) and db (dim,) are fp32, contiguous.
        # S tiles one after the other: the weight and bias gradients stay in registers across them, so
        # their reductions over rows and their atomics happen once per program, not once per tile.
        offs_d, mask_d, pid_b, pos0 = _rows_program(dim, BD, R, S, RW)
        x_b = x_ptr + pid_b * s_xb
        g_b = dout_ptr + pid_b * s_gb
        bias = _channel_bias(bias_ptr, offs_d, mask_d, BD, HAS_BIAS)
        dw0 = tl.zeros([BD, R], dtype=tl.float32)
        dw1 = tl.zeros([BD, R], dtype=tl.float32)
        dw2 = tl.zeros([BD, R], dtype=tl.float32)
        dw3 = tl.zeros([BD, R], dtype=tl.float32)
        db = tl.zeros([BD, R], dtype=tl.float32)
        for tile in range(S):
            pos = pos0 + tile * (RW * R)
            # x at offsets -RW <= m < 2 RW (column RW + m); dout at 0 <= m < 2 RW
            xs = (_split(_rows(x_b, x_b, pos - RW, offs_d, mask_d, L, s_xd, 0, 0, W, False), RW)
                  + _split(_rows(x_b, x_b, pos, offs_d, mask_d, L, s_xd, 0, 0, W, False), RW)
                  + _split(_rows(x_b, x_b, pos + RW, offs_d, mask_d, L, s_xd, 0, 0, W, False), RW))
            gs = (_split(_rows(g_b, g_b, pos, offs_d, mask_d, L, s_gd, 0, 0, W, False), RW)
                  + _split(_rows(g_b, g_b, pos + RW, offs_d, mask_d, L, s_gd, 0, 0, W, False), RW))
            # gradient of the pre-activation at offsets 0 .. RW + W - 2, each computed once
            gm = ()
            for m in tl.static_range(RW + W - 1):
                g = gs[m]
                if SILU:
                    g = _silu_grad(g, _pre_at(xs, m, w_ptr, offs_d, mask_d, s_wd, s_ww, bias, W, R, RW))
                gm = gm + (g,)
            # dx at offset j: x[j] feeds out[j + s] through tap W-1-s
            dxs = ()
            for j in tl.static_range(RW):
                acc = tl.zeros([BD, R], dtype=tl.float32)
                for s in tl.static_range(W):
                    wt = tl.load(w_ptr + offs_d * s_wd + (W - 1 - s) * s_ww, mask=mask_d, other=0.0).to(tl.float32)
                    acc += wt[:, None] * gm[j + s]
                dxs = dxs + (acc,)
            m2 = mask_d[:, None, None] & (pos < L)[None]
            tl.store(dx_ptr + pid_b * s_ob + offs_d[:, None, None] * s_od + pos[None],
                     _join(dxs, RW).to(dx_ptr.dtype.element_ty), mask=m2)
            # weight and bias gradients over this tile's outputs (offsets 0..RW-1), summed over its RW columns
            for k in tl.static_range(W):
                acc = tl.zeros([BD, R], dtype=tl.float32)
                for j in tl.static_range(RW):
                    acc += gm[j] * xs[RW + j - (W - 1) + k]
                if k == 0:
                    dw0 += acc
                elif k == 1:
                    dw1 += acc
                elif k == 2:
                    dw2 += acc
                else:
                    dw3 += acc
            if HAS_BIAS:
                for j in tl.static_range(RW):
                    db += gm[j]
        # one reduction over the rows and one atomic per channel and tap, for all S tiles
        dws4 = (dw0, dw1, dw2, dw3)
        dws = ()
        for k in tl.static_range(W):
            dws = dws + (tl.sum(dws4[k], axis=1),)
        _put_weight_grads(dw_ptr, db_ptr, part_ptr, dws, tl.sum(db, axis=1), offs_d, mask_d, dim, W, HAS_BIAS, DET)

    @triton.jit
    def _step(ptr, t, L, s_l, mask_d):
        """One time step (a row of BD channels, unit channel stride) as fp32; zero outside 0 <= t < L."""
        return tl.load(ptr + t * s_l, mask=mask_d & (t >= 0) & (t < L), other=0.0).to(tl.float32)

    @triton.jit
    def _pre4(wp, bias, x0, x1, x2, x3):
        """Pre-activation from x at t-3..t and the taps padded in front to 4."""
        return bias + wp[0] * x0 + wp[1] * x1 + wp[2] * x2 + wp[3] * x3

    @triton.jit(do_not_specialize=["L_class"])  # a key for the autotuner, not a variant
    def _conv_bwd_steps_kernel(
        x_ptr, w_ptr, bias_ptr, dout_ptr, dx_ptr, dw_ptr, db_ptr, part_ptr,
        dim, L, L_class, s_xb, s_xl, s_wd, s_ww, s_gb, s_gl, s_ob, s_ol,
        W: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, DET: tl.constexpr, BD: tl.constexpr,
        T: tl.constexpr,
    ):
        # Channel-last (x, dout and dx with unit channel stride), no initial states, seq_idx or
        # final-state gradient. Each thread holds a vector of channels and walks T steps back in time,
        # the windows of x (t-3..t) and of the pre-activation's gradient (t+1..t+3) in registers: per
        # step one row of x and one of dout are read, one of dx written, each pre-activation computed
        # once. (The general kernel reads W shifted tiles per pre-activation and computes each W times.)
        # The taps are padded in front to 4: out[t] = bias + sum_j wp[j] x[t-3+j].
        offs_d = tl.program_id(1) * BD + tl.arange(0, BD)
        mask_d = offs_d < dim
        pid_b = tl.program_id(2).to(tl.int64)
        x_b = x_ptr + pid_b * s_xb + offs_d
        g_b = dout_ptr + pid_b * s_gb + offs_d
        o_b = dx_ptr + pid_b * s_ob + offs_d
        wp = ()
        for j in tl.static_range(4):
            if j < 4 - W:
                wp = wp + (tl.zeros([BD], dtype=tl.float32),)
            else:
                wp = wp + (tl.load(w_ptr + offs_d * s_wd + (j - 4 + W) * s_ww, mask=mask_d, other=0.0).to(tl.float32),)
        bias = _channel_bias(bias_ptr, offs_d, mask_d, BD, HAS_BIAS)
        t_hi = tl.program_id(0).to(tl.int64) * T + T - 1
        # the gradient at the 3 steps after this block (the next block's, recomputed): x at t_hi-2..t_hi+3
        xa = _step(x_b, t_hi - 3, L, s_xl, mask_d)
        xb = _step(x_b, t_hi - 2, L, s_xl, mask_d)
        xc = _step(x_b, t_hi - 1, L, s_xl, mask_d)
        xd = _step(x_b, t_hi, L, s_xl, mask_d)
        x4 = _step(x_b, t_hi + 1, L, s_xl, mask_d)
        x5 = _step(x_b, t_hi + 2, L, s_xl, mask_d)
        x6 = _step(x_b, t_hi + 3, L, s_xl, mask_d)
        g1 = _step(g_b, t_hi + 1, L, s_gl, mask_d)
        g2 = _step(g_b, t_hi + 2, L, s_gl, mask_d)
        g3 = _step(g_b, t_hi + 3, L, s_gl, mask_d)
        if SILU:
            g1 = _silu_grad(g1, _pre4(wp, bias, xb, xc, xd, x4))
            g2 = _silu_grad(g2, _pre4(wp, bias, xc, xd, x4, x5))
            g3 = _silu_grad(g3, _pre4(wp, bias, xd, x4, x5, x6))
        dw0 = tl.zeros([BD], dtype=tl.float32)
        dw1 = tl.zeros([BD], dtype=tl.float32)
        dw2 = tl.zeros([BD], dtype=tl.float32)
        dw3 = tl.zeros([BD], dtype=tl.float32)
        db = tl.zeros([BD], dtype=tl.float32)
        for i in tl.static_range(T):
            t = t_hi - i
            g = _step(g_b, t, L, s_gl, mask_d)
            if SILU:
                g = _silu_grad(g, _pre4(wp, bias, xa, xb, xc, xd))
            # x[t] feeds out[t + s] through tap 3 - s
            dx = wp[3] * g + wp[2] * g1 + wp[1] * g2 + wp[0] * g3
            tl.store(o_b + t * s_ol, dx.to(dx_ptr.dtype.element_ty), mask=mask_d & (t < L))
            dw0 += g * xa
            dw1 += g * xb
            dw2 += g * xc
            dw3 += g * xd
            db += g
            g3, g2, g1 = g2, g1, g
            xa, xb, xc, xd = _step(x_b, t - 4, L, s_xl, mask_d), xa, xb, xc
        dws4 = (dw0, dw1, dw2, dw3)
        dws = ()
        for k in tl.static_range(W):
            dws = dws + (dws4[4 - W + k],)
        _put_weight_grads(dw_ptr, db_ptr, part_ptr, dws, db, offs_d, mask_d, dim, W, HAS_BIAS, DET)

    @triton.jit(do_not_specialize=["L_class"])  # a key for the autotuner, not a variant
    def _conv_bwd_kernel(
        x_ptr, w_ptr, bias_ptr, seq_ptr, init_ptr, dout_ptr, dfinal_ptr, dx_ptr, dw_ptr, db_ptr, part_ptr, dinit_ptr,
        dim, L, L_class, s_xb, s_xd, s_xl, s_wd, s_ww, s_gb, s_gd, s_gl, s_ib, s_id, s_il, s_fb, s_fd, s_fl, s_sb, s_sl,
        s_ob, s_od, s_ol, s_jb, s_jd, s_jl,
        W: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_SEQ: tl.constexpr, HAS_INIT: tl.constexpr,
        HAS_DFINAL: tl.constexpr, SILU: tl.constexpr, DET: tl.constexpr, BD: tl.constexpr, BL: tl.constexpr,
    ):
        # Positions p of this tile; with initial states the grid starts at -(W-1), where the
        # "dx" of the extended input is the initial states' gradient.
        # dx and dinit have their own strides (s_o*, s_j*): a caller's buffer, or empty_like of a
        # strided x, need not have x's (causal-conv1d's backward allocates dx dense, x may be a
        # slice of a wider tensor); dw (dim, W) and db (dim,) are fp32, contiguous.
        pid_l = tl.program_id(0)
        pid_d = tl.program_id(1)
        pid_b = tl.program_id(2).to(tl.int64)
        offs_d = pid_d * BD + tl.arange(0, BD)
        p = pid_l * BL + tl.arange(0, BL)
        if HAS_INIT:
            p = p - (W - 1)
        mask_d = offs_d < dim
        x_b = x_ptr + pid_b * s_xb
        init_b = init_ptr + pid_b * s_ib
        seq_b = seq_ptr + pid_b * s_sb
        g_b = dout_ptr + pid_b * s_gb
        bias = _channel_bias(bias_ptr, offs_d, mask_d, BD, HAS_BIAS)
        # X[j] = x at p - (W-1) + j, j = 0 .. 2W-2; S[j] its seq_idx (never read without seq_idx).
        X = ()
        S = ()
        for j in tl.static_range(2 * W - 1):
            X = X + (_xcat(x_b, init_b, p - (W - 1) + j, offs_d, mask_d, L, s_xd, s_xl, s_id, s_il, W, HAS_INIT),)
            S = S + (_seq(seq_b, p - (W - 1) + j, L, s_sl, W, HAS_INIT) if HAS_SEQ else p,)
        cur = S[W - 1]
        dx = tl.zeros([BD, BL], dtype=tl.float32)
        g0 = tl.zeros([BD, BL], dtype=tl.float32)
        for s in tl.static_range(W):
            # Pre-activation of out[p + s] (which x[p] feeds through tap W-1-s), then its gradient.
            q = p + s
            sq = S[s + W - 1]
            a = tl.zeros([BD, BL], dtype=tl.float32) + bias[:, None]
            for k in tl.static_range(W):
                wk = tl.load(w_ptr + offs_d * s_wd + k * s_ww, mask=mask_d, other=0.0).to(tl.float32)
                xk = X[s + k]
                if HAS_SEQ:
                    xk = tl.where((S[s + k] == sq)[None, :], xk, 0.0)
                a += wk[:, None] * xk
            mq = mask_d[:, None] & ((q >= 0) & (q < L))[None, :]
            g = tl.load(g_b + offs_d[:, None] * s_gd + q[None, :] * s_gl, mask=mq, other=0.0).to(tl.float32)
            if SILU:
                g = _silu_grad(g, a)
            if HAS_SEQ:
                g = tl.where((sq >= 0)[None, :], g, 0.0)
            if s == 0:
                g0 = g
            if HAS_SEQ:
                g = tl.where((sq == cur)[None, :], g, 0.0)
            wt = tl.load(w_ptr + offs_d * s_wd + (W - 1 - s) * s_ww, mask=mask_d, other=0.0).to(tl.float32)
            dx += wt[:, None] * g
        if HAS_DFINAL:
            j = p - (L - (W - 1))
            mf = mask_d[:, None] & ((j >= 0) & (p < L))[None, :]
            dx += tl.load(dfinal_ptr + pid_b * s_fb + offs_d[:, None] * s_fd + j[None, :] * s_fl,
                          mask=mf, other=0.0).to(tl.float32)
        m2 = mask_d[:, None] & ((p >= 0) & (p < L))[None, :]
        tl.store(dx_ptr + pid_b * s_ob + offs_d[:, None] * s_od + p[None, :] * s_ol,
                 dx.to(dx_ptr.dtype.element_ty), mask=m2)
        if HAS_INIT:
            mi = mask_d[:, None] & ((p < 0) & (p >= 1 - W))[None, :]
            tl.store(dinit_ptr + pid_b * s_jb + offs_d[:, None] * s_jd + (p + W - 1)[None, :] * s_jl,
                     dx.to(dinit_ptr.dtype.element_ty), mask=mi)
        # Weight and bias gradients: sum over this tile, then one atomic per channel and tap.
        dws = ()
        for k in tl.static_range(W):
            xk = X[k]
            if HAS_SEQ:
                xk = tl.where((S[k] == cur)[None, :], xk, 0.0)
            dws = dws + (tl.sum(g0 * xk, axis=1),)
        _put_weight_grads(dw_ptr, db_ptr, part_ptr, dws, tl.sum(g0, axis=1), offs_d, mask_d, dim, W, HAS_BIAS, DET)

    @triton.jit
    def _conv_update_kernel(
        x_ptr, state_ptr, w_ptr, bias_ptr, cache_ptr, idx_ptr, out_ptr,
        dim, seqlen, state_len, s_xb, s_xd, s_xl, s_cb, s_cd, s_cl, s_wd, s_ww, s_ob, s_od, s_ol,
        W: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, CIRCULAR: tl.constexpr,
        HAS_IDX: tl.constexpr, BD: tl.constexpr,
    ):
        pid_b = tl.program_id(0)
        offs_d = tl.program_id(1) * BD + tl.arange(0, BD)
        mask_d = offs_d < dim
        row = pid_b.to(tl.int64)
        if HAS_IDX:
            row = tl.load(idx_ptr + pid_b).to(tl.int64)
        ok = row >= 0  # a negative index marks a padding slot: output zeros, leave the cache alone
        ms = mask_d & ok
        st = state_ptr + row * s_cb + offs_d * s_cd
        x_b = x_ptr + pid_b.to(tl.int64) * s_xb + offs_d * s_xd
        o_b = out_ptr + pid_b.to(tl.int64) * s_ob + offs_d * s_od
        bias = _channel_bias(bias_ptr, offs_d, mask_d, BD, HAS_BIAS)
        # Weights by lag: lag j multiplies the input j steps back (w[W-1-j]); lags >= W weigh 0.
        w0 = tl.load(w_ptr + offs_d * s_wd + (W - 1) * s_ww, mask=mask_d, other=0.0).to(tl.float32)
        w1 = tl.load(w_ptr + offs_d * s_wd + (W - 2) * s_ww, mask=mask_d & (W >= 2), other=0.0).to(tl.float32)
        w2 = tl.load(w_ptr + offs_d * s_wd + (W - 3) * s_ww, mask=mask_d & (W >= 3), other=0.0).to(tl.float32)
        w3 = tl.load(w_ptr + offs_d * s_wd + (W - 4) * s_ww, mask=mask_d & (W >= 4), other=0.0).to(tl.float32)
        start = 0  # lag j reads slot (start - j) mod state_len: the window's end, or the ring's write point
        if CIRCULAR:
            start = tl.load(cache_ptr + pid_b) % state_len
        h1 = tl.load(st + ((start - 1 + state_len) % state_len) * s_cl, mask=ms & (state_len >= 1), other=0.0).to(tl.float32)
        h2 = tl.load(st + ((start - 2 + state_len) % state_len) * s_cl, mask=ms & (W >= 3) & (state_len >= 2), other=0.0).to(tl.float32)
        h3 = tl.load(st + ((start - 3 + state_len) % state_len) * s_cl, mask=ms & (W >= 4) & (state_len >= 3), other=0.0).to(tl.float32)
        if CIRCULAR:
            for i in range(0, seqlen):
                xv = tl.load(x_b + i * s_xl, mask=mask_d, other=0.0)
                tl.store(st + ((start + i) % state_len) * s_cl, xv.to(state_ptr.dtype.element_ty), mask=ms)
        else:
            # Shift the window left by seqlen and append x (reads stay ahead of writes).
            for j in range(0, state_len):
                src = j + seqlen
                old = tl.load(st + src * s_cl, mask=ms & (src < state_len), other=0.0)
                new = tl.load(x_b + (src - state_len) * s_xl, mask=ms & (src >= state_len), other=0.0)
                v = tl.where(src < state_len, old.to(tl.float32), new.to(tl.float32))
                tl.store(st + j * s_cl, v.to(state_ptr.dtype.element_ty), mask=ms)
        for i in range(0, seqlen):
            xv = tl.load(x_b + i * s_xl, mask=mask_d, other=0.0).to(tl.float32)
            acc = bias + w0 * xv + w1 * h1 + w2 * h2 + w3 * h3
            if SILU:
                acc = acc * sigmoid(acc)
            acc = tl.where(ok, acc, 0.0)
            tl.store(o_b + i * s_ol, acc.to(out_ptr.dtype.element_ty), mask=mask_d)
            h3 = h2
            h2 = h1
            h1 = xv


# (BD, BL, num_warps) per layout, the autotuner's candidates; first = best measured on the H200.
_FWD_CONFIGS = {"first": [(4, 256, 4), (4, 512, 4), (8, 512, 8), (16, 128, 4), (2, 512, 2)],
                "last": [(128, 16, 4), (32, 64, 4), (256, 8, 4), (256, 16, 8), (64, 16, 2)]}
_BWD_CONFIGS = {"first": [(4, 256, 4), (4, 128, 4), (2, 256, 2), (4, 128, 2), (2, 512, 4), (1, 1024, 4)],
                "last": [(16, 32, 2), (16, 64, 4), (32, 32, 4), (32, 64, 4), (32, 16, 2), (64, 16, 4)]}
_INTERPRET_CONFIG = (4, 16, 1)
# For the rows kernels: (BD, R rows of RW steps, num_warps) forward, (BD, R, S tiles per program,
# num_warps) backward; first = best measured on the H200 (bench_triton_gpu.py --sweep --sweep-groups rows).
# BD * R must be at least one row per thread (32 * num_warps): with fewer, threads hold copies of the
# same rows and the register shuffles of the windows go through shared memory: every candidate of the
# backward's first table was below that line (34 shared loads instead of 5 in its SASS) and it ran at
# 0.21x the compiled kernel's speed on the H200, 0.41-0.45x once every tile had a row per thread. S > 1 keeps
# the weight gradients in registers over S tiles. Backward sweep on the H200 (CUDA-graph ms, bf16 / fp32):
# one channel per program on one or two warps is fastest, (1, 64, 4, 2) 0.077 / 0.118, (1, 64, 8, 2)
# 0.132 / 0.112, (1, 32, 4, 1) 0.076 / 0.119, (1, 32, 16, 1) 0.131 / 0.114; the old first, (2, 64, 4, 4),
# 0.084 / 0.150 (compiled kernel 0.070 / 0.105).
_FWD_ROWS_CONFIGS = [(1, 128, 4), (2, 64, 4), (4, 32, 4), (8, 16, 4), (4, 64, 8)]
_BWD_ROWS_CONFIGS = [(1, 64, 4, 2), (1, 64, 8, 2), (1, 32, 4, 1), (1, 32, 16, 1), (2, 64, 4, 4), (4, 32, 8, 4)]
# For the channel-last backward that walks time (BD channels, T steps, num_warps): a thread's channels are
# one vector (8 bf16 = 16 bytes at BD = 256 per warp); the steps are unrolled, so their loads can be in
# flight together. First = the tuner's pick in bf16 and fp32 on the H200 (sweep, CUDA-graph ms, bf16:
# (512, 32, 4) 0.152, (1024, 16, 4) 0.178, (2048, 16, 8) 0.184, (512, 16, 2) 0.186, (1024, 32, 8) 0.191).
_BWD_STEPS_CONFIGS = [(512, 32, 4), (1024, 16, 4), (1024, 32, 8), (2048, 16, 8), (512, 16, 2), (256, 32, 1)]
_STEPS_INTERPRET_CONFIG = (4, 4, 1)
_ROWS_INTERPRET_CONFIG = (2, 2, 1)
_BWD_ROWS_INTERPRET_CONFIG = (2, 2, 2, 1)  # two tiles per program: the loop runs under the interpreter too
# the interpreter's wide plan above 64 channels (triton_utils): 1024 channels x 128 fp32 steps a program
_ROWS_INTERPRET_WIDE = (tu.INTERPRET_WIDE_CHANNELS, 32, 1)
_BWD_ROWS_INTERPRET_WIDE = (tu.INTERPRET_WIDE_CHANNELS, 16, 2, 1)


def _make(kernel, table, interpret=_INTERPRET_CONFIG, names=("BD", "BL"), **kwargs):
    def one(*entry):
        *params, warps = entry
        return triton.Config(dict(zip(names, params)), num_warps=warps)

    configs = tu.autotune_configs([one(*c) for c in table], one(*interpret))
    # L_class, the length's power of two (in the kernels' signatures for this key alone): keyed on the
    # exact length, every new prompt length was tuned again
    return triton.autotune(configs, key=["dim", "L_class", "W"], **tu.autotune_kwargs(), **kwargs)(kernel)


if triton is not None:
    _fwd = {k: _make(_conv_fwd_kernel, v) for k, v in _FWD_CONFIGS.items()}
    # restore_value, not reset_to_zero: tuning runs must leave the caller's dweight/dbias as they were,
    # since the kernels add into them
    _bwd = {k: _make(_conv_bwd_kernel, v, restore_value=["dw_ptr", "db_ptr"]) for k, v in _BWD_CONFIGS.items()}
    _fwd_rows = _make(_conv_fwd_rows_kernel, _FWD_ROWS_CONFIGS, _ROWS_INTERPRET_CONFIG, ("BD", "R"))
    _bwd_rows = _make(_conv_bwd_rows_kernel, _BWD_ROWS_CONFIGS, _BWD_ROWS_INTERPRET_CONFIG, ("BD", "R", "S"),
                      restore_value=["dw_ptr", "db_ptr"])
    _bwd_steps = _make(_conv_bwd_steps_kernel, _BWD_STEPS_CONFIGS, _STEPS_INTERPRET_CONFIG, ("BD", "T"),
                       restore_value=["dw_ptr", "db_ptr"])
    # the interpreter's wide variants (tu.for_channels picks them); None on a GPU
    _fwd_rows_wide = _make(_conv_fwd_rows_kernel, [], _ROWS_INTERPRET_WIDE, ("BD", "R")) if tu.INTERPRET else None
    _bwd_rows_wide = (_make(_conv_bwd_rows_kernel, [], _BWD_ROWS_INTERPRET_WIDE, ("BD", "R", "S"))
                      if tu.INTERPRET else None)


def _make_det(kernel, table, interpret=_INTERPRET_CONFIG, names=("BD", "BL")):
    """Deterministic mode's tuner and its config's parameters: one config (the table's first, the
    interpreter's under it), so the number of programs along time, which sizes the buffer of partial
    weight gradients, is known before the launch."""
    entry = interpret if tu.INTERPRET else table[0]
    return _make(kernel, [entry], entry, names), dict(zip(names, entry[:-1]))


if triton is not None:
    _bwd_det = {k: _make_det(_conv_bwd_kernel, v) for k, v in _BWD_CONFIGS.items()}
    _bwd_rows_det = _make_det(_conv_bwd_rows_kernel, _BWD_ROWS_CONFIGS, _BWD_ROWS_INTERPRET_CONFIG, ("BD", "R", "S"))
    _bwd_steps_det = _make_det(_conv_bwd_steps_kernel, _BWD_STEPS_CONFIGS, _STEPS_INTERPRET_CONFIG, ("BD", "T"))


def _rows_grid(batch: int, dim: int, L: int):  # noqa: ANN202
    """The rows kernels' launch grid: (blocks of S tiles of R rows of RW steps, channel blocks, batch)."""
    return lambda m: (grid_size(L, m["RW"] * m["R"] * m.get("S", 1)), grid_size(dim, m["BD"]), batch)


def _row_width(x: torch.Tensor) -> int:
    """Steps per row of the rows kernels: one 16-byte vector per thread (8 of a 16-bit type, 4 of fp32)."""
    return 16 // x.element_size()


def _layout(strides: Tuple[int, ...]) -> str:
    """x's layout from its strides: channel-last (unit channel stride) or channel-first."""
    return "last" if strides[1] == 1 and strides[2] != 1 else "first"


def _check(x: torch.Tensor, weight: torch.Tensor, steps_optional: bool = False) -> None:
    """The backend can run x, and x (batch, dim, L) (or (batch, dim) with `steps_optional`: the update) and
    weight (dim, width) fit."""
    reason = is_available(x.device, x.dtype)
    if reason is not None:
        raise BackendUnavailableError(f"the Triton causal conv1d cannot run: {reason}",
                                      "use JETSON_MAMBA_BACKEND=torch, or run on a CUDA GPU")
    if not (x.dim() == 3 or (steps_optional and x.dim() == 2)) or weight.dim() != 2 or weight.shape[0] != x.shape[1]:
        raise ValueError(f"x must be (batch, dim{'[, L]' if steps_optional else ', L'}) and weight (dim, width); "
                         f"got {tuple(x.shape)} and {tuple(weight.shape)}")
    if not 2 <= weight.shape[1] <= 4:
        raise ValueError(f"causal conv1d supports widths 2 to 4, got {weight.shape[1]}")


class _Problem(NamedTuple):
    """What forward and backward read off checked x and weight: sizes, the tuning key's length class,
    x's strides and layout."""

    batch: int
    dim: int
    L: int
    W: int
    L_class: int
    xs: Tuple[int, ...]
    layout: str


def _problem(x: torch.Tensor, weight: torch.Tensor) -> _Problem:
    _check(x, weight)
    batch, dim, L = x.shape
    return _Problem(batch, dim, L, weight.shape[1], tu.next_power_of_2(L), x.stride(), _layout(x.stride()))


def _buffer(buf: torch.Tensor, x: torch.Tensor, name: str) -> torch.Tensor:
    """A caller's output buffer, checked against x."""
    if buf.shape != x.shape or buf.dtype != x.dtype or buf.device != x.device:
        raise ValueError(f"{name} must be like x: {tuple(x.shape)} {x.dtype} on {x.device}; got "
                         f"{tuple(buf.shape)} {buf.dtype} on {buf.device}")
    return buf


def _strides3(t: Optional[torch.Tensor]) -> Tuple[int, int, int]:
    return tuple(t.stride()) if t is not None else (0, 0, 0)  # type: ignore[return-value]


def _seq_args(seq_idx: Optional[torch.Tensor]) -> Tuple[int, int]:
    return (0, 0) if seq_idx is None else (seq_idx.stride(0), seq_idx.stride(1))


def causal_conv1d_forward(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], seq_idx: Optional[torch.Tensor],
    initial_states: Optional[torch.Tensor], return_final_states: bool, silu: bool,
    out: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(out, final_states (batch, dim, width-1) or None); out keeps x's layout, or is the caller's
    buffer `out` (any strides), written in place."""
    batch, dim, L, W, L_class, xs, layout = _problem(x, weight)
    out = torch.empty_like(x) if out is None else _buffer(out, x, "out")
    ot = out.stride()
    final = None
    if return_final_states:
        final = torch.empty(batch, W - 1, dim, device=x.device, dtype=x.dtype).transpose(1, 2)
        if layout == "first":
            final = final.contiguous()
    s_sb, s_sl = _seq_args(seq_idx)
    si, sf = _strides3(initial_states), _strides3(final)
    ws = weight.stride()

    def flags(**more: Any) -> Dict[str, Any]:
        return dict(W=W, HAS_BIAS=bias is not None, HAS_INIT=initial_states is not None,
                    HAS_FINAL=final is not None, SILU=bool(silu), **more)

    # every value below follows from these (the dtypes: launch_planned)
    key = (x.shape, weight.shape, xs, ws, ot, si, sf, s_sb, s_sl, bias is None, seq_idx is None, initial_states is None,
           final is None, bool(silu))
    if layout == "first" and xs[2] == 1 and ot[2] == 1 and seq_idx is None:
        tu.launch_planned(
            _FWD_LAUNCHES, key, tu.for_channels(dim, _fwd_rows, _fwd_rows_wide),
            (x, weight, bias if bias is not None else x, initial_states if initial_states is not None else x, out,
             final if final is not None else x),
            lambda: ((dim, L_class, W, x.dtype), _rows_grid(batch, dim, L),
                     (dim, L, L_class, xs[0], xs[1], *ws, ot[0], ot[1], *si, *sf), flags(RW=_row_width(x))))
        return out, final
    tu.launch_planned(
        _FWD_LAUNCHES, key, _fwd[layout],
        (x, weight, bias if bias is not None else x, seq_idx if seq_idx is not None else x,
         initial_states if initial_states is not None else x, out, final if final is not None else x),
        lambda: ((dim, L_class, W, x.dtype), lambda m: (grid_size(L, m["BL"]), grid_size(dim, m["BD"]), batch),
                 (dim, L, L_class, *xs, *ws, *ot, *si, *sf, s_sb, s_sl), flags(HAS_SEQ=seq_idx is not None)))
    return out, final


_FWD_LAUNCHES: tu.Plans = {}
_BWD_LAUNCHES: tu.Plans = {}
_UPDATE_LAUNCHES: tu.Plans = {}


def causal_conv1d_backward(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], dout: torch.Tensor,
    seq_idx: Optional[torch.Tensor], initial_states: Optional[torch.Tensor],
    dfinal_states: Optional[torch.Tensor], silu: bool, dx: Optional[torch.Tensor] = None,
    dweight: Optional[torch.Tensor] = None, dbias: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """(dx, dweight, dbias or None, dinitial_states or None); dx keeps x's layout, or is the caller's
    buffer `dx`, written in place where the kernel can take its strides (the result is then `dx` itself).
    `dweight`/`dbias`: the caller's contiguous fp32 buffers (dim, width) and (dim,) that the gradients
    are added into, as the compiled kernel adds into causal-conv1d's zeroed buffers; they are then the
    results (fp32). Without them, new ones in weight's and bias's dtype (two launches more: zeroing, cast)."""
    batch, dim, L, W, L_class, xs, layout = _problem(x, weight)
    plain = seq_idx is None and initial_states is None and dfinal_states is None
    # rows kernel: channel-first with unit time stride; steps kernel: unit channel stride (channel-last);
    # either reads dout and writes dx with any other strides (mamba_inner_fn's dout is a transposed
    # matmul result, unlike x). The general kernel wants dout in x's strides, for coalesced loads, and
    # writes dx and dinit with their own strides.
    rows = plain and layout == "first" and xs[2] == 1
    steps = plain and layout == "last"
    unit = 2 if rows else 1 if steps else None
    gs = dout.stride()
    if gs[unit] != 1 if unit is not None else gs != xs:
        dout = torch.empty_like(x).copy_(dout)
        gs = dout.stride()
    if dx is not None:
        _buffer(dx, x, "dx")
    if dx is None or (unit is not None and dx.stride(unit) != 1):
        dx = torch.empty_like(x)
    ot = dx.stride()
    dw, db = _grad_buffers(x, weight, bias, dweight, dbias)
    dinit = torch.empty_like(initial_states) if initial_states is not None else None
    # deterministic mode (torch.use_deterministic_algorithms): partial sums per program instead of atomics
    det = torch.are_deterministic_algorithms_enabled()
    part = None
    ws = weight.stride()
    s_sb, s_sl = _seq_args(seq_idx)
    si, sf, sdi = _strides3(initial_states), _strides3(dfinal_states), _strides3(dinit)
    # every value below follows from these (the dtypes: launch_planned)
    key = (x.shape, weight.shape, xs, ws, gs, ot, si, sf, sdi, s_sb, s_sl, bias is None, seq_idx is None,
           initial_states is None, dfinal_states is None, bool(silu), det)
    if rows:
        rw = _row_width(x)
        kernel = tu.for_channels(dim, _bwd_rows, _bwd_rows_wide)
        if det:
            kernel, cfg = _bwd_rows_det
            part = _partials(batch * grid_size(L, rw * cfg["R"] * cfg["S"]), W, dim, x.device)
        tu.launch_planned(
            _BWD_LAUNCHES, key, kernel,
            (x, weight, bias if bias is not None else x, dout, dx, dw, db if db is not None else dw,
             part if part is not None else dw),
            lambda: ((dim, L_class, W, x.dtype), _rows_grid(batch, dim, L),
                     (dim, L, L_class, xs[0], xs[1], *ws, gs[0], gs[1], ot[0], ot[1]),
                     dict(W=W, HAS_BIAS=bias is not None, SILU=bool(silu), DET=det, RW=rw)))
    elif steps:
        kernel = _bwd_steps
        if det:
            kernel, cfg = _bwd_steps_det
            part = _partials(batch * grid_size(L, cfg["T"]), W, dim, x.device)
        tu.launch_planned(
            _BWD_LAUNCHES, key, kernel,
            (x, weight, bias if bias is not None else x, dout, dx, dw, db if db is not None else dw,
             part if part is not None else dw),
            lambda: ((dim, L_class, W, x.dtype), lambda m: (grid_size(L, m["T"]), grid_size(dim, m["BD"]), batch),
                     (dim, L, L_class, xs[0], xs[2], *ws, gs[0], gs[2], ot[0], ot[2]),
                     dict(W=W, HAS_BIAS=bias is not None, SILU=bool(silu), DET=det)))
    else:
        pad = W - 1 if initial_states is not None else 0  # the grid also covers the initial states
        kernel = _bwd[layout]
        if det:
            kernel, cfg = _bwd_det[layout]
            part = _partials(batch * grid_size(L + pad, cfg["BL"]), W, dim, x.device)
        tu.launch_planned(
            _BWD_LAUNCHES, key, kernel,
            (x, weight, bias if bias is not None else x, seq_idx if seq_idx is not None else x,
             initial_states if initial_states is not None else x, dout,
             dfinal_states if dfinal_states is not None else x, dx, dw, db if db is not None else dw,
             part if part is not None else dw, dinit if dinit is not None else x),
            lambda: ((dim, L_class, W, x.dtype, pad),
                     lambda m: (grid_size(L + pad, m["BL"]), grid_size(dim, m["BD"]), batch),
                     (dim, L, L_class, *xs, *ws, *gs, *si, *sf, s_sb, s_sl, *ot, *sdi),
                     dict(W=W, HAS_BIAS=bias is not None, HAS_SEQ=seq_idx is not None,
                          HAS_INIT=initial_states is not None, HAS_DFINAL=dfinal_states is not None,
                          SILU=bool(silu), DET=det)))
    if part is not None:
        _add_partials(part, dw, db, W)
    return (dx, *_grad_results(dw, db, weight, bias, dweight), dinit)


def _partials(programs: int, W: int, dim: int, device: torch.device) -> torch.Tensor:
    """Deterministic mode's buffer of weight and bias gradients per program along (batch, time): every
    slot is written (the channel blocks cover dim), so it needs no zeroing."""
    return torch.empty(programs, W + 1, dim, device=device, dtype=torch.float32)


def _add_partials(part: torch.Tensor, dw: torch.Tensor, db: Optional[torch.Tensor], W: int) -> None:
    """dw, db += the partial sums, reduced in a fixed order (torch's sum over one axis is deterministic)."""
    total = part.sum(0)
    dw.add_(total[:W].t())
    if db is not None:
        db.add_(total[W])


def _grad_buffers(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                  dweight: Optional[torch.Tensor], dbias: Optional[torch.Tensor],
                  ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The fp32 buffers the kernels add the weight and bias gradients into: the caller's, checked, or
    new zeroed ones (one allocation and one fill for both)."""
    if dweight is not None:
        _grad_buffer(dweight, weight, "dweight")
        if bias is not None and dbias is None:
            raise ValueError("a dweight buffer was given without a dbias buffer, but there is a bias")
        if dbias is not None:
            if bias is None:
                raise ValueError("a dbias buffer was given, but there is no bias")
            _grad_buffer(dbias, bias, "dbias")
        return dweight, dbias
    if dbias is not None:
        raise ValueError("a dbias buffer needs a dweight buffer too")
    dim, W = weight.shape
    both = torch.zeros(dim * (W + (bias is not None)), device=x.device, dtype=torch.float32)
    return both[:dim * W].view(dim, W), both[dim * W:] if bias is not None else None


def _grad_buffer(buf: torch.Tensor, like: torch.Tensor, name: str) -> None:
    if buf.shape != like.shape or buf.dtype != torch.float32 or buf.device != like.device or not buf.is_contiguous():
        raise ValueError(f"{name} must be a contiguous float32 buffer of shape {tuple(like.shape)} on {like.device}; "
                         f"got {tuple(buf.shape)} {buf.dtype} on {buf.device}"
                         f"{'' if buf.is_contiguous() else ', not contiguous'}")


def _grad_results(dw: torch.Tensor, db: Optional[torch.Tensor], weight: torch.Tensor, bias: Optional[torch.Tensor],
                  dweight: Optional[torch.Tensor]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The caller's fp32 buffers as they are, or the new ones in weight's and bias's dtype."""
    if dweight is not None:
        return dw, db
    return dw.to(weight.dtype), db.to(bias.dtype) if db is not None and bias is not None else None


def causal_conv1d_update(
    x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], silu: bool,
    cache_seqlens: Optional[torch.Tensor], conv_state_indices: Optional[torch.Tensor],
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """One decoding step (or a few): out for x (batch, dim[, seqlen]), or the caller's buffer `out`
    written in place; conv_state updated in place."""
    _check(x, weight, steps_optional=True)
    # a 2-D x (batch, dim) and its out are passed as (batch, dim, 1) through their strides (no views to make)
    xs = (*x.stride(), 1) if x.dim() == 2 else x.stride()
    batch, dim = x.shape[:2]
    seqlen = x.shape[2] if x.dim() == 3 else 1
    W = weight.shape[1]
    state_len = conv_state.shape[-1]
    if state_len < W - 1:
        raise ValueError(f"conv_state holds {state_len} steps but width {W} needs at least {W - 1}")
    out = torch.empty_like(x) if out is None else _buffer(out, x, "out")
    ost = (*out.stride(), 1) if out.dim() == 2 else out.stride()
    cs, ws = conv_state.stride(), weight.stride()
    # interpreted: 4 channels a program tests the masks on small shapes; wide ones take 1024 a program, else
    # upstream's update tests (batch 64 x dim 2048) run 32,768 interpreted programs, ~20 min a case
    bd = (tu.INTERPRET_WIDE_CHANNELS if tu.interpret_wide(dim) else 4) if tu.INTERPRET else 64
    # every value below follows from these (the dtypes: launch_planned)
    key = (x.shape, xs, conv_state.shape, cs, weight.shape, ws, ost, bias is None, cache_seqlens is None,
           conv_state_indices is None, bool(silu))
    tu.launch_planned(
        _UPDATE_LAUNCHES, key, _conv_update_kernel,
        (x, conv_state, weight, bias if bias is not None else x, cache_seqlens if cache_seqlens is not None else x,
         conv_state_indices if conv_state_indices is not None else x, out),
        lambda: (None, (batch, grid_size(dim, bd)), (dim, seqlen, state_len, *xs, *cs, *ws, *ost),
                 dict(W=W, HAS_BIAS=bias is not None, SILU=bool(silu), CIRCULAR=cache_seqlens is not None,
                      HAS_IDX=conv_state_indices is not None, BD=bd, num_warps=2)))
    return out
