"""Backend dispatch: automatic choice, use_backend / JETSON_MAMBA_BACKEND, the contract, registration, reporting."""

from __future__ import annotations

import logging
import types
from typing import Any, Optional

import pytest
import torch

from jetson_mamba.errors import BackendUnavailableError
from jetson_mamba.ops import backend, selective_scan_fn, use_backend
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


def test_a_thread_python_did_not_start_follows_the_newest_choice() -> None:
    """torch's autograd runs a backward on CUDA tensors in threads of its own, outside the caller's context:
    such a thread (one Python did not start) follows the newest use_backend in the process."""
    import _thread
    import threading

    def foreign(seen: list, done: threading.Event) -> None:
        seen.append(backend.preferred_backends())
        done.set()

    seen: list = []
    done = threading.Event()
    with use_backend("triton,torch"):
        _thread.start_new_thread(foreign, (seen, done))
        assert done.wait(30)
    assert seen == [["triton", "torch"]]


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
    from jetson_mamba.ops.causal_conv1d import torch as conv_torch

    no_update = types.ModuleType("no_update")
    for name in ("is_available", "causal_conv1d_forward", "causal_conv1d_backward"):
        setattr(no_update, name, getattr(conv_torch, name))
    backend.register_backend("causal_conv1d", "no_update", no_update, 1000)
    with pytest.raises(BackendUnavailableError, match="no decode step"):
        causal_conv1d_update(torch.randn(1, 4), torch.zeros(1, 4, 3), torch.randn(4, 4))


@pytest.mark.gpu
def test_a_cuda_backward_runs_on_the_backend_chosen_around_it() -> None:
    """On CUDA tensors autograd runs the backward in its own thread: it must still see use_backend."""
    seen = []

    class Probe(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
            return x * 2

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
            seen.append(backend.preferred_backends())
            return grad * 2

    x = torch.randn(4, device="cuda", requires_grad=True)
    with use_backend("torch"):
        Probe.apply(x).sum().backward()
    assert seen == [["torch"]]
