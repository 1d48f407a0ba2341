"""Backend dispatch: automatic choice, use_backend / JETSON_MAMBA_BACKEND, the contract, registration, reporting."""

from __future__ import annotations

import logging
import threading
import types
from typing import Any, Optional

import pytest
import torch

from jetson_mamba.errors import BackendUnavailableError
from jetson_mamba.ops import backend, selective_scan_fn, use_backend
from jetson_mamba.ops.causal_conv1d import torch as conv_torch
from jetson_mamba.ops.selective_scan import torch as scan_torch

pytestmark = pytest.mark.usefixtures("clean_dispatch")


def fake_backend(reason: Optional[str] = None, scale: float = 1.0) -> types.ModuleType:
    """A backend module wrapping the torch one; `scale` != 1 makes it deliberately wrong."""
    mod = types.ModuleType("fake_scan")

    def is_available(device: Any, dtype: Any) -> Optional[str]:
        return reason

    def forward(*args: Any, **kwargs: Any) -> Any:
        out, out_z, last = scan_torch.selective_scan_forward(*args, **kwargs)
        return out * scale, None if out_z is None else out_z * scale, last

    mod.is_available = is_available  # type: ignore[attr-defined]
    mod.selective_scan_forward = forward  # type: ignore[attr-defined]
    mod.selective_scan_backward = scan_torch.selective_scan_backward  # type: ignore[attr-defined]
    return mod


def scan_inputs() -> tuple:
    g = torch.Generator().manual_seed(0)
    return (torch.randn(1, 4, 8, generator=g), torch.rand(1, 4, 8, generator=g), -torch.rand(4, 2, generator=g),
            torch.randn(1, 2, 8, generator=g), torch.randn(1, 2, 8, generator=g))


def test_cpu_picks_torch_and_lists_why_not_the_others() -> None:
    name, module = backend.select_backend("selective_scan", "cpu", torch.float32)
    assert name == "torch" and module is scan_torch
    infos = {i.name: i for i in backend.list_backends("selective_scan", "cpu", torch.float32)}
    assert infos["torch"].available and infos["torch"].reason is None
    assert not infos["cuda"].available and "CUDA tensors" in str(infos["cuda"].reason)
    assert not infos["triton"].available and "TRITON_INTERPRET" in str(infos["triton"].reason)
    assert [i.priority for i in backend.list_backends("causal_conv1d")] == sorted(
        (i.priority for i in backend.list_backends("causal_conv1d")), reverse=True)
    assert infos["torch"].to_json()["available"] is True


def test_unsupported_dtype_is_explained() -> None:
    with pytest.raises(BackendUnavailableError) as err:
        backend.select_backend("selective_scan", "cpu", torch.int32)
    assert "int32" in err.value.message and err.value.fix


def test_forcing_an_unavailable_backend_says_how_to_fix() -> None:
    with use_backend("cuda"), pytest.raises(BackendUnavailableError) as err:
        selective_scan_fn(*scan_inputs())
    assert "cuda" in err.value.message and "CUDA device" in str(err.value.fix)
    with use_backend("nonsense"), pytest.raises(BackendUnavailableError, match="unknown backend"):
        backend.select_backend("causal_conv1d", "cpu", torch.float32)
    with use_backend("torch"):
        assert backend.select_backend("causal_conv1d", "cpu", torch.float32)[0] == "torch"


def test_forcing_triton_where_it_has_no_kernel_suggests_a_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mamba2 under JETSON_MAMBA_BACKEND=triton on the CPU (ssd has no Triton kernel): the fix said "set
    TRITON_INTERPRET=1" although it was set; it gives the fallback list now, and TRITON_INTERPRET only
    where it is not set."""
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with use_backend("triton"), pytest.raises(BackendUnavailableError) as err:
        backend.select_backend("ssd", "cpu", torch.float32)
    assert "triton,torch" in str(err.value.fix) and "TRITON_INTERPRET" not in str(err.value.fix)
    monkeypatch.delenv("TRITON_INTERPRET")
    with use_backend("triton"), pytest.raises(BackendUnavailableError) as err:
        backend.select_backend("ssd", "cpu", torch.float32)
    assert "TRITON_INTERPRET=1" in str(err.value.fix)


def test_forced_triton_on_cpu_needs_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    """CPU tensors reach the Triton backend only when it is chosen and TRITON_INTERPRET=1."""
    backend.register_backend("selective_scan", "triton", fake_backend(), 200)
    assert backend.select_backend("selective_scan", "cpu", torch.float32)[0] == "torch"
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with use_backend("triton"):
        with pytest.raises(BackendUnavailableError) as err:
            backend.select_backend("selective_scan", "cpu", torch.float32)
        assert "TRITON_INTERPRET=1" in str(err.value)
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        assert backend.select_backend("selective_scan", "cpu", torch.float32)[0] == "triton"


def test_a_preference_list_takes_the_first_backend_that_can_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """`triton,torch`: Triton where it runs, torch for CPU tensors (ultralytics' CPU pass at model build)."""
    backend.register_backend("selective_scan", "triton", fake_backend(), 200)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with use_backend("triton, torch"):
        assert backend.preferred_backends() == ["triton", "torch"] and backend.requested_backend() == "triton"
        assert backend.select_backend("selective_scan", "cpu", torch.float32)[0] == "torch"
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        assert backend.select_backend("selective_scan", "cpu", torch.float32)[0] == "triton"
        infos = {i.name: i for i in backend.list_backends("selective_scan", "cpu", torch.float32)}
        assert infos["triton"].available  # listed as forced, so the interpreter counts
    monkeypatch.delenv("TRITON_INTERPRET")
    with use_backend(["cuda", "triton"]), pytest.raises(BackendUnavailableError) as err:
        backend.select_backend("selective_scan", "cpu", torch.float32)
    assert "none of" in err.value.message and "cuda:" in err.value.message and "triton:" in err.value.message
    assert "torch runs everywhere" in str(err.value.fix)
    with use_backend("triton,bogus"), pytest.raises(BackendUnavailableError, match="unknown backend 'bogus'"):
        backend.select_backend("selective_scan", "cpu", torch.float32)


def test_missing_backend_module_is_unavailable_not_an_error() -> None:
    backend.register_backend("selective_scan", "ghost", "jetson_mamba.ops.selective_scan.no_such_module", 999)
    infos = {i.name: i for i in backend.list_backends("selective_scan")}
    assert not infos["ghost"].available and "cannot import" in str(infos["ghost"].reason)
    assert backend.select_backend("selective_scan", "cpu", torch.float32)[0] == "torch"


def test_a_built_in_backend_an_op_lacks_says_so() -> None:
    """ssd has no compiled-kernel backend of ours: the reason says that, not an import traceback."""
    infos = {i.name: i for i in backend.list_backends("ssd")}
    assert infos["cuda"].reason == "jetson-mamba has no cuda kernel for ssd"


def test_a_wrong_registered_backend_is_used_and_is_caught() -> None:
    """verify's use: register a wrong kernel at top priority; dispatch uses it and the numbers differ."""
    good = selective_scan_fn(*scan_inputs())
    backend.register_backend("selective_scan", "wrong", fake_backend(scale=1.01), 1000)
    assert backend.select_backend("selective_scan", "cpu", torch.float32)[0] == "wrong"
    bad = selective_scan_fn(*scan_inputs())
    assert not torch.allclose(good, bad, rtol=1e-3, atol=0)
    backend.unregister_backend("selective_scan", "wrong")
    assert torch.equal(selective_scan_fn(*scan_inputs()), good)


def test_unregistering_a_builtin_and_a_raising_is_available() -> None:
    backend.unregister_backend("selective_scan", "torch")
    with pytest.raises(BackendUnavailableError, match="no backend"):
        backend.select_backend("selective_scan", "cpu", torch.float32)
    broken = fake_backend()
    broken.is_available = lambda d, t: 1 / 0  # type: ignore[attr-defined]
    backend.register_backend("selective_scan", "broken", broken, 10)
    info = backend.list_backends("selective_scan")[-1]
    assert info.name == "broken" and "ZeroDivisionError" in str(info.reason)
    backend.register_backend("selective_scan", "torch", scan_torch, 100)
    assert backend.select_backend("selective_scan", "cpu", torch.float32)[0] == "torch"


def test_choice_is_reported_once_per_op_and_backend(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="jetson_mamba.ops")
    for _ in range(3):
        selective_scan_fn(*scan_inputs())
    lines = [r.getMessage() for r in caplog.records if "selective_scan runs on" in r.getMessage()]
    assert len(lines) == 1 and "torch backend" in lines[0] and "cuda:" in lines[0]


def test_ssd_names_are_lazy_reexports() -> None:
    import jetson_mamba.ops as ops

    with pytest.raises(AttributeError):
        ops.no_such_function  # noqa: B018
    assert set(ops.SSD_EXPORTS) <= set(ops.__all__)
    ssd = pytest.importorskip("jetson_mamba.ops.ssd")
    for name in ops.SSD_EXPORTS:
        assert getattr(ops, name) is getattr(ssd, name)


def test_a_choice_is_remembered_until_the_backends_or_the_setting_change() -> None:
    """Every kernel call asks for its backend: the answer is remembered, and forgotten when a backend is
    registered or removed, or another backend is chosen."""
    asked = []
    fast = fake_backend()
    fast.is_available = lambda device, dtype: asked.append(dtype) or None  # type: ignore[attr-defined]
    backend.register_backend("selective_scan", "fast", fast, priority=500)
    for _ in range(3):
        assert tuple(backend.select_backend("selective_scan", "cpu", torch.float32)) == ("fast", fast)
    assert asked == [torch.float32]
    backend.select_backend("selective_scan", "cpu", torch.float64)  # another question, asked once more
    assert asked == [torch.float32, torch.float64]
    with use_backend("torch"):
        assert tuple(backend.select_backend("selective_scan", "cpu", torch.float32)) == ("torch", scan_torch)
    backend.unregister_backend("selective_scan", "fast")
    assert tuple(backend.select_backend("selective_scan", "cpu", torch.float32)) == ("torch", scan_torch)
    backend.register_backend("selective_scan", "fast", fast, priority=500)
    assert backend.select_backend("selective_scan", "cpu", torch.float32)[0] == "fast"
    assert len(asked) == 3


def test_the_environment_variable_is_read_once_and_use_backend_overrides_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """JETSON_MAMBA_BACKEND is the user's default, read at the first question; changing os.environ later
    switches nothing (only use_backend does), so no code can steer another's kernels through it."""
    monkeypatch.setenv(backend.ENV_VAR, "torch")
    backend.reset_backends()  # as at process start: the variable is read at the next question
    assert backend.select_backend("selective_scan", "cpu", torch.float32)[0] == "torch"
    monkeypatch.setenv(backend.ENV_VAR, "cuda")  # would fail on CPU tensors, were it read again
    assert backend.preferred_backends() == ["torch"]
    assert selective_scan_fn(*scan_inputs()).shape == (1, 4, 8)
    with use_backend("cuda"), pytest.raises(BackendUnavailableError, match="'cuda' cannot run"):
        selective_scan_fn(*scan_inputs())
    with use_backend(""):
        assert backend.preferred_backends() == []  # automatic, whatever the variable says
    with use_backend(None):
        assert backend.preferred_backends() == ["torch"]  # None: no change


def test_use_backend_nests_restores_and_is_local_to_its_thread_and_task() -> None:
    import asyncio
    import threading

    with use_backend("torch"):
        with use_backend(["cuda", "torch"]):
            assert backend.preferred_backends() == ["cuda", "torch"]
            seen = []
            thread = threading.Thread(target=lambda: seen.append(backend.preferred_backends()))
            thread.start()
            thread.join()
            assert seen == [[]]  # a thread of its own: its own (automatic) choice
        assert backend.preferred_backends() == ["torch"]
        with pytest.raises(ZeroDivisionError), use_backend("cuda"):
            1 / 0  # noqa: B018
        assert backend.preferred_backends() == ["torch"]
    assert backend.preferred_backends() == []

    async def task(name: str) -> list:
        with use_backend(name):
            await asyncio.sleep(0)  # the other task runs in between with its own choice
            return backend.preferred_backends()

    async def both() -> list:
        return list(await asyncio.gather(task("torch"), task("triton")))

    assert asyncio.run(both()) == [["torch"], ["triton"]]


def spy_backends(op: str, names: tuple, seen: list) -> None:
    """Register backends `names` of `op` (the torch one, each under its own name) that record
    (name, "forward" / "backward", the choice in effect while it runs) in `seen`."""
    portable = scan_torch if op == "selective_scan" else conv_torch
    for name in names:
        mod = types.ModuleType(f"spy_{name}")
        mod.is_available = portable.is_available  # type: ignore[attr-defined]
        for phase in ("forward", "backward"):
            real = getattr(portable, f"{op}_{phase}")

            def spy(*args: Any, _real: Any = real, _name: str = name, _phase: str = phase, **kwargs: Any) -> Any:
                seen.append((_name, _phase, ",".join(backend.preferred_backends())))
                return _real(*args, **kwargs)

            setattr(mod, f"{op}_{phase}", spy)
        backend.register_backend(op, name, mod, priority=1)


def in_thread(fn: Any) -> None:
    """Run fn in a thread of its own (outside every use_backend of this one) and wait for it."""
    errors: list = []
    thread = threading.Thread(target=lambda: _catch(fn, errors))
    thread.start()
    thread.join(60)
    assert not thread.is_alive() and not errors, errors


def _catch(fn: Any, errors: list) -> None:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - reported by in_thread
        errors.append(exc)


def _scan_forwards() -> dict:
    """The three ways a selective-scan forward is run: our autograd.Function, the custom op (what
    torch.compile / torch.export call), and the selective_scan_cuda stand-in under upstream's Function."""
    from jetson_mamba.ops import _library
    from jetson_mamba.ops.standins import selective_scan_cuda

    def eager(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> Any:
        return selective_scan_fn(u, delta, A, B, C)

    def custom_op(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> Any:
        return torch.ops.jetson_mamba.selective_scan_fwd(u, delta, A, B, C, None, None, None, False,
                                                         backend.choice_in_effect())[0]

    class Upstream(torch.autograd.Function):  # as mamba_ssm's SelectiveScanFn calls the extension
        @staticmethod
        def forward(ctx: Any, u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                    C: torch.Tensor) -> torch.Tensor:
            out, x = selective_scan_cuda.fwd(u, delta, A, B, C, None, None, None, False)
            ctx.save_for_backward(u, delta, A, B, C, x)
            return out

        @staticmethod
        def backward(ctx: Any, dout: torch.Tensor) -> Any:
            u, delta, A, B, C, x = ctx.saved_tensors
            du, ddelta, dA, dB, dC, *_ = selective_scan_cuda.bwd(u, delta, A, B, C, None, None, None, dout, x,
                                                                  None, None, False, False)
            return du, ddelta, dA, dB, dC

    ways = {"autograd.Function": eager, "selective_scan_cuda stand-in": Upstream.apply}
    if _library.ENABLED:
        ways["custom op"] = custom_op
    return ways


@pytest.mark.parametrize("way", sorted(_scan_forwards()))
def test_a_backward_runs_on_its_forwards_backend_on_another_thread_after_the_context(way: str) -> None:
    """The backend a forward ran under is saved with it: its backward, run from another thread (as
    autograd runs a CUDA backward) after the use_backend has exited, still runs on that backend."""
    seen: list = []
    spy_backends("selective_scan", ("spy_a", "spy_b"), seen)
    forward = _scan_forwards()[way]
    leaves = [t.requires_grad_() for t in scan_inputs()]
    with use_backend("spy_a"):
        out = forward(*leaves)
    with use_backend("spy_b"):  # what the thread that calls backward() chose is not the forward's
        in_thread(lambda: out.sum().backward())
    assert seen == [("spy_a", "forward", "spy_a"), ("spy_a", "backward", "spy_a")]
    assert all(t.grad is not None for t in leaves)


def test_two_threads_on_two_backends_each_backward_follows_its_own_forward() -> None:
    """Two threads run forwards on different backends at once; each backward, run by the other thread,
    runs on its own forward's backend (no process-wide "newest choice")."""
    seen: list = []
    spy_backends("selective_scan", ("spy_a", "spy_b"), seen)
    spy_backends("causal_conv1d", ("spy_a", "spy_b"), seen)
    from jetson_mamba.ops import causal_conv1d_fn

    outs: dict = {}
    both_forwarded = threading.Barrier(2, timeout=60)

    def worker(name: str, other: str) -> None:
        x, delta, A, B, C = (t.requires_grad_() for t in scan_inputs())
        with use_backend(name):
            outs[name] = selective_scan_fn(causal_conv1d_fn(x, torch.randn(4, 3), activation="silu"),
                                           delta, A, B, C)
            both_forwarded.wait()  # both forwards ran, each inside its own use_backend
            outs[other].sum().backward()  # the other thread's graph, from inside this thread's choice

    threads = [threading.Thread(target=worker, args=pair) for pair in (("spy_a", "spy_b"), ("spy_b", "spy_a"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    backwards = sorted(entry for entry in seen if entry[1] == "backward")
    assert backwards == [("spy_a", "backward", "spy_a")] * 2 + [("spy_b", "backward", "spy_b")] * 2, seen


def test_a_conv_stand_ins_backward_follows_its_forward() -> None:
    """causal_conv1d_cuda's bwd, called by upstream's Function after the forward's use_backend exited and
    from another thread, dispatches under the forward's choice (kept with the input x)."""
    from jetson_mamba.ops.standins import causal_conv1d_cuda

    seen: list = []
    spy_backends("causal_conv1d", ("spy_a", "spy_b"), seen)
    x, weight = torch.randn(1, 4, 8), torch.randn(4, 3)
    out = torch.empty_like(x)
    with use_backend("spy_a"):
        causal_conv1d_cuda.causal_conv1d_fwd(x, weight, None, None, None, out, None, True)
    dx, dweight = torch.empty_like(x), torch.zeros(4, 3)
    with use_backend("spy_b"):
        in_thread(lambda: causal_conv1d_cuda.causal_conv1d_bwd(x, weight, None, torch.ones_like(out), None, None,
                                                               None, dx, dweight, None, None, True))
    assert [entry[0] for entry in seen] == ["spy_a", "spy_a"], seen


def test_mamba_inner_fns_conv_backward_and_rerun_forward_follow_the_forward() -> None:
    """mamba_inner_fn's pattern: its backward hands the conv a new view of the input (it splits xz
    again) with the weight view its forward saved, and with checkpoint_lvl=1 reruns the conv forward
    there; both, in autograd's thread outside the forward's use_backend, run on the forward's backend."""
    from jetson_mamba.ops.standins import causal_conv1d_cuda

    seen: list = []
    spy_backends("causal_conv1d", ("spy_a", "spy_b"), seen)
    xz, weight = torch.randn(1, 8, 8), torch.randn(4, 3)
    out = torch.empty(1, 4, 8)
    with use_backend("spy_a"):
        causal_conv1d_cuda.causal_conv1d_fwd(xz.chunk(2, dim=1)[0], weight, None, None, None, out, None, True)

    def backward() -> None:
        x = xz.chunk(2, dim=1)[0]  # a new tensor object over the same memory
        causal_conv1d_cuda.causal_conv1d_fwd(x, weight, None, None, None, torch.empty_like(out), None, True)
        causal_conv1d_cuda.causal_conv1d_bwd(x, weight, None, torch.ones_like(out), None, None, None,
                                             torch.empty_like(x), torch.zeros(4, 3), None, None, True)

    in_thread(backward)
    assert [entry[0] for entry in seen] == ["spy_a"] * 3, seen
    seen.clear()
    with use_backend("spy_b"):  # a forward inside a use_backend of its own thread takes that choice
        causal_conv1d_cuda.causal_conv1d_fwd(xz.chunk(2, dim=1)[0], weight, None, None, None, out, None, True)
    assert [entry[0] for entry in seen] == ["spy_b"], seen


def test_a_backend_missing_a_required_function_is_refused_at_registration() -> None:
    from jetson_mamba.errors import BackendContractError

    incomplete = fake_backend()
    del incomplete.selective_scan_backward
    with pytest.raises(BackendContractError) as err:
        backend.register_backend("selective_scan", "incomplete", incomplete, 1000)
    assert "lacks selective_scan_backward" in err.value.message and "CONTRACTS" in str(err.value.fix)
    assert err.value.exit_code == BackendUnavailableError.exit_code
    assert "incomplete" not in {i.name for i in backend.list_backends("selective_scan")}
    # a dotted path is checked at its first import: that backend is unavailable, with the reason
    backend.register_backend("causal_conv1d", "scan_module", "jetson_mamba.ops.selective_scan.torch", 1000)
    infos = {i.name: i for i in backend.list_backends("causal_conv1d")}
    assert not infos["scan_module"].available and "lacks causal_conv1d_forward" in str(infos["scan_module"].reason)
    assert backend.select_backend("causal_conv1d", "cpu", torch.float32).name == "torch"


def test_optional_capabilities_are_declared_not_probed() -> None:
    chosen = backend.select_backend("selective_scan", "cpu", torch.float32)
    assert chosen.has("selective_scan_forward_x") and not chosen.has("selective_scan_backward_out_z")
    with pytest.raises(ValueError, match="not an optional capability"):
        chosen.has("selective_scan_fwd_x")  # a misspelt capability is an error, not a silent False
    backend.register_backend("selective_scan", "plain", fake_backend(), 1000)
    assert backend.select_backend("selective_scan", "cpu", torch.float32).offers == frozenset()
    conv = backend.select_backend("causal_conv1d", "cpu", torch.float32)
    assert conv.has("causal_conv1d_update") and not conv.writes_into_buffers


def test_the_decode_step_on_a_backend_without_one_is_a_clear_error() -> None:
    from jetson_mamba.ops import causal_conv1d_update

    no_update = types.ModuleType("no_update")
    for name in ("is_available", "causal_conv1d_forward", "causal_conv1d_backward"):
        setattr(no_update, name, getattr(conv_torch, name))
    backend.register_backend("causal_conv1d", "no_update", no_update, 1000)
    with pytest.raises(BackendUnavailableError, match="no decode step"):
        causal_conv1d_update(torch.randn(1, 4), torch.zeros(1, 4, 3), torch.randn(4, 4))


@pytest.mark.gpu
@pytest.mark.parametrize("way", sorted(_scan_forwards()))
def test_a_cuda_backward_runs_on_its_forwards_backend(way: str) -> None:
    """On CUDA tensors autograd runs the backward in a thread of its own, outside the caller's context: the
    backward still runs on the backend its forward ran on, whatever the caller chose around backward()."""
    seen: list = []
    spy_backends("selective_scan", ("spy_a", "spy_b"), seen)
    leaves = [t.cuda().requires_grad_() for t in scan_inputs()]
    with use_backend("spy_a"):
        out = _scan_forwards()[way](*leaves)
    with use_backend("spy_b"):
        out.sum().backward()
    assert seen == [("spy_a", "forward", "spy_a"), ("spy_a", "backward", "spy_a")]
