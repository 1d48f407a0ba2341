"""Mamba-YOLO-T through torch.compile(fullgraph=True) and torch.export: the eager values and gradients, on the
torch backend here and on the Triton kernels under TRITON_INTERPRET=1 (a subprocess: the flag is read at
import); CUDA graphs (mode="reduce-overhead") on the GPU. Without the custom ops (torch < 2.4) it runs eagerly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, List, Tuple

import pytest
import torch

from interpreted import pytest_interpreted
from jetson_mamba.models.mamba_yolo.standalone import build_detector
from jetson_mamba.ops import _library

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
needs_custom_ops = pytest.mark.skipif(not _library.ENABLED, reason="torch < 2.4 has no torch.library.custom_op")
IMAGE = 32  # the smallest size with a 1x1 map at stride 32; batch 2, so BatchNorm trains there too


def _model_and_images(batch: int = 2, image: int = IMAGE) -> Tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    images = torch.rand(batch, 3, image, image, generator=torch.Generator().manual_seed(1))
    return build_detector("t", nc=4), images.requires_grad_()


def _forward_backward(model: torch.nn.Module, net: Callable[[torch.Tensor], List[torch.Tensor]],
                      images: torch.Tensor) -> List[torch.Tensor]:
    """The detection maps and the gradients of their sum (images and every trained parameter)."""
    model.zero_grad()
    images.grad = None
    maps = net(images)
    sum(m.sum() for m in maps).backward()
    return [m.detach() for m in maps] + [images.grad] + [p.grad for p in model.parameters() if p.requires_grad]


def _worst(a: List[torch.Tensor], b: List[torch.Tensor]) -> float:
    assert len(a) == len(b) and all(x.shape == y.shape for x, y in zip(a, b))
    return max(((x - y).abs().max() / (y.abs().max() + 1e-12)).item() for x, y in zip(a, b))


def _our_ops(program: torch.export.ExportedProgram) -> List[str]:
    return sorted({str(n.target) for g in program.graph_module.modules() if isinstance(g, torch.fx.GraphModule)
                   for n in g.graph.nodes if str(n.target).startswith("jetson_mamba.")})


@pytest.mark.slow
@needs_custom_ops
def test_compile_and_export_equal_eager(choose_backend: Callable[[str], None]) -> None:
    """Training mode, forward and backward of a sum, through one fullgraph compile; export in eval mode."""
    choose_backend("triton" if INTERPRET else "torch")
    model, images = _model_and_images()
    eager = _forward_backward(model, model, images)
    torch._dynamo.reset()
    compiled = _forward_backward(model, torch.compile(model, fullgraph=True, backend="aot_eager"), images)
    assert all(g is not None for g in eager) and len(eager) == len(compiled)
    assert _worst(compiled, eager) < 1e-5
    model.eval()
    with torch.no_grad():
        program = torch.export.export(model, (images.detach(),))
        assert _worst(program.module()(images.detach()), model(images.detach())) < 1e-6
    assert _our_ops(program) == ["jetson_mamba.selective_scan_fwd.default"]


OFF = """
import sys, torch
sys.path[:0] = sys.argv[1:3]  # this folder and tests/ (interpreted.py)
from test_mamba_yolo_compile import _forward_backward, _model_and_images
from jetson_mamba.ops import _library, use_backend
torch.set_num_threads(int(sys.argv[4]))  # the parent's: OMP_NUM_THREADS may differ here (ultralytics sets 1)
assert not _library.ENABLED and not hasattr(torch.ops.jetson_mamba, "selective_scan_fwd")
with use_backend("torch"):
    model, images = _model_and_images()
    torch.save(_forward_backward(model, model, images), sys.argv[3])
"""


def test_without_custom_ops_trains_eagerly_with_the_same_numbers(choose_backend: Callable[[str], None],
                                                                tmp_path: Path) -> None:
    """JETSON_MAMBA_CUSTOM_OPS=0 (as torch < 2.4 gets): no op is registered, the model trains through the
    autograd.Functions, with the numbers of this process (custom ops registered). Exactly: same threads, and
    BatchNorm on 1x1 maps at batch 2 turns any other summation order into large differences."""
    choose_backend("torch")
    model, images = _model_and_images()
    want = _forward_backward(model, model, images)
    env = dict(os.environ, JETSON_MAMBA_CUSTOM_OPS="0")
    out = tmp_path / "off.pt"
    proc = subprocess.run([sys.executable, "-c", OFF, str(Path(__file__).parent), str(Path(__file__).parents[1]), str(out),
                           str(torch.get_num_threads())], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _worst(torch.load(out), want) == 0.0


@pytest.mark.slow
@needs_custom_ops
@pytest.mark.skipif(INTERPRET, reason="this is the outer runner")
def test_compile_and_export_under_the_triton_interpreter() -> None:
    """The same test with the Triton kernels inside the custom ops (interpreted on the CPU)."""
    pytest.importorskip("triton")
    out = pytest_interpreted(str(Path(__file__)), "-k", "test_compile_and_export_equal_eager", cwd=Path(__file__).parent)
    assert "1 passed" in out, out[-2000:]


@pytest.mark.gpu
@needs_custom_ops
def test_reduce_overhead_equals_eager_on_the_gpu(choose_backend: Callable[[str], None],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Mamba-YOLO-T at batch 1, 640x640, fp16 autocast, on the Triton kernels: CUDA graphs replay the eager maps."""
    choose_backend("triton")
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    model, images = _model_and_images(batch=1, image=640)
    model, images = model.cuda().eval(), images.detach().cuda()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        want = [m.float() for m in model(images)]
        graphed = torch.compile(model, mode="reduce-overhead", fullgraph=True)
        for _ in range(3):  # warm-up, recording, then a replay
            got = [m.float() for m in graphed(images)]
    assert _worst(got, want) < 2e-2
