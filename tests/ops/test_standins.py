"""Stand-ins for the compiled extensions: exact call signatures, return values and in-place writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable, Dict, Iterator

import pytest
import torch
import torch.nn.functional as F

from jetson_mamba.ops import standins
from jetson_mamba.ops.causal_conv1d.naive import causal_conv1d_ref
from jetson_mamba.ops.selective_scan.naive import chunk_states_ref, selective_scan_ref
from jetson_mamba.ops.standins import (
    causal_conv1d_cuda,
    causal_conv1d_cuda_legacy,
    selective_scan_cuda,
    selective_scan_cuda_core,
    selective_scan_cuda_oflex,
)

pytestmark = pytest.mark.usefixtures("clean_dispatch", "nan_empty")


def scan_case(L: int, groups: int = 1, dtype: torch.dtype = torch.float32, dim: int = 4, dstate: int = 3,
              seed: int = 0) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def r(*s: int, dt: torch.dtype = dtype) -> torch.Tensor:
        return torch.randn(*s, generator=g).to(dt)

    return {"u": r(2, dim, L), "delta": (r(2, dim, L) * 0.5), "A": -torch.rand(dim, dstate, generator=g) - 0.2,
            "B": r(2, groups, dstate, L), "C": r(2, groups, dstate, L), "D": r(dim, dt=torch.float32),
            "z": r(2, dim, L), "delta_bias": r(dim, dt=torch.float32)}


def ref_grads(c: Dict[str, torch.Tensor], dout: torch.Tensor, use_z: bool = True) -> Dict[str, torch.Tensor]:
    leaves = {k: v.detach().double().requires_grad_(True) for k, v in c.items()}
    out = selective_scan_ref(leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"], leaves["D"],
                             leaves["z"] if use_z else None, leaves["delta_bias"], True)
    out.backward(dout.double())
    grads = {k: v.grad for k, v in leaves.items() if v.grad is not None}
    grads["out"] = out.detach()
    return grads


def test_selective_scan_cuda_fwd_bwd_with_caller_dz(close: Callable[..., None]) -> None:
    """mamba_inner_fn's call: dz is a view into one gradient tensor and must be written in place."""
    c = scan_case(40)
    out, x, out_z = selective_scan_cuda.fwd(c["u"], c["delta"], c["A"], c["B"], c["C"], c["D"], c["z"],
                                            c["delta_bias"], True)
    assert x.shape == (2, 4, 1, 6) and x.dtype == torch.float32
    dout = torch.randn(2, 4, 40)
    ref = ref_grads(c, dout)
    close(out_z, ref["out"], torch.float32, "out_z")
    _, last = selective_scan_ref(*(c[k] for k in ("u", "delta", "A", "B", "C", "D")), None, c["delta_bias"],
                                 True, return_last_state=True)
    close(x[:, :, -1, 1::2], last, torch.float32, "x[..., 1::2]")
    dxz = torch.full((2, 8, 40), float("nan"))
    dz_view = dxz.chunk(2, dim=1)[1]
    result = selective_scan_cuda.bwd(c["u"], c["delta"], c["A"], c["B"], c["C"], c["D"], c["z"],
                                     c["delta_bias"], dout, x, out, dz_view, True, True)
    assert len(result) == 9
    du, ddelta, dA, dB, dC, dD, ddelta_bias, dz, recomputed = result
    assert dz.data_ptr() == dz_view.data_ptr()
    close(dxz[:, 4:], ref["z"], torch.float32, "dz written into the caller's buffer")
    close(recomputed, out_z, torch.float32, "recomputed out_z")
    for name, got in zip(("u", "delta", "A", "B", "C", "D", "delta_bias"), result[:7]):
        close(got, ref[name], torch.float32, f"d{name}")
    assert dB.shape == c["B"].shape and dB.dtype == c["B"].dtype


def test_selective_scan_cuda_without_z_and_fixed_B() -> None:
    c = scan_case(10)
    B, C = torch.randn(4, 3), torch.randn(4, 3)
    result = selective_scan_cuda.fwd(c["u"], c["delta"], c["A"], B, C, None, None, None, False)
    assert len(result) == 2
    grads = selective_scan_cuda.bwd(c["u"], c["delta"], c["A"], B, C, None, None, None, torch.ones(2, 4, 10),
                                    result[1], result[0], None, False, False)
    assert len(grads) == 7 and grads[5] is None and grads[6] is None and grads[3].shape == (4, 3)


def test_chunk_states_every_2048_steps(close: Callable[..., None]) -> None:
    """x holds one (running decay, state) pair per 2048-step chunk, as the kernel's x does."""
    c = scan_case(2100, dim=2, dstate=2)
    args = [c[k] for k in ("u", "delta", "A", "B", "C")]
    out, x = selective_scan_cuda_core.fwd(*args, None, None, True, 1)
    assert x.shape == (2, 2, 2, 4)
    _, mid = selective_scan_ref(*(a[..., :2048] if a.dim() > 2 else a for a in args), delta_softplus=True,
                                return_last_state=True)
    _, last = selective_scan_ref(*args, delta_softplus=True, return_last_state=True)
    close(x[:, :, 0, 1::2], mid, torch.float32, "state after chunk 0")
    close(x[:, :, 1, 1::2], last, torch.float32, "last state")
    decay = torch.exp(F.softplus(c["delta"][..., :2048]).sum(-1, keepdim=True) * c["A"][None])
    close(x[:, :, 0, 0::2], decay, torch.float32, "running decay")
    with pytest.raises(RuntimeError, match="chunk states"):
        selective_scan_cuda_core.bwd(*args, None, None, torch.ones_like(out), None, True, 1)
    with pytest.raises(RuntimeError, match="expected"):
        selective_scan_cuda_core.bwd(*args, None, None, torch.ones_like(out), x[:, :, :1], True, 1)


def test_chunk_states_for_a_backend_that_keeps_none(close: Callable[..., None]) -> None:
    """A registered backend without selective_scan_forward_x: x comes from a second (torch) scan, with the
    backend's own last state in it, so a wrong final state still shows where callers read it."""
    from jetson_mamba.ops.backend import register_backend
    from jetson_mamba.ops.selective_scan import torch as portable

    def forward_off_by_one(*args: object, **kwargs: object) -> tuple:
        out, out_z, last = portable.selective_scan_forward(*args, **kwargs)
        return out, out_z, last + 1

    plain = ModuleType("plain_scan")
    plain.is_available = portable.is_available  # type: ignore[attr-defined]
    plain.selective_scan_forward = forward_off_by_one  # type: ignore[attr-defined]
    plain.selective_scan_backward = portable.selective_scan_backward  # type: ignore[attr-defined]
    register_backend("selective_scan", "plain", plain, priority=1000)
    c = scan_case(2100, dim=2, dstate=2)
    args = [c[k] for k in ("u", "delta", "A", "B", "C")]
    _, x = selective_scan_cuda_core.fwd(*args, None, c["delta_bias"], True, 1)
    ref = chunk_states_ref(*args, c["delta_bias"], True)
    close(x[:, :, 0], ref[:, :, 0], torch.float32, "first chunk")
    close(x[:, :, 1, 0::2], ref[:, :, 1, 0::2], torch.float32, "last decay product")
    close(x[:, :, 1, 1::2], ref[:, :, 1, 1::2] + 1, torch.float32, "the backend's own last state")


def test_vmamba_core_grouped(close: Callable[..., None]) -> None:
    c = scan_case(30, groups=2)
    args = [c[k] for k in ("u", "delta", "A", "B", "C", "D")]
    out, x = selective_scan_cuda_core.fwd(*args, c["delta_bias"], True, 1)
    dout = torch.randn(2, 4, 30)
    ref = ref_grads(c, dout, use_z=False)
    close(out, ref["out"], torch.float32, "out")
    grads = selective_scan_cuda_core.bwd(*args, c["delta_bias"], dout, x, True, 1)
    assert len(grads) == 7
    for name, got in zip(("u", "delta", "A", "B", "C", "D", "delta_bias"), grads):
        close(got, ref[name], torch.float32, f"d{name}")


def test_vmamba_oflex_out_float_and_shared_delta(close: Callable[..., None]) -> None:
    """oflex: fp32 out from fp16 inputs; delta with dim/2 rows shared by pairs of channels."""
    c = scan_case(24, groups=2, dtype=torch.float16)
    delta = c["delta"][:, ::2].contiguous()
    bias = c["delta_bias"][::2].contiguous()
    args = [c[k] for k in ("u",)] + [delta] + [c[k] for k in ("A", "B", "C", "D")]
    out, x = selective_scan_cuda_oflex.fwd(*args, bias, True, 1, True)
    assert out.dtype == torch.float32
    out16, _ = selective_scan_cuda_oflex.fwd(*args, bias, True, 1, False)
    assert out16.dtype == torch.float16
    wide = dict(c, delta=delta.repeat_interleave(2, 1), delta_bias=bias.repeat_interleave(2))
    dout = torch.randn(2, 4, 24)
    ref = ref_grads(wide, dout, use_z=False)
    close(out, ref["out"], torch.float16, "out")
    grads = selective_scan_cuda_oflex.bwd(*args, bias, dout, x, True, 1)
    assert grads[1].shape == delta.shape and grads[6].shape == bias.shape
    close(grads[1], ref["delta"].view(2, 2, 2, 24).sum(2), torch.float16, "ddelta (shared rows)")
    close(grads[6], ref["delta_bias"].view(2, 2).sum(1), torch.float16, "ddelta_bias (shared rows)")
    close(grads[0], ref["u"], torch.float16, "du")


def conv_case() -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 9, generator=g).transpose(1, 2).contiguous().transpose(1, 2)  # channel-last
    return {"x": x, "w": torch.randn(4, 4, generator=g), "b": torch.randn(4, generator=g),
            "init": torch.randn(2, 4, 3, generator=g), "dout": torch.randn(2, 4, 9, generator=g)}


def conv_ref(c: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    leaves = {k: c[k].double().requires_grad_(True) for k in ("x", "w", "b", "init")}
    out, final = causal_conv1d_ref(leaves["x"], leaves["w"], leaves["b"], leaves["init"], True, activation="silu")
    out.backward(c["dout"].double())
    return {"out": out.detach(), "final": final.detach(), **{k: v.grad for k, v in leaves.items()}}


def test_causal_conv1d_cuda_output_buffer_api(close: Callable[..., None]) -> None:
    c, ref = conv_case(), conv_ref(conv_case())
    out = torch.empty_like(c["x"])
    final = torch.empty(2, 3, 4).transpose(1, 2)
    assert causal_conv1d_cuda.causal_conv1d_fwd(c["x"], c["w"], c["b"], None, c["init"], out, final, True) is None
    close(out, ref["out"], torch.float32, "out")
    close(final, ref["final"], torch.float32, "final_states_out")
    dx, dw, db = torch.empty_like(c["x"]), torch.zeros(4, 4), torch.zeros(4)
    dinit = torch.empty(2, 3, 4).transpose(1, 2)
    assert causal_conv1d_cuda.causal_conv1d_bwd(c["x"], c["w"], c["b"], c["dout"], None, c["init"], None,
                                                dx, dw, db, dinit, True) is None
    for name, got in (("x", dx), ("w", dw), ("b", db), ("init", dinit)):
        close(got, ref[name], torch.float32, f"d{name}")
    state, out1 = torch.zeros(2, 4, 3), torch.empty(2, 4, 1)
    assert causal_conv1d_cuda.causal_conv1d_update(c["x"][:, :, :1], state, c["w"], c["b"], out1, True,
                                                   None, None) is None
    close(out1, F.silu(c["x"][:, :, :1] * c["w"][:, 3:] + c["b"][:, None]), torch.float32, "update out")


def test_causal_conv1d_cuda_legacy_returning_api(close: Callable[..., None]) -> None:
    c, ref = conv_case(), conv_ref(conv_case())
    final = torch.empty(2, 3, 4).transpose(1, 2)
    out = causal_conv1d_cuda_legacy.causal_conv1d_fwd(c["x"], c["w"], c["b"], None, c["init"], final, True)
    close(out, ref["out"], torch.float32, "out")
    close(final, ref["final"], torch.float32, "final_states_out")
    dxz = torch.full((2, 8, 9), float("nan"))
    dx_view = dxz.chunk(2, dim=1)[0]
    dx, dw, db, dinit = causal_conv1d_cuda_legacy.causal_conv1d_bwd(
        c["x"], c["w"], c["b"], c["dout"], None, c["init"], None, dx_view, True, True)
    assert dx.data_ptr() == dx_view.data_ptr()
    close(dxz[:, :4], ref["x"], torch.float32, "dx written into the caller's buffer")
    for name, got in (("w", dw), ("b", db), ("init", dinit)):
        close(got, ref[name], torch.float32, f"d{name}")
    none_init = causal_conv1d_cuda_legacy.causal_conv1d_bwd(
        c["x"], c["w"], None, c["dout"], None, None, None, None, False, False)
    assert none_init[2] is None and none_init[3] is None
    out1 = causal_conv1d_cuda_legacy.causal_conv1d_update(c["x"][:, :, :1], torch.zeros(2, 4, 3), c["w"], c["b"],
                                                          True, None)
    assert out1.shape == (2, 4, 1)


@pytest.fixture
def clean_extension_names() -> Iterator[None]:
    """The extension names in sys.modules as they were, whatever install() put there."""
    before = {name: sys.modules.pop(name, None) for name in standins.MODULES}
    yield
    for name, module in before.items():
        sys.modules.pop(name, None)
        if module is not None:
            sys.modules[name] = module


@pytest.mark.usefixtures("clean_extension_names")
def test_install_puts_standins_under_the_extension_names() -> None:
    from jetson_mamba.ops._compiled import load_extension

    for name in ("selective_scan_cuda", "causal_conv1d_cuda"):
        try:
            load_extension(name)
        except ImportError:
            continue
        pytest.skip(f"the compiled {name} is installed here; install() rightly leaves it alone")
    installed = standins.install(legacy_causal_conv1d=True)
    assert set(installed) == {"selective_scan_cuda", "causal_conv1d_cuda", "selective_scan_cuda_core",
                              "selective_scan_cuda_oflex"}
    import causal_conv1d_cuda as ext  # type: ignore[import-not-found]

    assert ext is causal_conv1d_cuda_legacy and ext.__jetson_mamba_standin__
    assert standins.install(["selective_scan_cuda"]) == ["selective_scan_cuda"]  # a stand-in is never "real"
    with pytest.raises(ValueError, match="no stand-in"):
        standins.install(["flash_attn_cuda"])
    from jetson_mamba.ops.selective_scan import cuda as scan_cuda

    assert "stand-in" in str(scan_cuda.is_available(torch.device("cuda"), torch.float16))


INNER_SCRIPT = r"""
import importlib.util, sys
import torch
from jetson_mamba.ops import standins
standins.install(["selective_scan_cuda", "causal_conv1d_cuda"], legacy_causal_conv1d=sys.argv[1] == "legacy")
# mamba_ssm/__init__ pulls in the models (transformers API drift is the patch layer's business):
# load the package without running its __init__, then its real ops module.
sys.modules["mamba_ssm"] = importlib.util.module_from_spec(importlib.util.find_spec("mamba_ssm"))
import mamba_ssm.ops.selective_scan_interface as ssi
from causal_conv1d.causal_conv1d_interface import causal_conv1d_ref
from jetson_mamba.ops.selective_scan.naive import chunk_states_ref, selective_scan_ref

torch.manual_seed(0)
torch.set_default_dtype(torch.float64)
b, d, L, n, r = 2, 8, 33, 4, 2
params = [torch.randn(b, 2 * d, L), torch.randn(d, 1, 4), torch.randn(d), torch.randn(r + 2 * n, d) / 3,
          torch.randn(d, r), torch.randn(d, d), None, -torch.rand(d, n) - 0.5, None, None, torch.randn(d),
          torch.randn(d)]
leaves = [p.requires_grad_(True) if p is not None else None for p in params]
weights = torch.randn(b, L, d)

def run(fn):
    out = fn(*leaves, delta_softplus=True)
    (out * weights).sum().backward()
    grads = [p.grad.clone() for p in leaves if p is not None]
    for p in leaves:
        if p is not None:
            p.grad = None
    return [out.detach()] + grads

fused = run(ssi.mamba_inner_fn)  # stand-ins: in-place dz / dx into one dxz tensor
ssi.causal_conv1d_fn = lambda x, w, bias, activation: causal_conv1d_ref(x, w, bias, activation=activation)
ssi.selective_scan_fn = selective_scan_ref  # plain autograd through the float64 reference
reference = run(ssi.mamba_inner_ref)
worst = max(((a - e).abs().max() / e.abs().max()).item() for a, e in zip(fused, reference))
print("worst relative error", worst)
# float64 throughout, except that causal-conv1d >= 1.5.1 hands the kernel float32 dweight/dbias
# buffers (as on the GPU): ~1e-8. A stand-in that ignored a caller's buffer gives O(1) errors.
assert worst < (1e-10 if sys.argv[1] == "legacy" else 1e-6), worst
"""


@pytest.mark.slow
@pytest.mark.parametrize("versions", [("2.2.4", "1.4.0", "legacy"), ("2.3.2.post1", "1.6.0", "new")],
                         ids=["2.2.4+1.4.0-legacy", "2.3.2+1.6.0-buffers"])
def test_unmodified_mamba_inner_fn_runs_on_the_standins(versions: tuple, pair_venv: Callable,
                                                        tmp_path: Path) -> None:
    """Real upstream mamba_inner_fn (installed from the sdists, no kernels) against its float64 reference."""
    mamba, conv, style = versions
    python = pair_venv(mamba, conv, tag=f"inner-{style}")
    script = tmp_path / "inner.py"
    script.write_text(INNER_SCRIPT)
    proc = subprocess.run([str(python), str(script), style], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    assert "worst relative error" in proc.stdout
