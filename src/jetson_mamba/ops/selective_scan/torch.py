"""Portable selective scan in plain PyTorch: a chunked, two-level scan with bounded memory.

The sequence is cut into chunks; only one chunk's (chunk, batch, dstate, dim) work buffers exist
at a time and the state is carried from chunk to chunk. Inside a chunk the recurrence
h_t = a_t * h_{t-1} + b_t (a_t = exp(delta_t * A), never exp(-cumsum), so nothing overflows) is
solved with in-place, fully vectorised ops: when one step's (batch, dstate, dim) block is large
the steps simply run in order (each op is big enough to amortise its overhead); when it is small,
in two levels, first within sub-blocks of SUB steps (all sub-blocks at once), then across them.
Buffers are time-major with dim innermost, so every step touches one contiguous block, every
broadcast runs along contiguous channels, and the C contraction is a batched vec-mat. The backward
recomputes every chunk from the chunk-start states (kept at (n_chunks, batch, dstate, dim)) and runs the adjoint recurrence the same way in
reverse chunk order, so memory stays O(batch * dim * dstate * chunk). Work is in float32
(float64 for float64 inputs).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

from jetson_mamba.ops._dtypes import portable_reason, work_dtype

CHUNK = 256  # two-level plan: steps per chunk
SUB = 16  # two-level plan: steps per sub-block
CHUNK_SEQUENTIAL = 16  # sequential plan: steps per chunk
SEQUENTIAL_BLOCK = 16384  # batch * dstate * dim from which the sequential plan is used
LOG2E = 1.4426950408889634


def is_available(device: torch.device, dtype: torch.dtype) -> Optional[str]:
    """Runs on any device torch runs on, for the float dtypes."""
    return portable_reason(dtype)


def _softplus_(x: torch.Tensor) -> torch.Tensor:
    """In place: max(x, 0) + log(1 + exp(-|x|)). F.softplus and log1p are unvectorised on the CPU
    (~10x slower); the only loss is below 1 ulp of 1, i.e. an absolute error < 6e-8 in fp32."""
    tail = x.abs().neg_().exp_().add_(1).log_()
    return x.clamp_(min=0).add_(tail)


def _biased_delta(delta: torch.Tensor, delta_bias: Optional[torch.Tensor], work: torch.dtype,
                  owned: bool) -> torch.Tensor:
    """delta + delta_bias in the work dtype; with owned, never the caller's tensor (safe to modify)."""
    dt = delta.to(work)
    if delta_bias is not None:
        return dt + delta_bias.to(work)[:, None]
    return dt.clone() if owned and dt is delta else dt


def _time_major(t: torch.Tensor) -> torch.Tensor:
    """(batch, dim, L) -> contiguous (L, batch, dim), one 2-D transpose per batch row (torch's fast path;
    a 3-D permute copy is ~10x slower on the CPU)."""
    out = torch.empty(t.shape[2], t.shape[0], t.shape[1], dtype=t.dtype, device=t.device)
    for i in range(t.shape[0]):
        out[:, i].copy_(t[i].t())
    return out


def _channel_major(t: torch.Tensor) -> torch.Tensor:
    """(L, batch, dim) -> contiguous (batch, dim, L); the inverse of _time_major."""
    out = torch.empty(t.shape[1], t.shape[2], t.shape[0], dtype=t.dtype, device=t.device)
    for i in range(t.shape[1]):
        out[i].copy_(t[:, i].t())
    return out


class _Call:
    """One call's inputs, time-major and in the work dtype, with channels viewed as (G, H)
    so grouped B/C broadcast without copies; plus the chunk workspace."""

    def __init__(self, u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                 C: torch.Tensor, delta_bias: Optional[torch.Tensor], softplus: bool, nbuf: int) -> None:
        self.work = work = work_dtype(u.dtype)
        self.batch, self.dim, self.L = u.shape
        self.dstate = A.shape[1]
        groups = {t.shape[1] for t in (B, C) if t.dim() == 4} - {1}
        if len(groups) > 1:
            raise ValueError(f"B and C have different numbers of groups: {sorted(groups)}")
        self.G = groups.pop() if groups else 1
        if self.dim % self.G:
            raise ValueError(f"dim {self.dim} is not a multiple of the number of B/C groups {self.G}")
        self.H = self.dim // self.G
        if self.batch * self.dstate * self.dim >= SEQUENTIAL_BLOCK:
            self.chunk = self.sub = CHUNK_SEQUENTIAL
        else:
            self.chunk, self.sub = CHUNK, SUB
        dt = _biased_delta(delta, delta_bias, work, owned=softplus)
        if softplus:
            dt = _softplus_(dt)
        self.u = u.to(work)
        self.dtT = _time_major(dt)
        del dt  # freed before the next (batch, dim, L) buffer; the backward transposes dtT back
        self.xuT = _time_major(self.u).mul_(self.dtT)
        self.At = A.to(work).t().contiguous()  # (dstate, dim)
        self.A5 = self.At.view(1, 1, self.dstate, self.G, self.H)
        # exp(x) = exp2(x * log2(e)): exp2 is ~3x cheaper than exp on the CPU
        self.A2 = self.At * LOG2E
        self.A2_5 = self.A2.view(1, 1, self.dstate, self.G, self.H)
        self.B, self.C = B, C
        self.Bt, self.Ct = self._bc_time_major(B), self._bc_time_major(C)
        size = min(self.chunk, -(-self.L // self.sub) * self.sub)
        self.bufs = [torch.empty(size, self.batch, self.dstate, self.dim, dtype=work, device=u.device)
                     for _ in range(nbuf)]

    def _bc_time_major(self, BC: torch.Tensor) -> torch.Tensor:
        if BC.dim() == 2:  # fixed (dim, dstate)
            return BC.to(self.work).t().contiguous().view(1, 1, self.dstate, self.G, self.H)
        BC4 = BC.unsqueeze(1) if BC.dim() == 3 else BC  # (batch, Gx, dstate, L)
        return BC4.to(self.work).permute(3, 0, 2, 1).contiguous().unsqueeze(-1)  # (L, batch, dstate, Gx, 1)

    def bounds(self) -> List[Tuple[int, int]]:
        return [(t0, min(t0 + self.chunk, self.L)) for t0 in range(0, self.L, self.chunk)]

    def chan(self, t: torch.Tensor) -> torch.Tensor:
        """(T, batch, dstate, dim) -> (T, batch, dstate, G, H)."""
        return t.view(*t.shape[:3], self.G, self.H)

    def chanv(self, t: torch.Tensor) -> torch.Tensor:
        """(T, batch, dim) -> (T, batch, 1, G, H), broadcasting over dstate."""
        return t.view(t.shape[0], t.shape[1], 1, self.G, self.H)

    def buf(self, i: int, T: int) -> torch.Tensor:
        """Workspace i for a chunk of T steps, padded to a multiple of the sub-block."""
        return self.bufs[i][:-(-T // self.sub) * self.sub]

    def bc(self, BCt: torch.Tensor, t0: int, t1: int) -> torch.Tensor:
        """B or C for steps t0:t1, broadcastable to (T, batch, dstate, G, H)."""
        return BCt if BCt.shape[0] == 1 else BCt[t0:t1]

    def contract(self, P: torch.Tensor, BCt: torch.Tensor, t0: int, t1: int) -> torch.Tensor:
        """sum over dstate of P * B (or C) for P (T, batch, dstate, dim): (T, batch, dim)."""
        T = P.shape[0]
        if BCt.shape[0] > 1 and BCt.shape[3] == 1:  # one group: a batched vec-mat
            vec = BCt[t0:t1].view(T * self.batch, 1, self.dstate)
            return torch.bmm(vec, P.reshape(T * self.batch, self.dstate, self.dim)).view(T, self.batch, self.dim)
        return (self.chan(P) * self.bc(BCt, t0, t1)).sum(2).view(T, self.batch, self.dim)

    def bc_grad(self, BC: torch.Tensor, P5: torch.Tensor, w5: torch.Tensor) -> torch.Tensor:
        """Gradient of sum(P * w[..., None] * BC) w.r.t. this chunk of B or C, in BC's own layout."""
        if BC.dim() == 2:
            return torch.einsum("tbngh,tbgh->ghn", P5, w5).reshape(self.dim, self.dstate)
        g = torch.einsum("tbngh,tbgh->bgnt", P5, w5)
        if BC.dim() == 3:
            return g.sum(1)
        return g.sum(1, keepdim=True) if BC.shape[1] == 1 else g

    def fill_a(self, out: torch.Tensor, t0: int, t1: int) -> torch.Tensor:
        """out[t] = exp(dt[t0 + t] * A), 1 past t1."""
        n = t1 - t0
        o5 = self.chan(out)
        torch.mul(self.chanv(self.dtT[t0:t1]), self.A2_5, out=o5[:n])
        o5[n:].zero_()
        return torch.exp2(out, out=out)

    def fill_b(self, out: torch.Tensor, t0: int, t1: int) -> torch.Tensor:
        """out[t] = dt * u * B at step t0 + t, 0 past t1."""
        o5 = self.chan(out)
        torch.mul(self.chanv(self.xuT[t0:t1]), self.bc(self.Bt, t0, t1), out=o5[:t1 - t0])
        o5[t1 - t0:].zero_()
        return out


def _scan_(a: torch.Tensor, h: torch.Tensor, state: torch.Tensor, reverse: bool, sub: int) -> torch.Tensor:
    """In place: h[t] <- a[t] * h[t -/+ 1] + h[t] with h[-1] (h[T] when reverse) = state.

    a, h: (T, batch, dstate, dim) with T a multiple of `sub`; with several sub-blocks, a is
    overwritten with cumulative products. Returns the state after the last step (a view into h).
    """
    T = a.shape[0]
    m = T // sub
    if m == 1:  # one sub-block: plain sequential steps, no cumulative products needed
        order = range(T - 1, -1, -1) if reverse else range(T)
        carry = state
        for i in order:
            h[i].addcmul_(a[i], carry)
            carry = h[i]
        return carry
    a5 = a.view(m, sub, *a.shape[1:])
    h5 = h.view(m, sub, *h.shape[1:])
    for i in (range(sub - 2, -1, -1) if reverse else range(1, sub)):
        prev = i + 1 if reverse else i - 1
        h5[:, i].addcmul_(a5[:, i], h5[:, prev])
        a5[:, i].mul_(a5[:, prev])
    last = 0 if reverse else sub - 1
    carry = state.unsqueeze(0)
    for j in (range(m - 1, -1, -1) if reverse else range(m)):
        h5[j].addcmul_(a5[j], carry)
        carry = h5[j, last:last + 1]
    return carry.squeeze(0)


def _forward_core(call: _Call, y_into_dt: bool, want_y: bool, keep_every: int
                  ) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor], torch.Tensor]:
    """Run the scan: (y (L, batch, dim) or None, the states at steps 0, keep_every, 2 * keep_every, ...
    before those steps ((ceil(L / keep_every), batch, dstate, dim); None for keep_every=0), last state
    (batch, dstate, dim)). keep_every is a multiple of call.chunk. With y_into_dt, y overwrites call.dtT
    chunk by chunk (each chunk's dt is consumed before its y is written): one (batch, dim, L) buffer less."""
    device = call.dtT.device
    starts = None
    if keep_every:
        if keep_every % call.chunk:
            raise ValueError(f"states are kept every {keep_every} steps, not a multiple of the chunk ({call.chunk})")
        starts = torch.empty(-(-call.L // keep_every), call.batch, call.dstate, call.dim, dtype=call.work,
                             device=device)
    y = None
    if want_y:
        y = call.dtT if y_into_dt else torch.empty(call.L, call.batch, call.dim, dtype=call.work, device=device)
    state = torch.zeros(call.batch, call.dstate, call.dim, dtype=call.work, device=device)
    for t0, t1 in call.bounds():
        if starts is not None and t0 % keep_every == 0:
            starts[t0 // keep_every] = state
        a = call.fill_a(call.buf(0, t1 - t0), t0, t1)
        h = call.fill_b(call.buf(1, t1 - t0), t0, t1)
        state.copy_(_scan_(a, h, state, reverse=False, sub=call.sub))
        if y is not None:
            y[t0:t1] = call.contract(h[:t1 - t0], call.Ct, t0, t1)
    return y, starts, state


def selective_scan_forward(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                           C: torch.Tensor, D: Optional[torch.Tensor] = None,
                           z: Optional[torch.Tensor] = None, delta_bias: Optional[torch.Tensor] = None,
                           delta_softplus: bool = False,
                           ) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
    """(out, out_z or None, last_state); see jetson_mamba.ops for the shapes."""
    out, out_z, last, _ = _forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, every=0)
    return out, out_z, last


def selective_scan_forward_x(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                             C: torch.Tensor, D: Optional[torch.Tensor], z: Optional[torch.Tensor],
                             delta_bias: Optional[torch.Tensor], delta_softplus: bool, every: int,
                             ) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
    """(out, out_z or None, x): x (batch, dim, ceil(L / every), 2 * dstate) fp32 as the compiled kernels
    keep it, from the same pass: at each `every`-step chunk's end, [..., 0::2] the product of
    exp(delta * A) from the start and [..., 1::2] the state. `every`: a multiple of 256."""
    out, out_z, _, x = _forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, every)
    assert x is not None
    return out, out_z, x


def _forward(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
             D: Optional[torch.Tensor], z: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor],
             delta_softplus: bool, every: int,
             ) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor, Optional[torch.Tensor]]:
    """(out, out_z, last state, x or None for every=0)."""
    call = _Call(u, delta, A, B, C, delta_bias, delta_softplus, nbuf=2)
    x = None
    if every:
        # the decay products need each chunk's sum of dt, taken before y overwrites call.dtT
        sums = torch.stack([call.dtT[t:t + every].sum(0) for t in range(0, call.L, every)], dim=-1).cumsum(-1)
        x = torch.empty(call.batch, call.dim, sums.shape[-1], 2 * call.dstate, dtype=torch.float32, device=u.device)
        x[..., 0::2] = torch.exp(sums[..., None] * A.to(call.work)[:, None, :])
    yT, starts, last = _forward_core(call, y_into_dt=True, want_y=True, keep_every=every)
    assert yT is not None
    uw, work = call.u, call.work
    del call  # frees the chunk buffers and xuT before the outputs are allocated
    y = _channel_major(yT)
    del yT
    if D is not None:
        y.addcmul_(uw, D.to(work)[:, None])
    out_z = None if z is None else F.silu(z.to(work)).mul_(y).to(u.dtype)
    last = last.transpose(1, 2).contiguous()
    if x is not None:
        assert starts is not None
        x[:, :, :-1, 1::2] = starts[1:].permute(1, 3, 0, 2)
        x[:, :, -1, 1::2] = last
    return y.to(u.dtype), out_z, last, x


def selective_scan_backward(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                            C: torch.Tensor, D: Optional[torch.Tensor], z: Optional[torch.Tensor],
                            delta_bias: Optional[torch.Tensor], delta_softplus: bool, dout: torch.Tensor,
                            ) -> Tuple[Optional[torch.Tensor], ...]:
    """(du, ddelta, dA, dB, dC, dD, ddelta_bias, dz); dout is the gradient of out_z when z is given."""
    call = _Call(u, delta, A, B, C, delta_bias, delta_softplus, nbuf=4)
    work = call.work
    yT, starts, _ = _forward_core(call, y_into_dt=False, want_y=z is not None, keep_every=call.chunk)
    assert starts is not None
    # Every (batch, dim, L) temporary is freed as soon as it is used: memory is the point here.
    dy = dout.to(work)
    dz = None
    if z is not None:
        assert yT is not None
        y = _channel_major(yT)
        del yT
        if D is not None:
            y.addcmul_(call.u, D.to(work)[:, None])
        zw = z.to(work)
        sig = torch.sigmoid(zw)
        # silu'(z) = sigmoid(z) * (1 + z * (1 - sigmoid(z)))
        dz = torch.sub(1, sig).mul_(zw).add_(1).mul_(sig).mul_(y).mul_(dy).to(z.dtype)
        del y
        dy = sig.mul_(zw).mul_(dy)  # gradient of y: dout * silu(z)
    dyT = _time_major(dy)
    dD = None if D is None else (dy * call.u).sum((0, 2)).to(D.dtype)
    del dy
    dA = torch.zeros(call.G, call.H, call.dstate, dtype=work, device=u.device)
    dxuT = call.xuT  # each chunk's rows of dt*u are used up before its d(dt*u) overwrites them
    ddtT = torch.empty_like(call.dtT)
    dB_parts: List[torch.Tensor] = []
    dC_parts: List[torch.Tensor] = []
    carry = torch.zeros(call.batch, call.dstate, call.dim, dtype=work, device=u.device)
    for c, (t0, t1) in reversed(list(enumerate(call.bounds()))):
        T = t1 - t0
        a_cum = call.fill_a(call.buf(0, T), t0, t1)
        h = call.fill_b(call.buf(1, T), t0, t1)
        _scan_(a_cum, h, starts[c], reverse=False, sub=call.sub)
        # adjoint g_t = a_{t+1} g_{t+1} + C_t dy_t; a_{t+1} past the chunk is folded into `carry`
        m = call.fill_a(a_cum, t0 + 1, t1)
        g = call.buf(2, T)
        g5 = call.chan(g)
        torch.mul(call.chanv(dyT[t0:t1]), call.bc(call.Ct, t0, t1), out=g5[:T])
        g5[T:].zero_()
        _scan_(m, g, carry, reverse=True, sub=call.sub)
        g5, h5 = g5[:T], call.chan(h[:T])
        dC_parts.append(call.bc_grad(C, h5, call.chanv(dyT[t0:t1])[:, :, 0]))
        dB_parts.append(call.bc_grad(B, g5, call.chanv(call.xuT[t0:t1])[:, :, 0]))
        # d(dt*A)_t = g_t * a_t * h_{t-1} = g_t * (h_t - b_t)
        b5 = call.chan(call.fill_b(call.buf(3, T), t0, t1)[:T])
        dxuT[t0:t1] = call.contract(g[:T], call.Bt, t0, t1)
        torch.sub(h5, b5, out=b5).mul_(g5)
        dA.add_(torch.einsum("tbngh,tbgh->ghn", b5, call.chanv(call.dtT[t0:t1])[:, :, 0]))
        ddtT[t0:t1] = b5.mul_(call.A5).sum(2).view(T, call.batch, call.dim)
        carry = torch.exp2(call.dtT[t0, :, None, :] * call.A2) * g[0]
    del starts, carry
    call.bufs.clear()
    dxu = _channel_major(dxuT)
    del dxuT
    call.xuT = dxu  # drop the last reference to the time-major buffer
    ddt = _channel_major(ddtT).addcmul_(dxu, call.u)
    del ddtT
    du = dxu.mul_(_channel_major(call.dtT))
    if D is not None:
        du.addcmul_(_channel_major(dyT), D.to(work)[:, None])
    del dyT
    if delta_softplus:  # softplus'(x) = sigmoid(x)
        ddt.mul_(_biased_delta(delta, delta_bias, work, owned=True).sigmoid_())
    ddelta_bias = None if delta_bias is None else ddt.sum((0, 2)).to(delta_bias.dtype)
    dB = sum(dB_parts) if B.dim() == 2 else torch.cat(dB_parts[::-1], dim=-1)
    dC = sum(dC_parts) if C.dim() == 2 else torch.cat(dC_parts[::-1], dim=-1)
    return (du.to(u.dtype), ddt.to(delta.dtype), dA.view(call.dim, call.dstate).to(A.dtype),
            dB.to(B.dtype), dC.to(C.dtype), dD, ddelta_bias, dz)

