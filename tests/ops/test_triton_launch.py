"""triton_utils.launch: compiled kernels launched through their launcher once known, never a wrong variant.

The key test runs anywhere (CPU tensors have addresses too); the launches need a GPU.
"""

from __future__ import annotations

from typing import Any, List

import pytest
import torch

triton = pytest.importorskip("triton")

import triton.language as tl  # noqa: E402

from jetson_mamba.ops import triton_utils as tu  # noqa: E402

GPU = torch.cuda.is_available() and not tu.INTERPRET


@triton.jit
def _scaled_copy(x_ptr, out_ptr, n, stride, scale, BLOCK: tl.constexpr, NEGATE: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    v = tl.load(x_ptr + offs * stride, mask=offs < n) * scale
    if NEGATE:
        v = -v
    tl.store(out_ptr + offs, v, mask=offs < n)


def test_launch_key_separates_what_triton_specializes_on() -> None:
    """Two launches share a key only where Triton would pick the same compiled variant: same dtypes,
    same 16-byte alignment, same integers (Triton specializes on divisibility by 16 and width), same
    constexprs and options."""
    a, b = torch.zeros(64), torch.ones(64)

    def key(*args: Any, **kwargs: Any) -> Any:
        return tu.launch_key(0, args, kwargs)

    assert key(a, 64, BLOCK=32) == key(b, 64, BLOCK=32)  # other tensors, same variant
    assert key(a, 64, BLOCK=32) != key(a[1:], 64, BLOCK=32)  # 4 bytes off: not 16-byte aligned
    assert key(a, 64, BLOCK=32) != key(a.double(), 64, BLOCK=32)
    assert key(a, 64, BLOCK=32) != key(a, 65, BLOCK=32)  # 64 is a multiple of 16, 65 is not
    assert key(a, 2 ** 31, BLOCK=32) != key(a, 2 ** 31 - 16, BLOCK=32)  # i64 vs i32
    assert key(a, 64, BLOCK=32) != key(a, 64, BLOCK=64)
    assert key(a, 64, BLOCK=32) != key(a, 64, BLOCK=32, num_warps=8)
    assert key(a, n=64) != key(a, 64)  # by keyword or by position: other parameters get the values
    assert key(a, 64, 1.5) != key(a, 64, 2.5) and key(a, 64, None) != key(a, 64, 0)
    assert tu.launch_key(0, (a,), {}) != tu.launch_key(1, (a,), {})  # another GPU


def test_heuristics_wrappers_are_applied_as_triton_applies_them() -> None:
    """The scan kernels sit under @triton.heuristics: launch computes those values itself (each rule sees
    the arguments and the values before it) and launches the JIT function beneath."""
    wrapped = triton.heuristics({"NEGATE": lambda a: a["n"] > 10, "BLOCK": lambda a: 64 if a["NEGATE"] else 32})(
        _scaled_copy)
    x = torch.zeros(4)
    fn, kwargs = tu._heuristics_applied(wrapped, (x, x, 11), {"stride": 1})
    assert fn is _scaled_copy and kwargs == {"stride": 1, "NEGATE": True, "BLOCK": 64}
    assert tu._heuristics_applied(wrapped, (x, x, 3), {})[1] == {"NEGATE": False, "BLOCK": 32}


class _Launcher:
    """What launch calls once a kernel is known: records each launch (grid, stream, arguments)."""

    packed_metadata = "metadata"
    function = "function"

    def __init__(self) -> None:
        self.launches: List[Any] = []

    def run(self, *launch: Any) -> None:
        self.launches.append(launch)


def test_launch_remembers_a_kernel_per_key_and_never_another_functions(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bookkeeping of launch on any machine: Triton's run compiles (here: hands out a recording
    launcher), later launches with the key go to that launcher with the grid, the current stream and
    every parameter in order; another key goes through Triton again; a new JIT function at the address
    of a freed one is not taken for it."""
    if tu._RUNTIME_KNOBS is None:
        pytest.skip("this Triton has no knobs: launch always takes Triton's own path")
    monkeypatch.setattr(tu, "_device_and_stream", lambda: (lambda: 0, lambda device: 1234))
    monkeypatch.setattr(tu, "_COMPILED", {})  # the recording launchers stay out of the real memo
    made: List[_Launcher] = []

    def compile_and_run(*args: Any, grid: Any, warmup: bool, **kwargs: Any) -> _Launcher:
        made.append(_Launcher())
        return made[-1]

    monkeypatch.setattr(_scaled_copy, "run", compile_and_run)
    x, out = torch.zeros(64), torch.zeros(64)

    def go(n: int) -> None:
        tu.launch(_scaled_copy, lambda m: (tu.grid_size(n, m["BLOCK"]),), x, out, n, 1, 2.0,
                  BLOCK=32, NEGATE=False, num_warps=4)

    go(64)
    go(64)
    go(64)
    assert len(made) == 1 and len(made[0].launches) == 2
    assert made[0].launches[0] == (2, 1, 1, 1234, "function", "metadata", None, None, None,
                                   x, out, 64, 1, 2.0, 32, False)
    go(48)  # another n: Triton's run again (it may specialize it otherwise)
    assert len(made) == 2 and not made[1].launches
    # the memo entry of a function that is gone, found at the id of a new one, is not used
    memo = tu._COMPILED[id(_scaled_copy)]
    monkeypatch.setitem(tu._COMPILED, id(_scaled_copy), (object(), memo[1]))
    go(64)
    assert len(made) == 3


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="compiled Triton launches need a GPU")
def test_later_launches_take_the_compiled_kernel_and_give_the_same_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    runs: List[int] = []
    run = _scaled_copy.run

    def counted(*args: Any, **kwargs: Any) -> Any:
        runs.append(1)
        return run(*args, **kwargs)

    monkeypatch.setattr(_scaled_copy, "run", counted)
    assert tu._hooks_idle(), "a launch hook is set: no fast path here"
    x = torch.randn(1000, device="cuda")

    def go(src: torch.Tensor, stride: int, negate: bool, scale: float = 2.0) -> torch.Tensor:
        n = src.numel() // stride
        out = torch.full((n,), float("nan"), device="cuda")
        tu.launch(_scaled_copy, lambda m: (tu.grid_size(n, m["BLOCK"]),), src, out, n, stride, scale,
                  BLOCK=128, NEGATE=negate, num_warps=4)
        return out

    assert torch.equal(go(x, 1, False), x * 2)
    assert len(runs) == 1
    for _ in range(3):  # the launcher directly: Triton's run is not called again
        assert torch.equal(go(x, 1, False), x * 2)
    assert torch.equal(go(x, 1, False, scale=3.0), x * 3)  # floats are arguments, not variants
    assert len(runs) == 2  # the other float value is another key (as fine as Triton's or finer)
    assert torch.equal(go(x, 2, False), x[::2] * 2)  # a stride Triton specializes differently
    assert torch.equal(go(x[1:], 1, False), x[1:] * 2)  # a misaligned tensor: another variant
    assert torch.equal(go(x, 1, True), -x * 2)  # another constexpr
    assert len(runs) == 5
    assert torch.equal(go(x[1:], 1, False), x[1:] * 2) and torch.equal(go(x, 1, True), -x * 2)
    assert len(runs) == 5
    # a launch hook (profilers add one) needs Triton's own path
    seen: List[Any] = []
    hooks = triton.knobs.runtime.launch_enter_hook
    hooks.add(seen.append)
    try:
        assert torch.equal(go(x, 1, False), x * 2)
    finally:
        hooks.remove(seen.append)
    assert len(runs) == 6 and len(seen) == 1


def test_scan_launch_plans_follow_every_stride_dtype_and_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scan forward's launch plan (tuned config, heuristics' values, compiled kernel) is reused only
    for a call that Triton would compile alike: a new stride, dtype, shape or optional input makes a new
    plan, and a reused plan launches with the current call's tensors (no stale plan, no stale arguments)."""
    if tu._RUNTIME_KNOBS is None:
        pytest.skip("this Triton has no knobs (or interprets): launch always takes Triton's own path")
    from jetson_mamba.ops.selective_scan import triton as scan
    from jetson_mamba.ops.selective_scan.cuda import X_CHUNK

    jit = tu.jit_function(scan._fwd)
    made: List[_Launcher] = []

    def compile_and_run(*args: Any, grid: Any, warmup: bool, **kwargs: Any) -> _Launcher:
        made.append(_Launcher())
        return made[-1]

    monkeypatch.setattr(jit, "run", compile_and_run)
    monkeypatch.setattr(scan._fwd, "configs", scan._fwd.configs[:1])  # no candidates to time on the CPU
    monkeypatch.setattr(scan, "is_available", lambda device, dtype: None)
    monkeypatch.setattr(tu, "_device_and_stream", lambda: (lambda: 0, lambda device: 0))
    monkeypatch.setattr(tu, "_COMPILED", {})
    monkeypatch.setattr(tu, "_LAUNCH_MEMO", {})
    monkeypatch.setattr(scan, "_FWD_LAUNCHES", {})

    def inputs(b: int = 2, d: int = 8, L: int = 64, n: int = 4, dtype: torch.dtype = torch.float32) -> List[Any]:
        return [torch.randn(b, d, L).to(dtype), torch.randn(b, d, L).to(dtype), -torch.rand(d, n),
                torch.randn(b, n, L).to(dtype), torch.randn(b, n, L).to(dtype), torch.randn(d), None, None]

    def plans(args: List[Any]) -> int:
        """New compiled kernels asked of Triton by three calls with `args` (the first call of a tuning key
        runs the autotuner, the second takes the memo's path and finds its kernel: at most two)."""
        before = len(made)
        for _ in range(3):
            scan.selective_scan_forward_x(*args, True, X_CHUNK)
        assert made[-1].launches, "the third call did not take the remembered kernel"
        assert made[-1].launches[-1][9] is args[0]  # ... with this call's tensors, not the first call's
        return len(made) - before

    base = inputs()
    assert plans(base) >= 1 and plans(inputs()) == 0  # the same layout again: the plan is reused
    u_t = torch.randn(2, 64, 8).transpose(1, 2)  # same shape, channel-last strides
    n8 = inputs(n=8)
    variants = {
        "u's strides": [u_t, *base[1:]],
        "B's dtype": [*base[:3], base[3].half(), *base[4:]],
        "dstate": [*base[:2], n8[2], *n8[3:5], *base[5:]],
        "a length of another divisibility by 16": inputs(L=48),
        "channels": inputs(d=16),
        "no D": [*base[:5], None, None, None],
        "with z": [*base[:6], torch.randn(2, 8, 64), None],
    }
    for what, args in variants.items():
        assert plans(args) >= 1, f"a new {what} reused a stale launch plan"


def _planned_sites(monkeypatch: pytest.MonkeyPatch, kernels: List[Any]) -> List[_Launcher]:
    """Triton's run of every JIT function under `kernels` replaced by one that records its arguments and hands
    out a recording launcher (one config per autotuner, nothing to time on the CPU); returns those launchers."""
    from triton.runtime.autotuner import Autotuner

    from jetson_mamba.ops.causal_conv1d import triton as conv
    from jetson_mamba.ops.selective_scan import triton as scan

    made: List[_Launcher] = []
    for kernel in kernels:
        jit = tu.jit_function(kernel)

        def compile_and_run(*args: Any, grid: Any, warmup: bool, _jit: Any = jit, **kwargs: Any) -> _Launcher:
            made.append(_Launcher())
            # every parameter in signature order, as Triton binds them: what the launcher must get later
            made[-1].params = [*args, *(kwargs[n] for n in _jit.arg_names[len(args):])]  # type: ignore[attr-defined]
            return made[-1]

        monkeypatch.setattr(jit, "run", compile_and_run)
        if isinstance(kernel, Autotuner):
            monkeypatch.setattr(kernel, "configs", kernel.configs[:1])
    for module in (scan, conv):
        monkeypatch.setattr(module, "is_available", lambda device, dtype: None)
    monkeypatch.setattr(tu, "_device_and_stream", lambda: (lambda: 0, lambda device: 0))
    monkeypatch.setattr(tu, "_COMPILED", {})
    monkeypatch.setattr(tu, "_LAUNCH_MEMO", {})
    for module, site in ((scan, "_FWD_LAUNCHES"), (scan, "_BWD_LAUNCHES"), (conv, "_FWD_LAUNCHES"),
                         (conv, "_BWD_LAUNCHES"), (conv, "_UPDATE_LAUNCHES")):
        monkeypatch.setattr(module, site, {})  # no plan of another test's recording launchers
    return made


def _same_launch(got: Any, want: List[Any]) -> bool:
    """A launch's parameters (after the grid, stream and metadata) against those Triton bound at compile time
    for another call with the same layout: equal values, and tensors of the same dtype, shape and strides."""
    params = list(got[9:])
    if len(params) != len(want):
        return False
    for g, w in zip(params, want):
        if isinstance(w, torch.Tensor):
            if not (isinstance(g, torch.Tensor) and (g.dtype, g.shape, g.stride()) == (w.dtype, w.shape, w.stride())):
                return False
        elif g != w or type(g) is not type(w):
            return False
    return True


def _count_plans(made: List[_Launcher], call: Any) -> int:
    """New compiled kernels asked of Triton by three calls (the first call of a tuning key runs the autotuner,
    the second takes launch's memo and finds its kernel: at most two); the third call must take the planned
    launcher, with Triton's own binding of its parameters, and its own tensors."""
    before = len(made)
    first = call()
    for _ in range(2):
        last = call()
    assert made[-1].launches, "the third call did not take the remembered kernel"
    launch = made[-1].launches[-1]
    assert _same_launch(launch, made[-1].params), "a planned launch passed other parameters than Triton bound"
    assert launch[9] is last[0] and launch[9] is not first[0] or last[0] is first[0], "a stale tensor was launched"
    return len(made) - before


def _scan_bwd_inputs(b: int = 2, d: int = 8, L: int = 64, n: int = 4, dtype: torch.dtype = torch.float32) -> List[Any]:
    u = torch.randn(b, d, L).to(dtype)
    return [u, torch.randn(b, d, L).to(dtype), -torch.rand(d, n), torch.randn(b, n, L).to(dtype),
            torch.randn(b, n, L).to(dtype), torch.randn(d), torch.randn(b, d, L).to(dtype), torch.randn(d), True,
            torch.randn(b, d, L).to(dtype)]


def test_planned_scan_backward_follows_every_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scan backward's launch plan (launch_planned) is reused only for a call Triton would compile alike,
    and launches with what Triton bound: a new stride, dtype, shape, optional input or flag makes a new plan."""
    if tu._RUNTIME_KNOBS is None:
        pytest.skip("this Triton has no knobs (or interprets): launch always takes Triton's own path")
    from jetson_mamba.ops.selective_scan import triton as scan

    made = _planned_sites(monkeypatch, [scan._bwd, scan._bwd_det])

    def run(args: List[Any], out_z: bool = True, dz: Any = None) -> Any:
        def call() -> Any:
            if out_z:
                return [args[0], *scan.selective_scan_backward_out_z(*args, dz=dz)[0]]
            return [args[0], *scan.selective_scan_backward(*args, dz=dz)]
        return call

    base = _scan_bwd_inputs()
    assert _count_plans(made, run(base)) >= 1 and _count_plans(made, run(_scan_bwd_inputs())) == 0
    n8 = _scan_bwd_inputs(n=8)
    variants = {
        "u's strides": [torch.randn(2, 64, 8).transpose(1, 2), *base[1:]],
        "dout's strides": [*base[:9], torch.randn(2, 8, 72)[:, :, :64]],
        "delta's strides": [base[0], torch.randn(2, 64, 8).transpose(1, 2), *base[2:]],
        "B's dtype": [*base[:3], base[3].half(), *base[4:]],
        "dstate": [*base[:2], *n8[2:5], *base[5:]],
        "a length of another divisibility by 16": _scan_bwd_inputs(L=48),
        "channels": _scan_bwd_inputs(d=16),
        "no D": [*base[:5], None, *base[6:]],
        "no delta_bias": [*base[:7], None, *base[8:]],
        "no softplus": [*base[:8], False, base[9]],
    }
    for what, args in variants.items():
        assert _count_plans(made, run(args)) >= 1, f"a new {what} reused a stale launch plan"
    assert _count_plans(made, run(base, out_z=False)) >= 1, "without out_z: a stale launch plan"
    no_z = [*base[:6], None, *base[7:]]
    assert _count_plans(made, run(no_z, out_z=False)) >= 1, "without z: a stale launch plan"
    # a caller's dz buffer: the plan knows where the tensors it allocates lie, not where a caller's lies
    assert _count_plans(made, run(base, dz=torch.empty(2, 8, 64))) == 0, "an aligned dz buffer: a new plan"
    odd = torch.empty(2 * 8 * 64 + 1)[1:].view(2, 8, 64)  # 4 bytes past a 16-byte boundary
    assert _count_plans(made, run(base, dz=odd)) >= 1, "a dz buffer of another alignment reused a stale plan"
    torch.use_deterministic_algorithms(True)
    try:
        assert _count_plans(made, run(base)) >= 1, "deterministic mode: a stale launch plan"
    finally:
        torch.use_deterministic_algorithms(False)


def _replayed(made: List[_Launcher], call: Any) -> int:
    """New compiled kernels asked of Triton by three calls of `call` (each with fresh input tensors: it returns
    them). The first call compiles each kernel once; the next two launch every one of them through its plan,
    with Triton's own binding of its parameters and their own tensors, never the first call's."""
    before = len(made)
    launched = [len(launcher.launches) for launcher in made]
    first = call()
    new = made[before:]
    counts = [len(launcher.launches) for launcher in new]
    for _ in range(2):
        inputs = call()
    assert len(made) == before + len(new), "a later call with the same layout compiled again"
    for launcher, count in zip(made, launched):  # an older plan taken for this layout: other parameters
        assert all(_same_launch(launch, launcher.params) for launch in launcher.launches[count:]), "a stale plan"
    stale = {id(t) for t in first if isinstance(t, torch.Tensor)}
    current = {id(t) for t in inputs if isinstance(t, torch.Tensor)}
    for launcher, count in zip(new, counts):
        assert len(launcher.launches) == count + 2, "a kernel was not launched through its plan"
        params = launcher.launches[-1][9:]
        assert _same_launch(launcher.launches[-1], launcher.params), "a planned launch passed other parameters"
        ids = {id(p) for p in params if isinstance(p, torch.Tensor)}
        assert not ids & stale and ids & current, "a planned launch passed another call's tensors"
    return len(new)


def test_planned_chunked_scan_launches_follow_every_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sequence-parallel scan's launches (the one-launch forward, the three-launch forward, the backward's
    five) are planned as the one-pass kernels' are: from the second call with a layout on, every kernel goes
    straight to its launcher with what Triton bound and the call's own tensors; another chunk length,
    layout, optional input or flag makes new plans."""
    if tu._RUNTIME_KNOBS is None:
        pytest.skip("this Triton has no knobs (or interprets): launch always takes Triton's own path")
    from jetson_mamba.ops.selective_scan import triton as scan
    from jetson_mamba.ops.selective_scan import triton_chunked as chunked
    from jetson_mamba.ops.selective_scan.cuda import X_CHUNK

    made = _planned_sites(monkeypatch, [scan._fwd, scan._bwd, chunked._lookback_kernel, chunked._chunk_kernel,
                                        chunked._carry_kernel, chunked._adjoint_kernel])
    for site in ("_LOOKBACK_LAUNCHES", "_CHUNK_LAUNCHES", "_CARRY_LAUNCHES", "_ADJOINT_LAUNCHES", "_BWD_LAUNCHES"):
        monkeypatch.setattr(chunked, site, {})
    setting = {"chunk": 16, "one launch": True}
    monkeypatch.setattr(chunked, "chunk_for", lambda u, forward=False: setting["chunk"])
    monkeypatch.setattr(chunked, "lookback", lambda: setting["one launch"])

    def fresh(args: List[Any]) -> List[Any]:  # new tensors of the same strides (clone makes a slice contiguous)
        return [torch.empty_strided(a.shape, a.stride(), dtype=a.dtype).copy_(a) if isinstance(a, torch.Tensor)
                else a for a in args]

    def fwd(args: List[Any]) -> Any:
        def call() -> List[Any]:
            new = fresh(args)
            scan.selective_scan_forward_x(*new[:8], True, X_CHUNK)
            return new
        return call

    def bwd(args: List[Any]) -> Any:
        def call() -> List[Any]:
            new = fresh(args)
            scan.selective_scan_backward_out_z(*new) if new[6] is not None else scan.selective_scan_backward(*new)
            return new
        return call

    base = _scan_bwd_inputs()
    assert _replayed(made, fwd(base)) == 1, "the one-launch forward: one kernel"
    assert _replayed(made, bwd(base)) == 5, "the backward: chunk, carry, adjoint, reverse carry, last pass"
    setting["one launch"] = False
    assert _replayed(made, fwd(base)) == 3, "the three-launch forward: chunk, carry with x, chunk with output"
    n8 = _scan_bwd_inputs(n=8)
    u_last = [torch.randn(2, 64, 8).transpose(1, 2), *base[1:]]
    dstate = [*base[:2], *n8[2:5], *base[5:]]
    no_z = [*base[:6], None, *base[7:]]
    for what, call in {
        "u's strides, forward": fwd(u_last), "u's strides, backward": bwd(u_last),
        "dstate, forward": fwd(dstate), "dstate, backward": bwd(dstate),
        "no z, forward": fwd(no_z), "no z, backward": bwd(no_z),
        "dout's strides": bwd([*base[:9], torch.randn(2, 8, 72)[:, :, :64]]),
        "no softplus": bwd([*base[:8], False, base[9]]),
    }.items():
        assert _replayed(made, call) >= 1, f"a new {what} reused a stale chunked launch plan"
    setting["chunk"] = 32
    assert _replayed(made, bwd(base)) >= 1, "another chunk length reused a stale chunked launch plan"


def test_planned_conv_launches_follow_every_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    """The conv forward, backward and update launch plans: reused only for a call Triton would compile alike
    (same width, strides, optional inputs, flags), with what Triton bound."""
    if tu._RUNTIME_KNOBS is None:
        pytest.skip("this Triton has no knobs (or interprets): launch always takes Triton's own path")
    from jetson_mamba.ops.causal_conv1d import triton as conv

    made = _planned_sites(monkeypatch, [conv._fwd_rows, *conv._fwd.values(), conv._bwd_rows, conv._bwd_steps,
                                        *conv._bwd.values(), conv._conv_update_kernel])
    b, d, L = 2, 8, 64

    def x_(last: bool = False) -> torch.Tensor:
        return torch.randn(b, L, d).transpose(1, 2) if last else torch.randn(b, d, L)

    def fwd(x: torch.Tensor, w: torch.Tensor, bias: Any = None, init: Any = None, final: bool = False,
            silu: bool = True, out: Any = None) -> Any:
        return lambda: [x, *conv.causal_conv1d_forward(x, w, bias, None, init, final, silu, out=out)]

    w4, w2, bias = torch.randn(d, 4), torch.randn(d, 2), torch.randn(d)
    x = x_()
    assert _count_plans(made, fwd(x, w4)) >= 1 and _count_plans(made, fwd(x_(), w4)) == 0
    for what, call in {
        "width": fwd(x, w2), "width, same strides": fwd(x, w4[:, :2]), "a transposed weight": fwd(x, torch.randn(4, d).t()), "bias": fwd(x, w4, bias),
        "no silu": fwd(x, w4, silu=False), "channel-last x": fwd(x_(True), w4),
        "initial states": fwd(x, w4, init=torch.randn(b, d, 3)), "final states": fwd(x, w4, final=True),
        "an out buffer of other strides": fwd(x, w4, out=torch.empty(b, L + 8, d)[:, :L].transpose(1, 2)),
    }.items():
        assert _count_plans(made, call) >= 1, f"conv forward: a new {what} reused a stale launch plan"

    def bwd(x: torch.Tensor, w: torch.Tensor, dout: torch.Tensor, bias: Any = None, init: Any = None,
            silu: bool = True) -> Any:
        return lambda: [x, *conv.causal_conv1d_backward(x, w, bias, dout, None, init, None, silu)]

    g = torch.randn(b, d, L)
    assert _count_plans(made, bwd(x, w4, g)) >= 1 and _count_plans(made, bwd(x_(), w4, torch.randn(b, d, L))) == 0
    for what, call in {
        "width": bwd(x, w2, g), "width, same strides": bwd(x, w4[:, :3], g), "bias": bwd(x, w4, g, bias), "no silu": bwd(x, w4, g, silu=False),
        "channel-last x": bwd(x_(True), w4, torch.randn(b, L, d).transpose(1, 2)),
        "dout's strides": bwd(x, w4, torch.randn(b, d, L + 8)[:, :, :L]),
        "initial states": bwd(x, w4, g, init=torch.randn(b, d, 3)),
    }.items():
        assert _count_plans(made, call) >= 1, f"conv backward: a new {what} reused a stale launch plan"

    def update(x: torch.Tensor, state: torch.Tensor, w: torch.Tensor, bias: Any = None, silu: bool = True,
               seqlens: Any = None) -> Any:
        return lambda: [x, conv.causal_conv1d_update(x, state, w, bias, silu, seqlens, None)]

    step, state = torch.randn(b, d), torch.randn(b, d, 3)
    assert _count_plans(made, update(step, state, w4)) >= 1
    assert _count_plans(made, update(torch.randn(b, d), torch.randn(b, d, 3), w4)) == 0
    for what, call in {
        "width": update(step, torch.randn(b, d, 1), w2), "width, same strides": update(step, state, w4[:, :3]), "a longer state": update(step, torch.randn(b, d, 5), w4),
        "3-D x": update(torch.randn(b, d, 2), state, w4), "bias": update(step, state, w4, bias),
        "no silu": update(step, state, w4, silu=False),
        "cache_seqlens": update(step, state, w4, seqlens=torch.zeros(b, dtype=torch.int32)),
        "a strided state": update(step, torch.randn(b, 3, d).transpose(1, 2), w4),
    }.items():
        assert _count_plans(made, call) >= 1, f"conv update: a new {what} reused a stale launch plan"
