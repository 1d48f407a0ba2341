"""Mamba-YOLO blocks: strict checkpoint loading and output parity with the original, on every backend.

The fixtures in ../shared/fixtures/mamba_yolo_upstream hold the original implementation's
state_dicts (random weights and BatchNorm statistics), inputs and eval-mode outputs.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest
import torch

from jetson_mamba.errors import UsageError
from jetson_mamba.models import mamba_yolo
from jetson_mamba.models.mamba_yolo import scan

TOLERANCE = 1e-4
FIXTURE_DIR = "fixtures/mamba_yolo_upstream"
CASES = ["ss2d_basic", "ss2d_ratio1_nodtrank", "vssblock", "vssblock_rect", "xssblock_n2", "xssblock_proj",
         "simplestem", "visioncluemerge"]


def _load(shared: Path, case: str) -> Dict[str, Any]:
    return torch.load(shared / FIXTURE_DIR / f"{case}.pt", map_location="cpu", weights_only=False)


def _build(fixture: Dict[str, Any]) -> torch.nn.Module:
    module = getattr(mamba_yolo, fixture["module"])(**fixture["kwargs"])
    module.load_state_dict(fixture["state_dict"], strict=True)
    return module.eval()


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.detach().double(), ref.detach().double()
    return float((out - ref).norm() / ref.norm())


def test_fixture_index_covers_every_case(shared: Path) -> None:
    index = json.loads((shared / FIXTURE_DIR / "index.json").read_text())
    assert sorted(entry["case"] for entry in index) == sorted(CASES)
    for entry in index:
        module = _build(_load(shared, entry["case"]))
        assert len(module.state_dict()) == entry["state_dict_keys"]
        assert sum(p.numel() for p in module.parameters()) == entry["parameters"]


@pytest.mark.parametrize("case", CASES)
def test_parity_torch_backend(shared: Path, case: str, choose_backend: Callable[[str], None]) -> None:
    choose_backend("torch")
    fixture = _load(shared, case)
    with torch.no_grad():
        out = _build(fixture)(fixture["input"])
    assert out.shape == fixture["output"].shape
    assert _rel_err(out, fixture["output"]) < TOLERANCE


@pytest.mark.parametrize("chunk", [64, 5])
@pytest.mark.parametrize("case", CASES)
def test_parity_export_scan(shared: Path, case: str, chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The standard-ops scan that ONNX export uses computes the original's outputs too
    (chunk 5: many chunks, padding, several doubling steps of the carry scan)."""
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    fixture = _load(shared, case)
    with torch.no_grad(), scan.export_chunk(chunk):
        out = _build(fixture)(fixture["input"])
    assert _rel_err(out, fixture["output"]) < TOLERANCE


def test_export_scan_is_stable_over_long_sequences() -> None:
    """fp32, 6400 steps with decays down to exp(-200) per step and inputs up to 1e3: no inf/nan, and
    equal to the sequential float64 recurrence (a cumulative-sum formulation overflows here)."""
    gen = torch.Generator().manual_seed(1)
    batch, groups, dim, n, length = 1, 4, 8, 4, 6400
    u = torch.randn(batch, dim, length, generator=gen) * 1e3
    delta = torch.randn(batch, dim, length, generator=gen) * 3
    A = -torch.rand(dim, n, generator=gen) * 40 - 1e-3
    B, C = torch.randn(batch, groups, n, length, generator=gen), torch.randn(batch, groups, n, length, generator=gen)
    dt = torch.nn.functional.softplus(delta.double())
    h = torch.zeros(batch, dim, n, dtype=torch.float64)
    Bd, Cd = B.double().repeat_interleave(dim // groups, 1), C.double().repeat_interleave(dim // groups, 1)
    ref = torch.empty(batch, dim, length, dtype=torch.float64)
    for t in range(length):
        h = torch.exp(dt[..., t, None] * A.double()) * h + (dt[..., t] * u[..., t].double())[..., None] * Bd[..., t]
        ref[..., t] = (h * Cd[..., t]).sum(-1)
    out = scan.export_selective_scan(u, delta, A, B, C, None, None, True)
    assert torch.isfinite(out).all()
    assert _rel_err(out, ref) < 1e-5


@pytest.mark.parametrize("scale", ["t", "b", "l"])
def test_whole_model_export_scan_matches_torch_backend(scale: str, monkeypatch: pytest.MonkeyPatch, choose_backend: Callable[[str], None]) -> None:
    """Whole T/B/L detectors (random weights, 96x96): the export formulation == the torch backend."""
    from jetson_mamba.models.mamba_yolo.standalone import build_detector

    choose_backend("torch")
    torch.manual_seed(0)
    model = build_detector(scale).eval()
    images = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(images)
        monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
        out = model(images)
    for got, want in zip(out, ref):
        assert _rel_err(got, want) < TOLERANCE


TRITON_SCRIPT = """
import sys, torch
from jetson_mamba.models import mamba_yolo
fixture = torch.load(sys.argv[1], map_location="cpu", weights_only=False)
module = getattr(mamba_yolo, fixture["module"])(**fixture["kwargs"])
module.load_state_dict(fixture["state_dict"], strict=True)
with torch.no_grad():
    out = module.eval()(fixture["input"]).double()
ref = fixture["output"].double()
print(float((out - ref).norm() / ref.norm()))
"""


@pytest.mark.slow
def test_parity_triton_interpreter(shared: Path, tmp_path: Path) -> None:
    """Triton kernels under TRITON_INTERPRET=1 (a fresh process: the flag is read at import).

    The interpreter needs ~15 s for the smallest SS2D case on 2 cores, so only that case runs
    here; benchmarks/gpu/yolo_latency.py checks every case with real Triton on the GPU.
    """
    pytest.importorskip("triton")
    script = tmp_path / "triton_parity.py"
    script.write_text(TRITON_SCRIPT)
    env = dict(os.environ, TRITON_INTERPRET="1", JETSON_MAMBA_BACKEND="triton")
    result = subprocess.run([sys.executable, str(script), str(shared / FIXTURE_DIR / "ss2d_ratio1_nodtrank.pt")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert float(result.stdout.strip().splitlines()[-1]) < TOLERANCE


def test_export_scan_matches_dispatch_with_gradients(choose_backend: Callable[[str], None]) -> None:
    """Chunked standard-ops scan == selective_scan_fn (torch backend), values and gradients, L not a chunk multiple."""
    from jetson_mamba.ops import selective_scan_fn

    choose_backend("torch")
    gen = torch.Generator().manual_seed(0)
    batch, groups, dim, n, length = 2, 4, 8, 5, scan.EXPORT_CHUNK + 7

    def leaf(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen) * scale).requires_grad_()

    inputs: List[torch.Tensor] = [
        leaf(batch, dim, length), leaf(batch, dim, length, scale=0.5), (-torch.rand(dim, n, generator=gen) - 0.5),
        leaf(batch, groups, n, length), leaf(batch, groups, n, length), leaf(dim), leaf(dim, scale=0.1)]
    inputs[2].requires_grad_()
    grad = torch.randn(batch, dim, length, generator=gen)
    u, delta, A, B, C, D, bias = inputs
    ref = selective_scan_fn(u, delta, A, B, C, D=D, delta_bias=bias, delta_softplus=True)
    ref_grads = torch.autograd.grad(ref, inputs, grad)
    out = scan.export_selective_scan(u, delta, A, B, C, D, bias, True)
    out_grads = torch.autograd.grad(out, inputs, grad)
    assert _rel_err(out, ref) < 1e-5
    for got, want in zip(out_grads, ref_grads):
        assert _rel_err(got, want) < 1e-4


@pytest.mark.parametrize("d_conv", [0, 1, 2, 4])
def test_d_conv_fixes(d_conv: int) -> None:
    """The original breaks for d_conv < 2 and shrinks the map for even d_conv; here both keep H x W."""
    torch.manual_seed(0)
    block = mamba_yolo.SS2D(d_model=8, d_state=4, d_conv=d_conv).eval()
    assert hasattr(block, "conv2d") == (d_conv > 1)
    if d_conv > 1:
        assert tuple(block.conv2d.weight.shape) == (16, 1, d_conv, d_conv)
    x = torch.randn(1, 8, 5, 6)
    with torch.no_grad():
        out = block(x)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_d_conv_1_is_identity_conv(monkeypatch: pytest.MonkeyPatch) -> None:
    """d_conv < 2 means the activation feeds the scan directly: equal to an odd conv set to identity."""
    torch.manual_seed(0)
    plain = mamba_yolo.SS2D(d_model=8, d_state=4, d_conv=1).eval()
    conv = mamba_yolo.SS2D(d_model=8, d_state=4, d_conv=3).eval()
    missing = conv.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["conv2d.bias", "conv2d.weight"]
    with torch.no_grad():
        conv.conv2d.weight.zero_()
        conv.conv2d.weight[:, 0, 1, 1] = 1.0
        conv.conv2d.bias.zero_()
        x = torch.randn(2, 8, 4, 3)
        assert torch.allclose(plain(x), conv(x), atol=1e-6)


def test_noz_and_low_rank_variants_run() -> None:
    torch.manual_seed(0)
    for kwargs in ({"forward_type": "v2noz"}, {"forward_type": "v2nozact"}, {"ssm_rank_ratio": 1.0}):
        block = mamba_yolo.SS2D(d_model=8, d_state=4, **kwargs).eval()
        with torch.no_grad():
            assert block(torch.randn(1, 8, 3, 4)).shape == (1, 8, 3, 4)
    assert mamba_yolo.VSSBlock(8, 8, ssm_ratio=0.0)(torch.randn(1, 8, 3, 3)).shape == (1, 8, 3, 3)
    assert mamba_yolo.VisionClueMerge(4, 8)(torch.randn(1, 4, 5, 7)).shape == (1, 8, 3, 4)


def test_unknown_forward_type_is_a_clear_error() -> None:
    with pytest.raises(UsageError, match="forward_type"):
        mamba_yolo.SS2D(d_model=8, forward_type="v3")


def test_training_step_and_mixed_precision(shared: Path, choose_backend: Callable[[str], None]) -> None:
    """Gradients reach every parameter; bf16 autocast stays close to fp32 (the scan state stays fp32)."""
    choose_backend("torch")
    fixture = _load(shared, "vssblock")
    block = _build(fixture).train()
    block(fixture["input"]).square().mean().backward()
    missing = [name for name, p in block.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    block.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = block(fixture["input"])
    assert low.dtype == torch.bfloat16
    assert _rel_err(low.float(), fixture["output"]) < 3e-2
    # a model cast to bf16 as a whole (what `bench` and people do, not autocast) runs too
    with torch.no_grad():
        cast = copy.deepcopy(block).to(torch.bfloat16)(fixture["input"].bfloat16())
    assert cast.dtype == torch.bfloat16 and _rel_err(cast.float(), fixture["output"]) < 5e-2


def test_vmamba_core_calling_convention(shared: Path, monkeypatch: pytest.MonkeyPatch, choose_backend: Callable[[str], None]) -> None:
    """With a selective_scan_cuda_core present, SS2D calls its fwd/bwd with VMamba's signature.

    The real extension needs a GPU; jetson-mamba's stand-in has the same signature and return
    values, so it stands in for it here: outputs match the original, gradients match the dispatch.
    """
    from jetson_mamba.models.mamba_yolo import vmamba_core
    from jetson_mamba.ops.standins import selective_scan_cuda_core as standin

    choose_backend("")  # automatic, whatever JETSON_MAMBA_BACKEND says
    fixture = _load(shared, "ss2d_basic")
    assert vmamba_core.usable_core(torch.device("cpu"), torch.float32) is None  # never on the CPU
    grads = []
    for core in (None, standin):
        monkeypatch.setattr(vmamba_core, "usable_core", lambda device, dtype, core=core: core)
        block = _build(fixture)
        x = fixture["input"].clone().requires_grad_()
        out = block(x)
        assert _rel_err(out, fixture["output"]) < TOLERANCE
        out.square().sum().backward()
        grads.append([x.grad] + [p.grad for p in block.parameters()])
    for via_core, via_dispatch in zip(*grads):
        assert _rel_err(via_core, via_dispatch) < 1e-5


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton", "torch"])
def test_parity_on_gpu(shared: Path, backend: str, monkeypatch: pytest.MonkeyPatch, choose_backend: Callable[[str], None]) -> None:
    """Every fixture case on the GPU (TF32 off) with each selective-scan backend that can run there."""
    from jetson_mamba.ops import list_backends

    info = {i.name: i for i in list_backends("selective_scan", "cuda", torch.float32)}[backend]
    if not info.available:
        pytest.skip(f"{backend}: {info.reason}")
    choose_backend(backend)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    for case in CASES:
        fixture = _load(shared, case)
        with torch.no_grad():
            out = _build(fixture).cuda()(fixture["input"].cuda())
        assert _rel_err(out.cpu(), fixture["output"]) < TOLERANCE, case
