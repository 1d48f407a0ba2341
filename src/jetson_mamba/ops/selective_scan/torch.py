"""Portable selective scan in plain PyTorch: a chunked, two-level scan with bounded memory.

The sequence is cut into chunks of CHUNK steps; only one chunk's (batch, dim, CHUNK, dstate)
work buffers exist at a time and the state is carried from chunk to chunk. Inside a chunk the
recurrence h_t = a_t * h_{t-1} + b_t (a_t = exp(delta_t * A), never exp(-cumsum), so nothing
overflows) is solved in two levels, each a short loop of in-place, fully vectorised ops:
first within sub-blocks of SUB steps (all sub-blocks at once), then across the sub-blocks.
The backward recomputes every chunk from the chunk-start states (kept at (batch, dim, n_chunks,
dstate)) and runs the adjoint recurrence the same way in reverse chunk order, so memory stays
O(batch * dim * dstate * CHUNK). Work is in float32 (float64 for float64 inputs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Tuple

from jetson_mamba.ops._dtypes import portable_reason, work_dtype

if TYPE_CHECKING:
    import torch

CHUNK = 64
SUB = 8


def is_available(device: torch.device, dtype: torch.dtype) -> Optional[str]:
    """Runs on any device torch runs on, for the float dtypes."""
    return portable_reason(dtype)


class _Layout:
    """Shapes of one call: channels viewed as (G, H) so grouped B/C broadcast without copies."""

    def __init__(self, u: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> None:
        self.batch, self.dim, self.L = u.shape
        self.dstate = A.shape[1]
        groups = {t.shape[1] for t in (B, C) if t.dim() == 4} - {1}
        if len(groups) > 1:
            raise ValueError(f"B and C have different numbers of groups: {sorted(groups)}")
        self.G = groups.pop() if groups else 1
        if self.dim % self.G:
            raise ValueError(f"dim {self.dim} is not a multiple of the number of B/C groups {self.G}")
        self.H = self.dim // self.G

    def chan(self, t: torch.Tensor) -> torch.Tensor:
        """(batch, dim, ...) -> (batch, G, H, ...)."""
        return t.view(t.shape[0], self.G, self.H, *t.shape[2:])

    def bc_chunk(self, BC: torch.Tensor, t0: int, t1: int, work: torch.dtype) -> torch.Tensor:
        """The B or C slice of steps t0:t1, broadcastable to (batch, G, H, T, dstate)."""
        if BC.dim() == 2:
            return BC.to(work).view(1, self.G, self.H, 1, self.dstate)
        if BC.dim() == 3:
            BC = BC.unsqueeze(1)
        return BC[..., t0:t1].to(work).transpose(-1, -2).unsqueeze(2)

    def bc_grad(self, BC: torch.Tensor, P: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Gradient of sum(P * w[..., None] * BC) w.r.t. the B/C chunk, in BC's own layout."""
        import torch

        if BC.dim() == 2:
            return torch.einsum("bghtn,bght->ghn", P, w).reshape(self.dim, self.dstate)
        g = torch.einsum("bghtn,bght->bgnt", P, w)
        if BC.dim() == 3:
            return g.sum(1)
        return g.sum(1, keepdim=True) if BC.shape[1] == 1 else g


def _scan_(a: torch.Tensor, h: torch.Tensor, state: torch.Tensor, reverse: bool) -> torch.Tensor:
    """In place: h[t] <- a[t] * h[t -/+ 1] + h[t] with h[-1] (h[T] when reverse) = state.

    a, h: (batch, dim, T, dstate) with T a multiple of SUB; a is overwritten with cumulative
    products. Returns the state after the last step (a copy, so the buffers can be reused).
    """
    batch, dim, T, n = a.shape
    m = T // SUB
    a5 = a.view(batch, dim, m, SUB, n)
    h5 = h.view(batch, dim, m, SUB, n)
    steps = range(SUB - 2, -1, -1) if reverse else range(1, SUB)
    for i in steps:
        prev = i + 1 if reverse else i - 1
        h5[:, :, :, i].addcmul_(a5[:, :, :, i], h5[:, :, :, prev])
        a5[:, :, :, i].mul_(a5[:, :, :, prev])
    last = 0 if reverse else SUB - 1
    carry = state.unsqueeze(2)
    for j in (range(m - 1, -1, -1) if reverse else range(m)):
        h5[:, :, j].addcmul_(a5[:, :, j], carry)
        carry = h5[:, :, j, last:last + 1]
    return carry.squeeze(2).clone()


def _prepare_delta(delta: torch.Tensor, delta_bias: Optional[torch.Tensor], softplus: bool,
                   work: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
    """(delta as used by the scan, delta + bias before softplus) in the work dtype."""
    import torch.nn.functional as F

    raw = delta.to(work)
    if delta_bias is not None:
        raw = raw + delta_bias.to(work)[:, None]
    return (F.softplus(raw) if softplus else raw), raw


class _Chunks:
    """Per-call chunk workspace: fills a = exp(dt*A) and b = dt*u*B for one chunk, padded to SUB."""

    def __init__(self, lay: _Layout, dt: torch.Tensor, xu: torch.Tensor, A: torch.Tensor,
                 B: torch.Tensor, nbuf: int) -> None:
        import torch

        self.lay, self.dt, self.xu, self.B = lay, dt, xu, B
        self.A5 = A.to(dt.dtype).view(1, lay.G, lay.H, 1, lay.dstate)
        size = min(CHUNK, -(-lay.L // SUB) * SUB)
        self.bufs: List[torch.Tensor] = [
            torch.empty(lay.batch, lay.dim, size, lay.dstate, dtype=dt.dtype, device=dt.device)
            for _ in range(nbuf)]

    def bounds(self) -> List[Tuple[int, int]]:
        return [(t0, min(t0 + CHUNK, self.lay.L)) for t0 in range(0, self.lay.L, CHUNK)]

    def view(self, i: int, T: int) -> torch.Tensor:
        return self.bufs[i][:, :, :-(-T // SUB) * SUB]

    def fill_a(self, out: torch.Tensor, t0: int, t1: int) -> torch.Tensor:
        """out[:, :, t] = exp(dt[t0 + t] * A), 1 past the end."""
        import torch

        lay = self.lay
        n = min(t1, lay.L) - t0
        o5 = lay.chan(out)
        torch.mul(lay.chan(self.dt[:, :, t0:t0 + n])[..., None], self.A5, out=o5[:, :, :, :n])
        o5[:, :, :, n:].zero_()
        return out.exp_()

    def fill_b(self, out: torch.Tensor, t0: int, t1: int) -> torch.Tensor:
        """out[:, :, t] = dt * u * B at step t0 + t, 0 past the end."""
        import torch

        lay = self.lay
        o5 = lay.chan(out)
        torch.mul(lay.chan(self.xu[:, :, t0:t1])[..., None], lay.bc_chunk(self.B, t0, t1, out.dtype),
                  out=o5[:, :, :, :t1 - t0])
        o5[:, :, :, t1 - t0:].zero_()
        return out


def _forward_core(lay: _Layout, ch: _Chunks, C: torch.Tensor, want_y: bool
                  ) -> Tuple[Optional[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Run the scan: (y or None, chunk-start states (batch, dim, n_chunks, dstate), last state)."""
    import torch

    work = ch.dt.dtype
    bounds = ch.bounds()
    starts = torch.empty(lay.batch, lay.dim, len(bounds), lay.dstate, dtype=work, device=ch.dt.device)
    y = torch.empty(lay.batch, lay.dim, lay.L, dtype=work, device=ch.dt.device) if want_y else None
    state = torch.zeros(lay.batch, lay.dim, lay.dstate, dtype=work, device=ch.dt.device)
    for c, (t0, t1) in enumerate(bounds):
        starts[:, :, c] = state
        a = ch.fill_a(ch.view(0, t1 - t0), t0, t1)
        h = ch.fill_b(ch.view(1, t1 - t0), t0, t1)
        state = _scan_(a, h, state, reverse=False)
        if y is not None:
            T = t1 - t0
            prod = lay.chan(a[:, :, :T])
            torch.mul(lay.chan(h[:, :, :T]), lay.bc_chunk(C, t0, t1, work), out=prod)
            y[:, :, t0:t1] = a[:, :, :T].sum(-1)
    return y, starts, state


def selective_scan_forward(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                           C: torch.Tensor, D: Optional[torch.Tensor] = None,
                           z: Optional[torch.Tensor] = None, delta_bias: Optional[torch.Tensor] = None,
                           delta_softplus: bool = False,
                           ) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
    """(out, out_z or None, last_state); see jetson_mamba.ops for the shapes."""
    import torch.nn.functional as F

    work = work_dtype(u.dtype)
    lay = _Layout(u, A, B, C)
    dt, _ = _prepare_delta(delta, delta_bias, delta_softplus, work)
    uw = u.to(work)
    ch = _Chunks(lay, dt, dt * uw, A, B, nbuf=2)
    y, _, last = _forward_core(lay, ch, C, want_y=True)
    assert y is not None
    if D is not None:
        y.addcmul_(uw, D.to(work)[:, None])
    out_z = None if z is None else (y * F.silu(z.to(work))).to(u.dtype)
    return y.to(u.dtype), out_z, last


def selective_scan_backward(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                            C: torch.Tensor, D: Optional[torch.Tensor], z: Optional[torch.Tensor],
                            delta_bias: Optional[torch.Tensor], delta_softplus: bool, dout: torch.Tensor,
                            ) -> Tuple[torch.Tensor, ...]:
    """(du, ddelta, dA, dB, dC, dD, ddelta_bias, dz); dout is the gradient of out_z when z is given."""
    import torch

    work = work_dtype(u.dtype)
    lay = _Layout(u, A, B, C)
    dt, raw = _prepare_delta(delta, delta_bias, delta_softplus, work)
    uw = u.to(work)
    xu = dt * uw
    ch = _Chunks(lay, dt, xu, A, B, nbuf=4)
    y, starts, _ = _forward_core(lay, ch, C, want_y=z is not None)
    dy = dout.to(work)
    dz = None
    if z is not None:
        assert y is not None
        zw = z.to(work)
        sig = torch.sigmoid(zw)
        if D is not None:
            y.addcmul_(uw, D.to(work)[:, None])
        dz = (dy * y * sig * (1 + zw * (1 - sig))).to(z.dtype)
        dy = dy * zw * sig
    A5 = A.to(work).view(lay.G, lay.H, lay.dstate, 1)
    dA = torch.zeros(lay.G, lay.H, lay.dstate, dtype=work, device=u.device)
    dxu = torch.empty_like(dt)
    ddt = torch.empty_like(dt)
    dB_parts: List[torch.Tensor] = []
    dC_parts: List[torch.Tensor] = []
    carry = torch.zeros(lay.batch, lay.dim, lay.dstate, dtype=work, device=u.device)
    for c, (t0, t1) in reversed(list(enumerate(ch.bounds()))):
        T = t1 - t0
        a_cum = ch.fill_a(ch.view(0, T), t0, t1)
        h = ch.fill_b(ch.view(1, T), t0, t1)
        _scan_(a_cum, h, starts[:, :, c], reverse=False)
        # adjoint g_t = a_{t+1} g_{t+1} + C_t dy_t; a_{t+1} past the chunk is folded into `carry`
        m = ch.fill_a(a_cum, t0 + 1, t1)
        g = ch.view(2, T)
        g5 = lay.chan(g)
        torch.mul(lay.chan(dy[:, :, t0:t1])[..., None], lay.bc_chunk(C, t0, t1, work), out=g5[:, :, :, :T])
        g5[:, :, :, T:].zero_()
        _scan_(m, g, carry, reverse=True)
        g5, h5 = g5[:, :, :, :T], lay.chan(h[:, :, :T])
        dC_parts.append(lay.bc_grad(C, h5, lay.chan(dy[:, :, t0:t1])))
        dB_parts.append(lay.bc_grad(B, g5, lay.chan(xu[:, :, t0:t1])))
        # d(dt*u)_t = sum_n g B; d(dt*A)_t = g_t * a_t * h_{t-1} = g_t * (h_t - b_t)
        tmp = lay.chan(ch.view(3, T)[:, :, :T])
        torch.mul(g5, lay.bc_chunk(B, t0, t1, work), out=tmp)
        dxu[:, :, t0:t1] = tmp.sum(-1).view(lay.batch, lay.dim, T)
        b = lay.chan(ch.fill_b(ch.view(3, T), t0, t1)[:, :, :T])
        torch.sub(h5, b, out=b).mul_(g5)
        dA.add_(torch.einsum("bghtn,bght->ghn", b, lay.chan(dt[:, :, t0:t1])))
        ddt[:, :, t0:t1] = torch.matmul(b, A5).view(lay.batch, lay.dim, T)
        carry = torch.exp(dt[:, :, t0, None] * A.to(work)) * g[:, :, 0]
    ddt.addcmul_(dxu, uw)
    du = dxu * dt
    dD = None
    if D is not None:
        du.addcmul_(dy, D.to(work)[:, None])
        dD = (dy * uw).sum((0, 2)).to(D.dtype)
    if delta_softplus:
        ddt.mul_(torch.sigmoid(raw))
    ddelta_bias = None if delta_bias is None else ddt.sum((0, 2)).to(delta_bias.dtype)
    dB = sum(dB_parts) if B.dim() == 2 else torch.cat(dB_parts[::-1], dim=-1)
    dC = sum(dC_parts) if C.dim() == 2 else torch.cat(dC_parts[::-1], dim=-1)
    return (du.to(u.dtype), ddt.to(delta.dtype), dA.view(lay.dim, lay.dstate).to(A.dtype),
            dB.to(B.dtype), dC.to(C.dtype), dD, ddelta_bias, dz)


def chunk_end_states(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                     delta_bias: Optional[torch.Tensor], delta_softplus: bool, every: int) -> torch.Tensor:
    """States after steps every-1, 2*every-1, ... before the last one: (batch, dim, ceil(L/every)-1, dstate).

    What the compiled kernels keep per 2048-step chunk; `every` must be a multiple of CHUNK.
    """
    if every % CHUNK:
        raise ValueError(f"every ({every}) must be a multiple of CHUNK ({CHUNK})")
    work = work_dtype(u.dtype)
    lay = _Layout(u, A, B, C)
    dt, _ = _prepare_delta(delta, delta_bias, delta_softplus, work)
    ch = _Chunks(lay, dt, dt * u.to(work), A, B, nbuf=2)
    _, starts, _ = _forward_core(lay, ch, C, want_y=False)
    return starts[:, :, every // CHUNK::every // CHUNK]
