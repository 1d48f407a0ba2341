"""The sequence-parallel (chunked) Triton scan forward: when it is picked, and that it computes the
one-pass results (out, out * silu(z), last state, the stand-ins' chunk states x) against float64.

The kernels run under TRITON_INTERPRET=1 in a subprocess (`test_chunked_suite_under_the_interpreter`),
on a GPU in-process; the choice (plan_chunk) is plain Python and runs everywhere.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional

import pytest
import torch

from interpreted import pytest_interpreted
from jetson_mamba.ops.selective_scan import triton_chunked as chunked
from jetson_mamba.ops.selective_scan.naive import selective_scan_ref

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
GPU = torch.cuda.is_available() and not INTERPRET
DEVICE = "cuda" if GPU else "cpu"
needs_triton = pytest.mark.skipif(
    not (INTERPRET or GPU), reason="on CPU these run under TRITON_INTERPRET=1 (the subprocess test below)")
TOL = {torch.float32: 2e-5, torch.bfloat16: 3e-2}


def test_batch_one_yolo_scan_is_chunked_on_an_h200() -> None:
    """Mamba-YOLO's scan at batch 1 (K*D = 512 channels, L = 6400): 64 one-pass programs for 132 SMs."""
    chunk = chunked.plan_chunk(1, 512, 6400, sms=132)
    assert chunked.MIN_CHUNK <= chunk <= chunked.MAX_CHUNK and chunk & (chunk - 1) == 0
    assert chunked.MAX_CHUNK % chunk == 0  # x's 2048-step ends fall on chunk ends
    assert 6400 // chunk >= 8  # enough chunks to fill the GPU


@pytest.mark.parametrize("batch, dim, L, sms, setting", [
    (8, 2048, 2048, 132, None),  # batch 8: the one-pass grid already fills the GPU
    (8, 512, 6400, 132, None),   # Mamba-YOLO at batch 8: 512 programs
    (1, 512, 100, 132, "1"),     # too short for two chunks, even when forced
    (1, 512, 6400, 132, "0"),    # switched off
])
def test_one_pass_where_it_fills_the_gpu(batch: int, dim: int, L: int, sms: int, setting: Optional[str]) -> None:
    assert chunked.plan_chunk(batch, dim, L, sms, setting) == 0


def test_forced_chunks_without_a_gpu() -> None:
    """The interpreter has no SM count: JETSON_MAMBA_SCAN_CHUNKED=1 still chunks (two chunks or more)."""
    chunk = chunked.plan_chunk(1, 8, 700, sms=0, setting="1")
    assert 0 < chunk < 700


def test_three_launches_chunk_the_forward_only_inside_a_cuda_graph_unless_forced(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With JETSON_MAMBA_SCAN_LOOKBACK=0 (three launches) the one-pass forward is faster eagerly end to end
    (host-bound: see chunk_for); the chunked forward is for graph replays, or forced with
    JETSON_MAMBA_SCAN_CHUNKED=1. The backward chunks eagerly."""
    u = torch.empty(1, 8, 700)
    monkeypatch.setattr(chunked, "plan_chunk", lambda *args: 256)  # what the shape rule would pick on a GPU
    monkeypatch.delenv(chunked.ENV_VAR, raising=False)
    monkeypatch.setenv(chunked.LOOKBACK_VAR, "0")
    assert chunked.chunk_for(u, forward=True) == 0
    assert chunked.chunk_for(u) == 256
    monkeypatch.setenv(chunked.ENV_VAR, "1")
    assert chunked.chunk_for(u, forward=True) == 256


def _inputs(batch: int, dim: int, L: int, N: int, bc: str, dtype: torch.dtype) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(batch * 1000 + dim * 10 + L)

    def r(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    shapes = {"grouped": (batch, 4 if dim % 4 == 0 else 2, N, L), "variable": (batch, N, L), "fixed": (dim, N)}
    return dict(u=r(batch, dim, L).to(dtype), delta=r(batch, dim, L, scale=0.5).to(dtype),
                A=-torch.rand(dim, N, generator=g) - 0.2, B=r(*shapes[bc]).to(dtype),
                C=r(*shapes["grouped" if bc == "grouped" else "variable"]).to(dtype), D=r(dim),
                z=r(batch, dim, L).to(dtype), delta_bias=r(dim, scale=0.1))


def _close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(actual).all(), f"{what}: non-finite (an element never written?)"
    err = (actual.double() - expected.double()).abs().max().item() / (expected.abs().max().item() + 1e-12)
    assert err <= TOL[dtype], f"{what}: relative error {err:.3g} > {TOL[dtype]}"


@needs_triton
@pytest.mark.parametrize("batch, dim, L, N, bc, dtype, with_z", [
    (1, 8, 300, 4, "grouped", torch.float32, True),     # Mamba-YOLO family (K=4 groups), L not a chunk multiple
    (1, 8, 256, 16, "grouped", torch.float32, False),   # dstate 16, L a chunk multiple
    (2, 6, 200, 3, "variable", torch.float32, True),    # odd dstate, channels not a block multiple
    (1, 4, 150, 4, "fixed", torch.float32, True),       # fixed B
    (1, 8, 200, 4, "grouped", torch.bfloat16, True),
])
def test_chunked_forward_matches_float64(monkeypatch: pytest.MonkeyPatch, nan_empty: None, batch: int, dim: int, L: int, N: int,
                                         bc: str, dtype: torch.dtype, with_z: bool) -> None:
    from jetson_mamba.ops.selective_scan import triton as scan

    monkeypatch.setenv(chunked.ENV_VAR, "1")
    calls = []
    real = chunked.forward
    monkeypatch.setattr(chunked, "forward", lambda *a, **k: calls.append(a[10]) or real(*a, **k))  # a[10]: chunk
    t = {k: v.to(DEVICE) for k, v in _inputs(batch, dim, L, N, bc, dtype).items()}
    z = t["z"] if with_z else None
    out, out_z, last = scan.selective_scan_forward(t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], z,
                                                   t["delta_bias"], True)
    assert calls and 0 < calls[0] < L, "the chunked path was not taken"
    r = {k: v.double().cpu() for k, v in t.items()}
    ref, ref_last = selective_scan_ref(r["u"], r["delta"], r["A"], r["B"], r["C"], r["D"], None, r["delta_bias"],
                                       True, return_last_state=True)
    _close(out.cpu(), ref, dtype, "out")
    _close(last.cpu(), ref_last, torch.float32 if dtype == torch.float32 else dtype, "last state")
    if with_z:
        _close(out_z.cpu(), ref * torch.nn.functional.silu(r["z"]), dtype, "out_z")
    else:
        assert out_z is None


@needs_triton
def test_chunked_chunk_states_match_the_torch_backend(monkeypatch: pytest.MonkeyPatch, nan_empty: None) -> None:
    """The stand-ins' x (decay product and state at every `every` steps, and at the end) from the carry pass."""
    from jetson_mamba.ops.selective_scan import torch as portable
    from jetson_mamba.ops.selective_scan import triton as scan

    monkeypatch.setenv(chunked.ENV_VAR, "1")
    t = {k: v.to(DEVICE) for k, v in _inputs(1, 8, 520, 4, "grouped", torch.float32).items()}
    args = (t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["z"], t["delta_bias"], True, 256)
    _o, _oz, x = scan.selective_scan_forward_x(*args)
    r = tuple(a.double().cpu() if isinstance(a, torch.Tensor) else a for a in args)
    _close(x.cpu(), portable.selective_scan_forward_x(*r)[2], torch.float32, "x")


@needs_triton
@pytest.mark.parametrize("batch, dim, L, N, bc, dtype", [
    (1, 8, 300, 4, "grouped", torch.float32),    # 5 chunks of 64, the last one partial
    (2, 6, 520, 3, "variable", torch.float32),   # 2 batch rows, 3 channel blocks, odd dstate; x at 256 and the end
    (1, 4, 150, 4, "fixed", torch.bfloat16),     # fixed B, 16-bit
])
def test_lookback_forward_matches_float64_and_the_three_launches(
        monkeypatch: pytest.MonkeyPatch, nan_empty: None, batch: int, dim: int, L: int, N: int, bc: str,
        dtype: torch.dtype) -> None:
    """The chunked forward in one launch (the default; tickets, flags, the carried state read from the
    previous chunk's program) gives out, out_z, the last state and x as the three launches do
    (JETSON_MAMBA_SCAN_LOOKBACK=0), and the float64 recurrence's. One launch: the carry kernel never runs."""
    from jetson_mamba.ops.selective_scan import triton as scan

    monkeypatch.setenv(chunked.ENV_VAR, "1")
    t = {k: v.to(DEVICE) for k, v in _inputs(batch, dim, L, N, bc, dtype).items()}
    args = (t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["z"], t["delta_bias"], True)
    monkeypatch.setenv(chunked.LOOKBACK_VAR, "0")
    three = scan._forward(*args, 256)
    monkeypatch.delenv(chunked.LOOKBACK_VAR)
    monkeypatch.setattr(chunked, "_carry", lambda *a, **k: pytest.fail("the carry kernel ran"))
    one = scan._forward(*args, 256)
    for what, a, b in zip(("out", "out_z", "last state", "x"), one, three):
        assert torch.isfinite(a).all(), f"{what}: an element never written"
        tol = 1e-6 * (b.abs().max().item() + 1e-12) if GPU else 0.0  # the interpreter runs the same float32 steps
        assert (a.float() - b.float()).abs().max().item() <= tol, f"{what} differs from the three launches"
    r = {k: v.double().cpu() for k, v in t.items()}
    ref, ref_last = selective_scan_ref(r["u"], r["delta"], r["A"], r["B"], r["C"], r["D"], None, r["delta_bias"],
                                       True, return_last_state=True)
    _close(one[0].cpu(), ref, dtype, "out")
    _close(one[2].cpu(), ref_last, torch.float32 if dtype == torch.float32 else dtype, "last state")
    _close(one[1].cpu(), ref * torch.nn.functional.silu(r["z"]), dtype, "out_z")


def test_lookback_chunks_eagerly_where_it_was_timed_to_pay(monkeypatch: pytest.MonkeyPatch) -> None:
    """By default (the one-launch forward) the eager forward chunks where eager_forward_chunks says so (its
    host cost is the one-pass kernel's plus a zero fill); JETSON_MAMBA_SCAN_CHUNKED=0 still switches chunking
    off, and JETSON_MAMBA_SCAN_LOOKBACK=0 keeps the eager forward one-pass."""
    u = torch.empty(1, 8, 700)
    monkeypatch.setattr(chunked, "plan_chunk", lambda *args: 0 if args[-1] == "0" else 256)
    monkeypatch.delenv(chunked.ENV_VAR, raising=False)
    monkeypatch.delenv(chunked.LOOKBACK_VAR, raising=False)
    assert chunked.lookback()
    monkeypatch.setattr(chunked, "eager_forward_chunks", lambda *args: True)
    assert chunked.chunk_for(u, forward=True) == 256
    monkeypatch.setattr(chunked, "eager_forward_chunks", lambda *args: False)
    assert chunked.chunk_for(u, forward=True) == 0
    assert chunked.chunk_for(u) == 256  # the backward
    monkeypatch.setattr(chunked, "eager_forward_chunks", lambda *args: True)
    monkeypatch.setenv(chunked.LOOKBACK_VAR, "0")
    assert chunked.chunk_for(u, forward=True) == 0
    monkeypatch.delenv(chunked.LOOKBACK_VAR)
    monkeypatch.setenv(chunked.ENV_VAR, "0")
    assert chunked.chunk_for(u, forward=True) == 0


@pytest.mark.parametrize("batch, dim, L, chunks", [
    (1, 512, 6400, True),    # Mamba-YOLO's scan at batch 1, 640x640 (timed: 0.135 vs 0.353 ms one-pass)
    (1, 512, 1600, False),   # its next stage: short
    (8, 512, 6400, False),   # batch 8 fills the SMs
    (1, 2048, 2048, False),  # upstream's Mamba(1024): 256 programs
    (1, 1536, 1024, False),  # the 130M LM's prefill
])
def test_the_eager_forward_chunks_only_where_most_sms_idle_on_a_long_sequence(batch: int, dim: int, L: int,
                                                                              chunks: bool) -> None:
    assert chunked.eager_forward_chunks(batch, dim, L, sms=132) == chunks


@pytest.mark.slow
@pytest.mark.skipif(INTERPRET or GPU, reason="this is the outer runner (CPU only)")
def test_chunked_suite_under_the_interpreter() -> None:
    pytest.importorskip("triton")
    out = pytest_interpreted(str(Path(__file__)), "-k", "match", cwd=Path(__file__).parent)
    assert "17 passed" in out, out[-2000:]


@pytest.mark.gpu
def test_lookback_forward_on_the_gpu_is_race_free(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mamba-YOLO's scan at batch 1 (13 chunks of 512 per channel block, 64 blocks running at once): the
    one-launch forward equals the one-pass kernel's output, the same bits on 20 runs (a chunk reading its
    predecessor's state before it was published would differ from run to run)."""
    from jetson_mamba.ops.selective_scan import triton as scan

    t = {k: v.cuda() for k, v in _inputs(1, 512, 6400, 16, "grouped", torch.float32).items()}
    args = (t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["z"], t["delta_bias"], True)
    monkeypatch.setenv(chunked.ENV_VAR, "0")
    ref = scan._forward(*args, 2048)
    monkeypatch.setenv(chunked.ENV_VAR, "1")  # whatever this GPU's SM count (the H100/H200 chunk it anyway)
    monkeypatch.delenv(chunked.LOOKBACK_VAR, raising=False)
    assert chunked.chunk_for(t["u"], forward=True) > 0, "not chunked"
    first = scan._forward(*args, 2048)
    for what, a, b in zip(("out", "out_z", "last state", "x"), first, ref):
        err = (a.float() - b.float()).abs().max().item() / (b.abs().max().item() + 1e-12)
        assert err <= 1e-5, f"{what}: {err:.3g} from the one-pass kernel"
    for _ in range(20):
        again = scan._forward(*args, 2048)
        assert all(torch.equal(a, b) for a, b in zip(again, first)), "the one-launch forward is not deterministic"


# The backward: chunk lengths are forced (any multiple of the tile, 8 steps) so that tiny shapes still have
# several chunks, a partial last one, one chunk, or a sequence shorter than its chunk.
_GRADS = ("u", "delta", "A", "B", "C", "D", "delta_bias", "z")


def _bwd_inputs(batch: int, dim: int, L: int, N: int, bc: str, dtype: torch.dtype) -> Dict[str, torch.Tensor]:
    """_inputs, with B and C laid out as `bc` says ("grouped3": 2 groups of 3 channels, which 2-channel
    blocks straddle), and an upstream gradient."""
    t = _inputs(batch, dim, L, N, "variable", dtype)
    g = torch.Generator().manual_seed(L)
    groups = {"grouped": 2, "grouped3": dim // 3}
    if bc in groups:
        t["B"], t["C"] = (torch.randn(batch, groups[bc], N, L, generator=g).to(dtype) for _ in "BC")
    elif bc == "fixed":
        t["B"] = torch.randn(dim, N, generator=g)
    t["dout"] = torch.randn(batch, dim, L, generator=g).to(dtype)
    return t


def _check_backward(t: Dict[str, torch.Tensor], grads: tuple, dtype: torch.dtype, opts: Dict[str, bool],
                    close) -> None:
    """grads (du, ddelta, dA, dB, dC, dD, ddelta_bias, dz) against float64 autograd through the reference."""
    r = {k: v.detach().double().cpu().requires_grad_() for k, v in t.items()}
    out = selective_scan_ref(r["u"], r["delta"], r["A"], r["B"], r["C"], r["D"] if opts["D"] else None,
                             r["z"] if opts["z"] else None, r["delta_bias"] if opts["bias"] else None,
                             opts["softplus"])
    out.backward(r["dout"])
    present = {"D": opts["D"], "delta_bias": opts["bias"], "z": opts["z"]}
    for name, grad in zip(_GRADS, grads):
        if not present.get(name, True):
            assert grad is None, f"d{name}: expected None"
            continue
        close(grad.cpu(), r[name].grad, dtype, f"d{name}")


def _chunked_backward(monkeypatch: pytest.MonkeyPatch, t: Dict[str, torch.Tensor], chunk: int,
                      opts: Dict[str, bool]) -> tuple:
    """triton.selective_scan_backward with the chunk length forced; fails unless the chunked path ran. With z,
    the stand-ins' entry (selective_scan_backward_out_z), whose out_z is checked here against float64."""
    from jetson_mamba.ops.selective_scan import triton as scan

    monkeypatch.setattr(chunked, "chunk_for", lambda u: chunk)
    calls = []
    real = chunked.backward
    monkeypatch.setattr(chunked, "backward", lambda *a: calls.append(a[3]) or real(*a))  # a[3]: chunk
    args = (t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"] if opts["D"] else None,
            t["z"] if opts["z"] else None, t["delta_bias"] if opts["bias"] else None, opts["softplus"], t["dout"])
    if not opts["z"]:
        grads = scan.selective_scan_backward(*args)
    else:
        grads, out_z = scan.selective_scan_backward_out_z(*args)
        r = {k: v.double().cpu() for k, v in t.items()}
        ref = selective_scan_ref(r["u"], r["delta"], r["A"], r["B"], r["C"], r["D"] if opts["D"] else None, r["z"],
                                 r["delta_bias"] if opts["bias"] else None, opts["softplus"])
        _close(out_z.cpu(), ref, torch.float32 if t["u"].dtype == torch.float32 else torch.bfloat16, "out_z")
    assert calls == [chunk], "the chunked backward was not taken"
    return grads


ALL = dict(z=True, D=True, bias=True, softplus=True)


@needs_triton
@pytest.mark.parametrize("batch, dim, L, N, bc, dtype, chunk, opts", [
    (1, 4, 40, 4, "grouped", torch.float32, 16, ALL),  # 3 chunks, the last one partial
    (2, 6, 21, 3, "grouped3", torch.float32, 8, dict(z=False, D=False, bias=False, softplus=False)),
    (1, 4, 20, 4, "fixed", torch.float32, 32, ALL),  # shorter than one chunk
    (1, 4, 32, 4, "variable", torch.bfloat16, 32, dict(ALL, bias=False)),  # exactly one chunk
    (1, 4, 24, 2, "variable", torch.float16, 8, dict(ALL, z=False)),  # chunk = tile: 3 chunks
])
def test_chunked_backward_matches_float64(monkeypatch: pytest.MonkeyPatch, nan_poison: None, close, batch: int,
                                          dim: int, L: int, N: int, bc: str, dtype: torch.dtype, chunk: int,
                                          opts: Dict[str, bool]) -> None:
    t = {k: v.to(DEVICE) for k, v in _bwd_inputs(batch, dim, L, N, bc, dtype).items()}
    _check_backward(t, _chunked_backward(monkeypatch, t, chunk, opts), dtype, opts, close)


@needs_triton
@pytest.mark.parametrize("batch, dim, L, N, chunk", [
    (2, 6, 20, 3, 8),
    # above 64 channels the interpreter's forward passes take wide tiles (32 steps: chunks of 32), the
    # backward kernel the small ones that deterministic mode's partial sums are laid out for
    (1, 72, 64, 2, 32),
])
def test_chunked_backward_deterministic_matches_float64(monkeypatch: pytest.MonkeyPatch, nan_poison: None, close,
                                                        deterministic: None, atomics: List[int], batch: int,
                                                        dim: int, L: int, N: int, chunk: int) -> None:
    """Deterministic mode: per-(batch row, chunk) partial sums, no atomics, the same bits twice."""
    t = {k: v.to(DEVICE) for k, v in _bwd_inputs(batch, dim, L, N, "grouped3", torch.float32).items()}
    first = _chunked_backward(monkeypatch, t, chunk, ALL)
    second = _chunked_backward(monkeypatch, t, chunk, ALL)
    assert not atomics, f"{len(atomics)} atomic adds in deterministic mode"
    for name, a, b in zip(_GRADS, first, second):
        assert torch.equal(a, b), f"d{name} differs between two runs"
    _check_backward(t, first, torch.float32, ALL, close)


@needs_triton
def test_public_op_backward_matches_float64_chunked(monkeypatch: pytest.MonkeyPatch, close) -> None:
    """selective_scan_fn's autograd at batch 1 takes the chunked forward and backward where they are
    picked (JETSON_MAMBA_SCAN_CHUNKED=1 here: the interpreter has no SMs to count), with the Triton backend
    chosen here (not left to JETSON_MAMBA_BACKEND, so that the test runs alone too)."""
    from jetson_mamba.ops import selective_scan_fn
    from jetson_mamba.ops.backend import use_backend

    monkeypatch.setenv(chunked.ENV_VAR, "1")
    calls = []
    for name in ("forward", "backward"):
        real = getattr(chunked, name)
        monkeypatch.setattr(chunked, name, lambda *a, _f=real, _n=name: calls.append(_n) or _f(*a))
    t = {k: v.to(DEVICE) for k, v in _bwd_inputs(1, 2, 130, 4, "grouped", torch.float32).items()}
    leaves = {k: v.clone().requires_grad_() for k, v in t.items() if k != "dout"}
    with use_backend("triton"):
        out = selective_scan_fn(*(leaves[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")),
                                delta_softplus=True)
        out.backward(t["dout"])
    assert calls == ["forward", "backward"], calls
    _check_backward(t, tuple(leaves[k].grad for k in _GRADS), torch.float32, ALL, close)


@pytest.mark.gpu
@pytest.mark.parametrize("batch", [1, 8])
def test_yolo_scan_backward_on_the_gpu(monkeypatch: pytest.MonkeyPatch, batch: int) -> None:
    """Mamba-YOLO's scan (K=4 groups, K*D 512, L 6400): the chunked backward is picked at batch 1, not at
    batch 8, and gives the one-pass kernel's gradients (JETSON_MAMBA_SCAN_CHUNKED=0)."""
    from jetson_mamba.ops.selective_scan import triton as scan

    t = {k: v.cuda() for k, v in _bwd_inputs(batch, 512, 6400, 16, "grouped", torch.float32).items()}
    args = (t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["z"], t["delta_bias"], True, t["dout"])
    monkeypatch.delenv(chunked.ENV_VAR, raising=False)
    calls = []
    real = chunked.backward
    monkeypatch.setattr(chunked, "backward", lambda *a: calls.append(a[3]) or real(*a))  # a[3]: chunk
    grads = scan.selective_scan_backward(*args)
    assert bool(calls) == (batch == 1), calls
    monkeypatch.setenv(chunked.ENV_VAR, "0")
    for name, a, b in zip(_GRADS, grads, scan.selective_scan_backward(*args)):
        err = (a - b).abs().max().item() / (b.abs().max().item() + 1e-12)
        assert err <= 1e-4, f"d{name}: {err:.3g}"
