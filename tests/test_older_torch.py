"""jetson-mamba on older torch, in real venvs made by scripts/older_torch_venv.sh (cached under
~/.cache/jetson-mamba): 2.1.2 (older than 2.5 like JetPack 5 and 6.0; the first run downloads ~3.5 GB):
doctor, the torch backend ops against the naive references, Mamba-YOLO forward and `yolo export`;
2.13.0 (custom ops, but a dynamo that cannot trace ContextVar.get): our ops under torch.compile."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

OPS_AND_FORWARD = """
import torch
from jetson_mamba.ops import causal_conv1d_fn, selective_scan_fn
from jetson_mamba.ops.causal_conv1d.naive import causal_conv1d_ref
from jetson_mamba.ops.selective_scan.naive import selective_scan_ref
from jetson_mamba.models.mamba_yolo.standalone import build_detector

g = torch.Generator().manual_seed(0)
u, delta = torch.randn(2, 8, 300, generator=g), torch.randn(2, 8, 300, generator=g)
A = -torch.rand(8, 4, generator=g) - 0.5
B, C = torch.randn(2, 4, 300, generator=g), torch.randn(2, 4, 300, generator=g)
D, z = torch.randn(8, generator=g), torch.randn(2, 8, 300, generator=g)
def rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())
scan = rel(selective_scan_fn(u, delta, A, B, C, D=D, z=z, delta_softplus=True),
           selective_scan_ref(u, delta, A, B, C, D=D, z=z, delta_softplus=True))
w, b = torch.randn(8, 4, generator=g), torch.randn(8, generator=g)
conv = rel(causal_conv1d_fn(u, w, b, activation="silu"), causal_conv1d_ref(u, w, b, activation="silu"))
model = build_detector("t").eval()
with torch.no_grad():
    maps = model(torch.rand(1, 3, 64, 64, generator=g))
print(torch.__version__, scan, conv, [tuple(m.shape) for m in maps])
"""


COMPILED_OPS = """
import torch
from jetson_mamba.ops import causal_conv1d_fn, selective_scan_fn, use_backend
from jetson_mamba.ops import _library

g = torch.Generator().manual_seed(0)
x = torch.randn(2, 8, 40, generator=g, requires_grad=True)
w, delta = torch.randn(8, 4, generator=g), torch.rand(2, 8, 40, generator=g)
A, B, C = -torch.rand(8, 4, generator=g), torch.randn(2, 4, 40, generator=g), torch.randn(2, 4, 40, generator=g)
def block(x):
    return selective_scan_fn(causal_conv1d_fn(x, w, None, activation="silu"), delta, A, B, C, delta_softplus=True)
with use_backend("torch"):
    eager = block(x)
    (gx,) = torch.autograd.grad(eager.sum(), x)
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")(x)
    (cx,) = torch.autograd.grad(compiled.sum(), x)
from jetson_mamba.models.mamba_yolo.standalone import build_detector
model = build_detector("t").eval()
image = torch.rand(1, 3, 32, 32, generator=g)
with use_backend("torch"), torch.no_grad():
    maps = model(image)
    compiled_maps = torch.compile(model, fullgraph=True, backend="aot_eager")(image)
yolo = max(float((a - b).abs().max()) for a, b in zip(maps, compiled_maps))
print(torch.__version__, _library.ENABLED, float((eager - compiled).abs().max()), float((gx - cx).abs().max()), yolo)
"""


def _older_venv(version: str) -> str:
    made = subprocess.run(["bash", str(ROOT / "scripts" / "older_torch_venv.sh"), version], capture_output=True,
                          text=True, timeout=3600)
    assert made.returncode == 0, made.stderr[-3000:]
    return made.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_custom_ops_compile_fullgraph_on_torch_2_13(tmp_path: Path) -> None:
    """fullgraph=True failed on torch < 2.14 ("Dynamo does not know how to trace method `get` of class
    `ContextVar`": the backend choice; lab GPU, torch 2.11): the choice is now a traced constant there.
    Our ops (values and gradients) and Mamba-YOLO-T (whose scan asks for the choice too)."""
    python = _older_venv("2.13")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    result = subprocess.run([python, "-c", COMPILED_OPS], capture_output=True, text=True, timeout=600, env=env,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    version, enabled, out, grad, yolo = result.stdout.split()
    assert version.startswith("2.13.") and enabled == "True"
    assert float(out) < 1e-6 and float(grad) < 1e-5 and float(yolo) < 1e-4


@pytest.mark.slow
def test_doctor_ops_forward_and_export_on_torch_2_1(tmp_path: Path) -> None:
    python = _older_venv("2.1")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), JETSON_MAMBA_BACKEND="torch", YOLO_OFFLINE="1",
               YOLO_CONFIG_DIR=str(tmp_path), ULTRALYTICS_SKIP_REQUIREMENTS_CHECKS="1")

    def run(*args: str) -> str:
        result = subprocess.run([python, *args], capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    doctor = json.loads(run("-m", "jetson_mamba", "doctor", "--json"))
    assert doctor["torch"]["version"].startswith("2.1.2") and doctor["torch"]["error"] is None

    version, scan, conv, shapes = run("-c", OPS_AND_FORWARD).strip().split(" ", 3)
    assert version.startswith("2.1.2") and float(scan) < 1e-5 and float(conv) < 1e-5
    assert shapes == "[(1, 144, 8, 8), (1, 144, 4, 4), (1, 144, 2, 2)]"

    onnx_file = tmp_path / "t.onnx"
    out = run("-m", "jetson_mamba", "yolo", "export", "--model", "t", "--imgsz", "64", "--output", str(onnx_file),
              "--repeats", "1", "--json")
    exported = json.loads(out)  # stdout holds the JSON alone (ultralytics' first-run settings notice: stderr)
    assert onnx_file.is_file() and exported["graph"]["static_shapes"] and "Loop" not in exported["ops"]
    assert exported["relative_error_vs_torch"] < 1e-4
