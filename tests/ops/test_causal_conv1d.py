"""The portable causal conv1d and the public causal_conv1d_fn / causal_conv1d_update against
the float64 reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, List, Optional

import pytest
import torch
from upstream_sources import against_ref, varlen_seq_idx
from upstream_sources import causal_conv1d_ref as upstream_ref

from jetson_mamba.ops import causal_conv1d_fn, causal_conv1d_update
from jetson_mamba.ops.causal_conv1d.naive import causal_conv1d_ref, causal_conv1d_update_ref

pytestmark = pytest.mark.usefixtures("clean_dispatch", "nan_empty")


def rnd(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def leaves(*tensors: Optional[torch.Tensor]) -> List[Optional[torch.Tensor]]:
    return [None if t is None else t.detach().clone().requires_grad_(True) for t in tensors]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("width", [2, 3, 4])
@pytest.mark.parametrize("layout", ["channel_first", "channel_last"])
@pytest.mark.parametrize("variant", ["plain", "states", "seq_idx", "short"])
def test_conv_matches_reference(dtype: torch.dtype, width: int, layout: str, variant: str,
                                close: Callable[..., None]) -> None:
    batch, dim, L = 2, 12, (2 if variant == "short" else 19)
    x = rnd(batch, dim, L, dtype=dtype)
    if layout == "channel_last":
        x = x.transpose(1, 2).contiguous().transpose(1, 2)
        assert x.stride(1) == 1
    wdt = torch.float64 if dtype == torch.float64 else torch.float32
    weight, bias = rnd(dim, width, dtype=wdt, seed=1), rnd(dim, dtype=wdt, seed=2)
    init = rnd(batch, dim, width - 1, dtype=dtype, seed=3) if variant in ("states", "short") else None
    seq_idx = None
    if variant == "seq_idx":
        seq_idx = torch.tensor([[0] * 5 + [1] * 9 + [2] * 5, [0] * L], dtype=torch.int32)
    final = variant in ("states", "short")
    dout = rnd(batch, dim, L, dtype=dtype, seed=4)
    dfinal = rnd(batch, dim, width - 1, dtype=dtype, seed=5)

    ref_in = leaves(*(None if t is None else t.double() for t in (x, weight, bias, init)))
    ref = causal_conv1d_ref(*ref_in, return_final_states=final, activation="silu", seq_idx=seq_idx)
    ref_out = ref[0] if final else ref
    loss = (ref_out * dout.double()).sum() + ((ref[1] * dfinal.double()).sum() if final else 0)
    loss.backward()

    ours_in = leaves(x, weight, bias, init)
    got = causal_conv1d_fn(ours_in[0], ours_in[1], ours_in[2], seq_idx=seq_idx, initial_states=ours_in[3],
                           return_final_states=final, activation="silu")
    out = got[0] if final else got
    assert out.dtype == dtype and out.stride() == x.stride(), "out keeps x's dtype and layout"
    close(out, ref_out, dtype, "out")
    loss = (out * dout).sum() + ((got[1] * dfinal).sum() if final else 0)
    if final:
        close(got[1], ref[1], dtype, "final_states")
    loss.backward()
    for name, a, r in zip(("dx", "dweight", "dbias", "dinitial_states"), ours_in, ref_in):
        close(None if a is None else a.grad, None if r is None else r.grad, dtype, name)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("width,L", [(2, 11), (3, 11), (4, 11), (4, 2)])
@pytest.mark.parametrize("layout", ["channel_first", "channel_last"])
@pytest.mark.parametrize("pattern", ["upstream", "padding"])
def test_seq_idx_with_initial_states_matches_upstream_reference(
        dtype: torch.dtype, width: int, L: int, layout: str, pattern: str, shared: Path,
        close: Callable[..., None]) -> None:
    """causal-conv1d 1.7.0: with seq_idx, the initial states belong to the first position's sequence
    (they were masked out as if they belonged to none, and causal_conv1d_fn refused the combination).
    Compared with upstream's own causal_conv1d_ref from the 1.7.0 sdist, in float64."""
    ref = upstream_ref(shared / "sdists" / "causal_conv1d-1.7.0.tar.gz")
    batch, dim = 2, 6
    x = rnd(batch, dim, L, dtype=dtype)
    init = rnd(batch, dim, width - 1, dtype=dtype, seed=3)
    if layout == "channel_last":
        x = x.transpose(1, 2).contiguous().transpose(1, 2)
        init = init.transpose(1, 2).contiguous().transpose(1, 2)
    wdt = torch.float64 if dtype == torch.float64 else torch.float32
    weight, bias = rnd(dim, width, dtype=wdt, seed=1), rnd(dim, dtype=wdt, seed=2)
    seq_idx = varlen_seq_idx(width, L)[pattern]
    pairs = against_ref(causal_conv1d_fn, ref, x, weight, bias, init, seq_idx, "silu", rnd(batch, dim, L, seed=4))
    for name, (got, want) in pairs.items():
        close(got, want, dtype, name)


@pytest.mark.parametrize("width", [2, 3, 4])
def test_naive_reference_agrees_with_upstreams_on_seq_idx(width: int, shared: Path) -> None:
    """Our float64 reference (the one the other suites compare with) against upstream 1.7.0's, with and
    without initial states, including padding tokens."""
    ref = upstream_ref(shared / "sdists" / "causal_conv1d-1.7.0.tar.gz")
    x, weight, bias = rnd(2, 5, 9), rnd(5, width, seed=1), rnd(5, seed=2)
    for seq_idx in varlen_seq_idx(width, 9).values():
        for init in (None, rnd(2, 5, width - 1, seed=3)):
            args = (x.double(), weight.double(), bias.double(), None if init is None else init.double())
            kw = dict(activation="silu", seq_idx=seq_idx)
            assert torch.allclose(causal_conv1d_ref(*args, **kw), ref(*args, **kw), rtol=0, atol=1e-12)


def test_final_states_out_is_written_in_place(close: Callable[..., None]) -> None:
    x, weight = rnd(2, 8, 10), rnd(8, 4, seed=1)
    buf = torch.full((2, 3, 8), float("nan")).transpose(1, 2)
    out, final = causal_conv1d_fn(x, weight, return_final_states=True, final_states_out=buf)
    assert final.data_ptr() == buf.data_ptr()
    close(buf, x[:, :, -3:], torch.float32, "final_states_out")


def test_no_activation_and_bad_activation(close: Callable[..., None]) -> None:
    x, weight = rnd(1, 4, 7), rnd(4, 3, seed=1)
    close(causal_conv1d_fn(x, weight), causal_conv1d_ref(x.double(), weight.double()), torch.float32)
    with pytest.raises(NotImplementedError, match="silu"):
        causal_conv1d_fn(x, weight, activation="relu")
    with pytest.raises(ValueError, match="seq_idx"):
        causal_conv1d_fn(x, weight, seq_idx=torch.zeros(1, 7, dtype=torch.int32), return_final_states=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("circular", [False, True])
@pytest.mark.parametrize("indexed", [False, True])
@pytest.mark.parametrize("L", [0, 1, 3])
def test_update_matches_reference(dtype: torch.dtype, circular: bool, indexed: bool, L: int,
                                  close: Callable[..., None]) -> None:
    """Decode: 2-D x (L=0 here) or (batch, dim, L); circular buffer; conv_state_indices with a padding slot."""
    batch, dim, width, state_len = 3, 6, 4, 5
    x = rnd(batch, dim, L, dtype=dtype) if L else rnd(batch, dim, dtype=dtype)
    weight, bias = rnd(dim, width, seed=1), rnd(dim, seed=2)
    rows = 5 if indexed else batch
    state = rnd(rows, dim, state_len, dtype=dtype, seed=3)
    idx = torch.tensor([4, -1, 1], dtype=torch.int32) if indexed else None
    seqlens = torch.tensor([2, 7, 4], dtype=torch.int32) if circular else None
    ref_state = state.clone()
    ref = causal_conv1d_update_ref(x, ref_state, weight, bias, "silu", seqlens, idx)
    got = causal_conv1d_update(x, state, weight, bias, activation="silu", cache_seqlens=seqlens,
                               conv_state_indices=idx)
    assert got.shape == x.shape and got.dtype == dtype
    close(got, ref, dtype, "out")
    assert torch.equal(state, ref_state), "conv_state updated like the reference"
    if indexed:
        assert torch.equal(got[1], torch.zeros_like(got[1])), "padding slot gives zeros"


def boolean_mask_indexing(fn: Callable[..., Any], *args: Any) -> list:
    """The index ops of `fn`'s traced graph that take a boolean mask (each a nonzero(): a host sync)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    graph = make_fx(fn, tracing_mode="fake")(*args)
    return [str(node.target) for node in graph.graph.nodes if node.op == "call_function"
            and "index" in str(node.target)
            and any(i is not None and i.meta["val"].dtype == torch.bool for i in node.args[1])]


@pytest.mark.parametrize("idx", [[4, -1, 1], [-1, -1, -1]])
def test_decode_updates_index_without_boolean_masks(idx: list) -> None:
    """mamba-ssm's generate(cg=True) captures the decode step in a CUDA graph, which refuses host syncs:
    the conv update's boolean-mask indexing (a nonzero() inside) failed that capture on the lab GPU. The
    traced graphs of both decode updates must index with integer tensors only, and padded slots (index
    < 0) must write nothing."""
    from jetson_mamba.ops.causal_conv1d import torch as backend
    from jetson_mamba.ops.ssd.state_update import selective_state_update

    x, weight, bias = rnd(3, 6, 1), rnd(6, 4, seed=1), rnd(6, seed=2)
    state = rnd(5, 6, 5, seed=3)
    rows = torch.tensor(idx, dtype=torch.int32)
    assert boolean_mask_indexing(backend.causal_conv1d_update, x, state, weight, bias, True, None, rows) == []
    ref_state = state.clone()
    ref = causal_conv1d_update_ref(x, ref_state, weight, bias, "silu", None, rows)
    got = backend.causal_conv1d_update(x, state, weight, bias, True, None, rows)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    assert torch.equal(state, ref_state), "padding slots write nothing, valid ones their new state"
    ssm = rnd(5, 6, 4, seed=4)
    before = ssm.clone()
    args = (ssm, rnd(3, 6, seed=5), rnd(3, 6, seed=6), -rnd(6, 4, seed=7).abs(), rnd(3, 4, seed=8), rnd(3, 4, seed=9))
    assert boolean_mask_indexing(lambda *a: selective_state_update(*a[:-1], state_batch_indices=a[-1]), *args, rows) == []
    selective_state_update(*args, state_batch_indices=rows)
    untouched = [r for r in range(5) if r not in idx]
    assert torch.equal(ssm[untouched], before[untouched])
    assert all(not torch.equal(ssm[r], before[r]) for r in idx if r >= 0)


def test_update_reference_agrees_with_full_conv() -> None:
    """Feeding tokens one by one through update equals the full causal conv (the two references agree)."""
    x, weight, bias = rnd(2, 4, 9, dtype=torch.float64), rnd(4, 3, dtype=torch.float64, seed=1), None
    state = torch.zeros(2, 4, 2, dtype=torch.float64)
    steps = [causal_conv1d_update(x[:, :, t], state, weight, bias, "silu") for t in range(9)]
    full = causal_conv1d_ref(x, weight, bias, activation="silu")
    assert torch.allclose(torch.stack(steps, -1), full)
