"""Triton causal conv1d against the float64 reference: forward, final states, all gradients, update.

Runs on CPU tensors under TRITON_INTERPRET=1 (through test_triton_interpreted.py, small shapes)
and directly on a GPU (the same cases, plus a real shape marked gpu).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import pytest
import torch
from test_triton_interpreted import DEVICE, GPU, Launch, assert_close, needs_triton
from upstream_sources import against_ref, varlen_seq_idx
from upstream_sources import causal_conv1d_ref as upstream_ref

from jetson_mamba.ops import causal_conv1d_fn, causal_conv1d_update
from jetson_mamba.ops.causal_conv1d.naive import causal_conv1d_ref, causal_conv1d_update_ref

pytestmark = needs_triton
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


def rnd(*shape: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype).to(DEVICE)


def make_x(batch: int, dim: int, L: int, channel_last: bool, dtype: torch.dtype) -> torch.Tensor:
    if channel_last:
        x = rnd(batch, L, dim, seed=1, dtype=dtype).transpose(1, 2)
        assert x.stride(1) == 1
        return x
    return rnd(batch, dim, L, seed=1, dtype=dtype)


def check(x: torch.Tensor, width: int, bias: bool, activation: Optional[str], states: bool,
          seq_idx: Optional[torch.Tensor] = None, rel: float = TOL[torch.float32]) -> None:
    """causal_conv1d_fn (Triton backend) vs the float64 reference: out, final states and gradients."""
    batch, dim, L = x.shape
    leaves: Dict[str, torch.Tensor] = {"x": x.detach().clone().requires_grad_(),
                                       "weight": rnd(dim, width, seed=2, dtype=x.dtype).requires_grad_()}
    if bias:
        leaves["bias"] = rnd(dim, seed=3, dtype=x.dtype).requires_grad_()
    if states:
        leaves["initial_states"] = rnd(batch, dim, width - 1, seed=4, dtype=x.dtype).requires_grad_()
    kw = {k: v for k, v in leaves.items() if k != "x"}
    res = causal_conv1d_fn(leaves["x"], **kw, seq_idx=seq_idx, return_final_states=states, activation=activation)
    ref_leaves = {k: v.detach().double().requires_grad_() for k, v in leaves.items()}
    ref = causal_conv1d_ref(ref_leaves["x"], **{k: v for k, v in ref_leaves.items() if k != "x"},
                            return_final_states=states, activation=activation, seq_idx=seq_idx)
    outs, refs = (list(res), list(ref)) if states else ([res], [ref])
    assert outs[0].stride() == x.stride() and outs[0].dtype == x.dtype
    for name, o, r in zip(("out", "final_states"), outs, refs):
        assert_close(o, r, rel, name)
    grads = [rnd(*o.shape, seed=10 + i) for i, o in enumerate(outs)]
    torch.autograd.backward(outs, [g.to(x.dtype) for g in grads])
    torch.autograd.backward(refs, [g.double() for g in grads])
    for name, leaf in leaves.items():
        assert leaf.grad is not None and leaf.grad.dtype == leaf.dtype, name
        assert_close(leaf.grad, ref_leaves[name].grad, rel * 4, f"d{name}")


# L=2 is shorter than the window of width 4: final states then reach into the initial states.
@pytest.mark.parametrize("width,L", [(2, 37), (3, 37), (4, 37), (4, 2)])
@pytest.mark.parametrize("channel_last", [False, True], ids=["channel-first", "channel-last"])
def test_matches_float64_reference(width: int, channel_last: bool, L: int, nan_poison: None) -> None:
    x = make_x(2, 5, L, channel_last, torch.float32)
    check(x, width, bias=True, activation="silu", states=True)


@pytest.mark.parametrize("activation", [None, "silu"])
def test_no_bias_no_states(activation: Optional[str], nan_poison: None) -> None:
    check(make_x(1, 3, 29, False, torch.float32), 4, bias=False, activation=activation, states=False)


@pytest.mark.parametrize("width", [2, 3, 4])
@pytest.mark.parametrize("states", [False, True], ids=["no-states", "states"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_channel_first_rows_kernels(width: int, states: bool, dtype: torch.dtype,
                                    launches: List[Launch], nan_poison: None) -> None:
    """The rows kernels (channel-first, unit time stride): several programs along L, a length that is
    not a multiple of 8, a channel count not a multiple of the tile; with states the forward keeps
    them and the backward takes the general kernel."""
    from jetson_mamba.ops.causal_conv1d import triton as conv

    check(make_x(2, 5, 45, False, dtype), width, bias=True, activation="silu", states=states, rel=TOL[dtype])
    assert [launch.kernel for launch in launches] == [conv._fwd_rows, conv._bwd["first"] if states else conv._bwd_rows]


def test_wide_channel_counts_take_the_interpreters_wide_rows_kernels(launches: List[Launch],
                                                                     nan_poison: None) -> None:
    """Above 64 channels the interpreter runs 1024 channels a program (triton_utils' launch plan): 1030
    channels are two programs, the second nearly all masked, and sequences of several tiles. On a GPU the
    tuned kernels run."""
    from jetson_mamba.ops import triton_utils as tu
    from jetson_mamba.ops.causal_conv1d import triton as conv

    check(make_x(1, 1030, 150, False, torch.float32), 3, bias=True, activation="silu", states=False)
    wide = [conv._fwd_rows_wide, conv._bwd_rows_wide] if tu.INTERPRET else [conv._fwd_rows, conv._bwd_rows]
    assert [launch.kernel for launch in launches] == wide


@pytest.mark.parametrize("width", [2, 3, 4])
@pytest.mark.parametrize("bias,activation", [(True, "silu"), (False, None)], ids=["bias-silu", "plain"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_channel_last_backward_walks_time(width: int, bias: bool, activation: Optional[str], dtype: torch.dtype,
                                          launches: List[Launch], nan_poison: None) -> None:
    """The channel-last backward without states or seq_idx (Mamba2's conv): several blocks of steps (the
    window of gradients reaches into the next block), a length that is not a multiple of the block and
    a channel count not a multiple of the tile."""
    from jetson_mamba.ops.causal_conv1d import triton as conv

    check(make_x(2, 6, 23, True, dtype), width, bias=bias, activation=activation, states=False, rel=TOL[dtype])
    assert [launch.kernel for launch in launches] == [conv._fwd["last"], conv._bwd_steps]


def test_channel_last_backward_reads_dout_with_its_own_strides(launches: List[Launch],
                                                              nan_poison: None) -> None:
    """The steps kernel takes any dout and dx with unit channel stride: a dout laid out (batch, L, dim) in
    other batch/time strides than x reaches it uncopied, with the numbers of a copy."""
    from jetson_mamba.ops.causal_conv1d import triton as conv

    x, w, b = make_x(2, 5, 19, True, torch.float32), rnd(5, 4, seed=2), rnd(5, seed=3)
    dout = rnd(19, 2, 5, seed=4).permute(1, 2, 0)  # strides (5, 1, 10): unit channel stride, not x's
    got = conv.causal_conv1d_backward(x, w, b, dout, None, None, None, True)
    assert launches[0].args[3] is dout, "dout was copied before the steps kernel"
    want = conv.causal_conv1d_backward(x, w, b, dout.contiguous().transpose(1, 2).contiguous().transpose(1, 2),
                                       None, None, None, True)
    for name, g, r in zip(("dx", "dweight", "dbias"), got, want):
        assert torch.equal(g, r), name


def test_launches_skip_the_autotuner_once_tuned_until_its_configs_change() -> None:
    """launch_tuned: the first call for a key goes through the autotuner, later ones run the JIT function
    with the remembered config (same numbers); new configs (pin_autotuned_kernels, a benchmark forcing
    one) send the next call through the autotuner again."""
    from jetson_mamba.ops.causal_conv1d import triton as conv

    tuner = conv._fwd_rows
    calls = {"autotuner": 0, "kernel": []}
    tuner_run, kernel_run = tuner.run, tuner.fn.run

    def count_tuner(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["autotuner"] += 1
        return tuner_run(*args, **kwargs)

    def count_kernel(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["kernel"].append((kwargs["BD"], kwargs["R"], kwargs["num_warps"]))
        return kernel_run(*args, **kwargs)

    x, w = make_x(1, 7, 19, False, torch.float32), torch.randn(7, 4, device=DEVICE)  # a key no other test uses
    saved = tuner.configs
    tuner.run, tuner.fn.run = count_tuner, count_kernel
    try:
        first = conv.causal_conv1d_forward(x, w, None, None, None, False, True)[0]
        second = conv.causal_conv1d_forward(x, w, None, None, None, False, True)[0]
        assert calls["autotuner"] == 1 and len(calls["kernel"]) == 2
        assert calls["kernel"][0] == calls["kernel"][1], "the remembered config is not the tuned one"
        assert torch.equal(first, second)
        tuner.configs = list(saved)  # what pin_autotuned_kernels does
        conv.causal_conv1d_forward(x, w, None, None, None, False, True)
        assert calls["autotuner"] == 2 and len(calls["kernel"]) == 3
    finally:
        tuner.configs = saved
        del tuner.run, tuner.fn.run


def test_conv_autotuners_key_on_the_length_class(monkeypatch: pytest.MonkeyPatch) -> None:
    """What each conv autotuner keys on (dim, L_class, W) is the same for lengths of one power-of-two
    class, so they tune once for all of them; the kernels still get the true length."""
    from jetson_mamba.ops.causal_conv1d import triton as conv

    seen = []
    for tuner in (conv._fwd_rows, conv._bwd_rows, conv._fwd["last"], conv._bwd_steps):
        assert tuner.keys == ["dim", "L_class", "W"]
        original = tuner.fn.run

        def spy(*args, tuner=tuner, original=original, **kwargs):  # type: ignore[no-untyped-def]
            named = dict(zip(tuner.fn.arg_names, args), **kwargs)
            seen.append((tuner.fn.__name__, named["L"], [named[k] for k in tuner.keys]))
            return original(*args, **kwargs)

        monkeypatch.setattr(tuner.fn, "run", spy)
    w = torch.randn(3, 4, device=DEVICE)
    for L in (19, 30):
        for channel_last in (False, True):
            x = make_x(1, 3, L, channel_last, torch.float32)
            conv.causal_conv1d_forward(x, w, None, None, None, False, True)
            conv.causal_conv1d_backward(x, w, None, torch.ones_like(x), None, None, None, True)
    assert len(seen) == 8 and {length for _, length, _ in seen} == {19, 30}
    for name in {n for n, _, _ in seen}:
        assert len({tuple(key) for n, _, key in seen if n == name}) == 1, name
    assert all(key == [3, 32, 4] for _, _, key in seen)


def test_stand_in_writes_into_the_callers_buffers(monkeypatch: pytest.MonkeyPatch, nan_poison: None) -> None:
    """mamba_inner_fn's calls: out and dx are views into larger tensors (NaN-filled here); the Triton
    backend writes them in place, with no copy after; a buffer that is the input itself still works."""
    from jetson_mamba.ops import use_backend
    from jetson_mamba.ops.causal_conv1d import triton as conv
    from jetson_mamba.ops.standins import causal_conv1d_cuda as standin

    given = []
    for name in ("causal_conv1d_forward", "causal_conv1d_backward", "causal_conv1d_update"):
        original = getattr(conv, name)

        def spy(*args, original=original, name=name, **kwargs):  # type: ignore[no-untyped-def]
            given.append((name, sorted(kwargs)))
            return original(*args, **kwargs)

        monkeypatch.setattr(conv, name, spy)
    x, w, b = make_x(2, 3, 21, False, torch.float32), rnd(3, 4, seed=2), rnd(3, seed=3)
    xw = x.detach().double().requires_grad_()
    wd, bd = w.double().requires_grad_(), b.double().requires_grad_()
    ref = causal_conv1d_ref(xw, wd, bd, activation="silu")
    dout = rnd(2, 3, 21, seed=5)
    ref.backward(dout.double())
    pair = torch.full((2, 6, 21), float("nan"), device=DEVICE)
    out = pair.chunk(2, dim=1)[0]
    dx = pair.chunk(2, dim=1)[1]
    state = torch.zeros(2, 3, 3, device=DEVICE)
    step_out = torch.full((2, 3), float("nan"), device=DEVICE)
    dweight, dbias = torch.zeros(3, 4, device=DEVICE), torch.zeros(3, device=DEVICE)
    buffers = {t.untyped_storage().data_ptr() for t in (pair, step_out, dweight, dbias)}
    copy = torch.Tensor.copy_

    def no_copy_into_buffers(dst, src, *args, **kwargs):  # type: ignore[no-untyped-def]
        assert dst.untyped_storage().data_ptr() not in buffers, "a result was copied over a caller's buffer"
        return copy(dst, src, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "copy_", no_copy_into_buffers)
    with use_backend("triton"):
        standin.causal_conv1d_fwd(x, w, b, None, None, out, None, True)
        # causal-conv1d hands over zeroed fp32 buffers for the weight and bias gradients
        standin.causal_conv1d_bwd(x, w, b, dout, None, None, None, dx, dweight, dbias, None, True)
        standin.causal_conv1d_update(x[:, :, 0], state, w, b, step_out, True, None, None)
    assert [g for g in given] == [("causal_conv1d_forward", ["out"]),
                                  ("causal_conv1d_backward", ["dbias", "dweight", "dx"]),
                                  ("causal_conv1d_update", ["out"])]
    assert_close(dweight, wd.grad, TOL[torch.float32] * 4, "dweight in the caller's buffer")
    assert_close(dbias, bd.grad, TOL[torch.float32] * 4, "dbias in the caller's buffer")
    assert_close(out, ref, TOL[torch.float32], "out in the caller's view")
    assert_close(dx, xw.grad, TOL[torch.float32] * 4, "dx in the caller's view")
    assert_close(step_out, ref[:, :, 0], TOL[torch.float32], "update's out")
    monkeypatch.undo()
    inplace = x.clone()
    with use_backend("triton"):
        standin.causal_conv1d_fwd(inplace, w, b, None, None, inplace, None, True)  # out is x: computed aside
    assert_close(inplace, ref, TOL[torch.float32], "in-place out")


def wide_channel_last(batch: int, dim: int, L: int, seed: int) -> torch.Tensor:
    """(batch, dim, L) with unit channel stride, a slice of a wider tensor, as upstream's tests make x:
    empty_like gives it dense strides, unlike its own."""
    return rnd(batch, L, dim + 4, seed=seed)[:, :, 2:2 + dim].transpose(1, 2)


@pytest.mark.parametrize("case", ["initial+final", "final", "initial", "seq_idx", "initial+seq_idx"])
def test_stand_in_backward_as_upstream_calls_it(case: str, nan_poison: None) -> None:
    """causal-conv1d's Python backward: channel-last x sliced from a wider tensor, dx = empty_like(x) (dense,
    so not x's strides), channel-last dout, dfinal_states, dinitial_states (batch, width-1, dim)^T, seq_idx.
    The general kernel wrote dx with x's strides: columns never written and stores past dx's end."""
    from jetson_mamba.ops import use_backend
    from jetson_mamba.ops.causal_conv1d import torch as ref
    from jetson_mamba.ops.standins import causal_conv1d_cuda as standin

    batch, dim, L, W = 2, 5, 13, 4
    x, dout = wide_channel_last(batch, dim, L, 1), wide_channel_last(batch, dim, L, 5)
    w, b = rnd(dim, W, seed=2), rnd(dim, seed=3)
    init = rnd(batch, W - 1, dim, seed=4).transpose(1, 2) if "initial" in case else None
    dfinal = rnd(batch, W - 1, dim, seed=6).transpose(1, 2) if "final" in case else None
    seq_idx = (torch.arange(L, device=DEVICE) // 5).int().expand(batch, L).contiguous() if "seq_idx" in case else None
    dx, dw, db = torch.empty_like(x), torch.zeros(dim, W, device=DEVICE), torch.zeros(dim, device=DEVICE)
    assert dx.stride() != x.stride()
    dinit = torch.empty(batch, W - 1, dim, device=DEVICE).transpose(1, 2) if init is not None else None
    with use_backend("triton"):
        standin.causal_conv1d_bwd(x, w, b, dout, seq_idx, init, dfinal, dx, dw, db, dinit, True)
    init64, dfinal64 = (t.double() if t is not None else None for t in (init, dfinal))
    want = ref.causal_conv1d_backward(x.double(), w.double(), b.double(), dout.double(), seq_idx, init64, dfinal64,
                                      True)
    for name, got, exp in zip(("dx", "dweight", "dbias", "dinitial_states"), (dx, dw, db, dinit), want):
        if exp is not None:
            assert_close(got, exp, TOL[torch.float32] * 4, name)


def backward_case(path: str) -> tuple:
    """(x, weight, bias, dout, initial_states, dfinal_states) that take the rows, steps or general kernel."""
    if path == "general":
        x, dout = wide_channel_last(2, 5, 21, 1), wide_channel_last(2, 5, 21, 5)
        return x, rnd(5, 4, seed=2), rnd(5, seed=3), dout, rnd(2, 3, 5, seed=4).transpose(1, 2), None
    x = make_x(2, 5, 45, path == "steps", torch.float32)
    return x, rnd(5, 4, seed=2), rnd(5, seed=3), rnd(*x.shape, seed=5), None, None


def conv_backward(path: str) -> tuple:
    from jetson_mamba.ops.causal_conv1d import triton as conv

    x, w, b, dout, init, dfinal = backward_case(path)
    return conv.causal_conv1d_backward(x, w, b, dout, None, init, dfinal, True)


@pytest.mark.parametrize("path", ["rows", "steps", "general"])
def test_deterministic_mode_sums_weight_gradients_without_atomics(path: str, launches: List[Launch],
                                                                  atomics: List[int], nan_poison: None) -> None:
    """With torch.use_deterministic_algorithms(True) each program stores its weight/bias sums into its own
    slot and the host adds them in a fixed order: no atomics, the deterministic kernel, the same numbers."""
    from jetson_mamba.ops.causal_conv1d import triton as conv

    default = conv_backward(path)
    assert atomics, "the default backward adds its weight gradients with atomics"
    atomics.clear()
    old = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        det = conv_backward(path)
    finally:
        torch.use_deterministic_algorithms(old)
    assert not atomics, f"{len(atomics)} atomics in deterministic mode"
    tuners = {"rows": (conv._bwd_rows, conv._bwd_rows_det[0]), "steps": (conv._bwd_steps, conv._bwd_steps_det[0]),
              "general": (conv._bwd["last"], conv._bwd_det["last"][0])}[path]
    assert [launch.kernel for launch in launches] == list(tuners)
    for name, a, b in zip(("dx", "dweight", "dbias", "dinitial_states"), det, default):
        if b is not None:
            assert_close(a, b, 1e-6, name)


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="reproducibility of GPU atomics needs a GPU")
@pytest.mark.parametrize("path", ["rows", "steps", "general"])
def test_deterministic_mode_is_bitwise_reproducible_on_gpu(path: str, deterministic: None) -> None:
    """Upstream's _conv1d_bwd_once shape (4 x 1024 x 2048, bf16, width 4), 20 backwards: bitwise equal."""
    from jetson_mamba.ops.causal_conv1d import triton as conv

    gen = torch.Generator(device="cuda").manual_seed(0)
    shape = (4, 2048, 1024) if path != "rows" else (4, 1024, 2048)
    x = torch.randn(*shape, device="cuda", dtype=torch.bfloat16, generator=gen)
    x = x.transpose(1, 2) if path != "rows" else x
    dout = torch.randn(x.shape, device="cuda", dtype=torch.bfloat16, generator=gen)
    w = torch.randn(1024, 4, device="cuda", generator=gen)
    b = torch.randn(1024, device="cuda", generator=gen)
    init = torch.randn(4, 3, 1024, device="cuda", dtype=torch.bfloat16, generator=gen).transpose(1, 2)
    init = init if path == "general" else None
    first = conv.causal_conv1d_backward(x, w, b, dout, None, init, None, True)
    for _ in range(19):
        again = conv.causal_conv1d_backward(x, w, b, dout, None, init, None, True)
        for name, a, c in zip(("dx", "dweight", "dbias", "dinitial_states"), again, first):
            assert c is None or torch.equal(a, c), f"{name} differs between runs"


@pytest.mark.parametrize("channel_last", [False, True], ids=["rows kernels", "general kernels"])
def test_a_buffer_unlike_x_is_refused(channel_last: bool) -> None:
    from jetson_mamba.ops.causal_conv1d import triton as conv

    x, w = make_x(1, 3, 9, channel_last, torch.float32), rnd(3, 4, seed=2)
    wrong = torch.empty(1, 3, 8, device=DEVICE)
    with pytest.raises(ValueError, match="out must be like x"):
        conv.causal_conv1d_forward(x, w, None, None, None, False, True, out=wrong)
    with pytest.raises(ValueError, match="dx must be like x"):
        conv.causal_conv1d_backward(x, w, None, torch.ones_like(x), None, None, None, True, dx=wrong)


@pytest.mark.parametrize("channel_last", [False, True], ids=["rows kernels", "general kernels"])
def test_backward_adds_into_the_callers_fp32_weight_and_bias_buffers(channel_last: bool,
                                                                     launches: List[Launch]) -> None:
    """As the compiled kernel with causal-conv1d's zeroed fp32 buffers: the kernel itself adds into them
    (they are its arguments, no copy or cast after), so what was there stays, tuning runs included."""
    from jetson_mamba.ops.causal_conv1d import triton as conv

    x, w, b = make_x(2, 5, 29, channel_last, torch.bfloat16), rnd(5, 4, seed=2), rnd(5, seed=3)
    w, b, dout = w.to(torch.bfloat16), b.to(torch.bfloat16), rnd(2, 5, 29, seed=4).to(torch.bfloat16)
    _, want_w, want_b, _ = conv.causal_conv1d_backward(x, w, b, dout, None, None, None, True)
    assert want_w.dtype == want_b.dtype == torch.bfloat16  # no buffers: new ones, in weight's dtype
    dweight, dbias = torch.full((5, 4), 0.5, device=DEVICE), torch.full((5,), -0.25, device=DEVICE)
    launches.clear()
    _, got_w, got_b, _ = conv.causal_conv1d_backward(x, w, b, dout, None, None, None, True,
                                                     dweight=dweight, dbias=dbias)
    assert got_w is dweight and got_b is dbias
    assert any(a is dweight for a in launches[0].args) and any(a is dbias for a in launches[0].args)
    assert_close(dweight - 0.5, want_w.float(), TOL[torch.bfloat16], "dweight added into")
    assert_close(dbias + 0.25, want_b.float(), TOL[torch.bfloat16], "dbias added into")


def test_weight_and_bias_buffers_that_do_not_fit_are_refused() -> None:
    from jetson_mamba.ops.causal_conv1d import triton as conv

    x, w, b = make_x(1, 3, 9, False, torch.float32), rnd(3, 4, seed=2), rnd(3, seed=3)
    dout = torch.ones_like(x)

    def bwd(bias: Optional[torch.Tensor], **buffers: torch.Tensor) -> None:
        conv.causal_conv1d_backward(x, w, bias, dout, None, None, None, True, **buffers)

    zw, zb = torch.zeros(3, 4, device=DEVICE), torch.zeros(3, device=DEVICE)
    with pytest.raises(ValueError, match="dweight must be a contiguous float32 buffer of shape \\(3, 4\\)"):
        bwd(b, dweight=zw.to(torch.float16), dbias=zb)
    with pytest.raises(ValueError, match="got \\(4, 3\\) torch.float32 .*, not contiguous"):
        bwd(b, dweight=torch.zeros(3, 4, device=DEVICE).t(), dbias=zb)
    with pytest.raises(ValueError, match="dbias must be a contiguous float32 buffer of shape \\(3,\\)"):
        bwd(b, dweight=zw, dbias=torch.zeros(4, device=DEVICE))
    with pytest.raises(ValueError, match="without a dbias buffer, but there is a bias"):
        bwd(b, dweight=zw)
    with pytest.raises(ValueError, match="a dbias buffer was given, but there is no bias"):
        bwd(None, dweight=zw, dbias=zb)
    with pytest.raises(ValueError, match="a dbias buffer needs a dweight buffer too"):
        bwd(b, dbias=zb)
    assert not zw.any() and not zb.any(), "a refused call wrote into a buffer"


def test_rows_backward_reads_a_transposed_dout(launches: List[Launch], nan_poison: None) -> None:
    """mamba_inner_fn's conv backward: x is a view into xz and dout a transposed matmul result, so their
    strides differ. The rows kernel reads that dout as it is (no copy to x's strides: a pass over
    batch x dim x L) and gives the numbers of a contiguous dout."""
    from jetson_mamba.ops.causal_conv1d import triton as conv

    xz = rnd(2, 10, 23, seed=1)
    x, w, b = xz.chunk(2, dim=1)[0], rnd(5, 4, seed=2), rnd(5, seed=3)
    dout = rnd(5, 2 * 23, seed=4).view(5, 2, 23).permute(1, 0, 2)  # strides (23, 46, 1)
    got = conv.causal_conv1d_backward(x, w, b, dout, None, None, None, True)
    assert launches[0].args[3] is dout, "dout was copied before the rows kernel"
    want = conv.causal_conv1d_backward(x, w, b, dout.contiguous(), None, None, None, True)
    for name, g, r in zip(("dx", "dweight", "dbias"), got, want):
        assert torch.equal(g, r), name


def test_buffer_overlap_is_judged_by_memory_spans() -> None:
    from jetson_mamba.ops.causal_conv1d import triton as conv
    from jetson_mamba.ops.standins._buffers import _overlap, buffers

    pair = torch.zeros(2, 6, 5)
    # a buffer given as None, or an absent input (None), is no tensor to write into or to overlap
    other = torch.zeros(6, 5)
    given = buffers(conv, (pair, None), out=None, dx=other)
    assert list(given) == ["dx"] and given["dx"] is other
    assert buffers(conv, (pair,), dx=pair[1]) == {}
    first, second = pair.chunk(2, dim=1)
    assert _overlap(pair, first) and _overlap(first, first) and not _overlap(torch.zeros(3), torch.zeros(3))
    # interleaved views span each other's memory: judged overlapping (conservative)
    assert _overlap(first, second) and not _overlap(pair[0], pair[1]) and _overlap(pair[:, :, 1:], pair)


@pytest.mark.parametrize("L", [1, 8, 17])
def test_channel_first_rows_edges(L: int, nan_poison: None) -> None:
    """Rows kernels at one step, exactly one row, and one step past two rows."""
    check(make_x(2, 3, L, False, torch.float32), 4, bias=True, activation="silu", states=False)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype: torch.dtype, nan_poison: None) -> None:
    check(make_x(2, 4, 21, True, dtype), 4, bias=True, activation="silu", states=True, rel=TOL[dtype])


@pytest.mark.parametrize("channel_last", [False, True], ids=["channel-first", "channel-last"])
def test_seq_idx_separates_packed_sequences(channel_last: bool, nan_poison: None) -> None:
    seq_idx = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 3, 3], [0] * 13], dtype=torch.int32).to(DEVICE)
    check(make_x(2, 4, 13, channel_last, torch.float32), 4, bias=True, activation="silu", states=False,
          seq_idx=seq_idx)


@pytest.mark.parametrize("width,L", [(2, 9), (4, 9), (4, 2)])
@pytest.mark.parametrize("channel_last", [False, True], ids=["channel-first", "channel-last"])
@pytest.mark.parametrize("pattern", ["upstream", "padding"])
def test_seq_idx_with_initial_states_matches_upstream_reference(width: int, L: int, channel_last: bool, pattern: str,
                                                                shared: Path, nan_poison: None) -> None:
    """causal-conv1d 1.7.0: the initial states belong to the first position's sequence; out and the gradients
    of x, weight, bias and initial_states (the general kernels) against upstream's causal_conv1d_ref, float64."""
    ref = upstream_ref(shared / "sdists" / "causal_conv1d-1.7.0.tar.gz")
    batch, dim = 2, 5
    x = make_x(batch, dim, L, channel_last, torch.float32)
    init = rnd(batch, width - 1, dim, seed=4).transpose(1, 2) if channel_last else rnd(batch, dim, width - 1, seed=4)
    seq_idx = varlen_seq_idx(width, L, DEVICE)[pattern]
    pairs = against_ref(causal_conv1d_fn, ref, x, rnd(dim, width, seed=2), rnd(dim, seed=3), init, seq_idx, "silu",
                        rnd(batch, dim, L, seed=5))
    for name, (got, want) in pairs.items():
        assert_close(got, want, TOL[torch.float32] * 4, name)


def test_padding_tokens_give_zero(nan_poison: None) -> None:
    """seq_idx < 0 marks padding: the CUDA kernel writes 0 there; the other tokens are unaffected."""
    seq_idx = torch.tensor([[0, 0, 0, 1, 1, -1, -1]], dtype=torch.int32).to(DEVICE)
    x, weight, bias = make_x(1, 3, 7, True, torch.float32), rnd(3, 4, seed=2), rnd(3, seed=3)
    out = causal_conv1d_fn(x, weight, bias, seq_idx=seq_idx, activation="silu")
    ref = causal_conv1d_ref(x.double(), weight.double(), bias.double(), activation="silu", seq_idx=seq_idx)
    assert torch.equal(out[..., 5:], torch.zeros_like(out[..., 5:]))
    assert_close(out[..., :5], ref[..., :5], 1e-5, "out before the padding")


@pytest.mark.parametrize("width", [2, 4])
@pytest.mark.parametrize("seqlen", [None, 3])  # None: x is (batch, dim), one decoding step
@pytest.mark.parametrize("ring", [False, True], ids=["shift", "circular"])
def test_update_matches_reference(width: int, seqlen: Optional[int], ring: bool, nan_poison: None) -> None:
    batch, dim, state_len = 3, 5, 6
    x = rnd(batch, dim, *([seqlen] if seqlen else []), seed=1)
    state = rnd(batch, dim, state_len, seed=2)
    weight, bias = rnd(dim, width, seed=3), rnd(dim, seed=4)
    cache = torch.tensor([0, 4, 9], dtype=torch.int32).to(DEVICE) if ring else None
    ref_state = state.clone()
    out = causal_conv1d_update(x, state, weight, bias, "silu", cache_seqlens=cache)
    ref = causal_conv1d_update_ref(x, ref_state, weight, bias, "silu", cache_seqlens=cache)
    assert_close(out, ref, 1e-5, "out")
    assert torch.equal(state, ref_state)


def test_update_with_state_indices_and_padding_slots(nan_poison: None) -> None:
    x = rnd(3, 4, seed=1)
    states = rnd(5, 4, 3, seed=2)
    weight = rnd(4, 4, seed=3)
    idx = torch.tensor([3, -1, 0], dtype=torch.int32).to(DEVICE)
    ref_states = states.clone()
    out = causal_conv1d_update(x, states, weight, None, None, conv_state_indices=idx)
    ref = causal_conv1d_update_ref(x, ref_states, weight, None, None, conv_state_indices=idx)
    assert_close(out, ref, 1e-5, "out")
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    assert torch.equal(states, ref_states)


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="real shapes need a GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channel_last", [False, True], ids=["channel-first", "channel-last"])
def test_real_shape_on_gpu(dtype: torch.dtype, channel_last: bool) -> None:
    check(make_x(2, 512, 2048, channel_last, dtype), 4, bias=True, activation="silu", states=True,
          rel=TOL[dtype] * (5 if dtype == torch.float32 else 1))
