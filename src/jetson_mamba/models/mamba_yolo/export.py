"""ONNX export of whole Mamba-YOLO models with standard ONNX ops only, and its check against PyTorch.

The selective scan has no ONNX op; while `torch.onnx.export` runs, SS2D switches to a chunked
scan made of Loop, CumSum, Exp and MatMul (see `scan.export_selective_scan`), so the file runs on
ONNX Runtime and converts with TensorRT (`trtexec --onnx=model.onnx`) without plugins.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import List, Set

import torch

from jetson_mamba.errors import MissingDependencyError, VerificationError

STANDARD_DOMAINS = ("", "ai.onnx")
DEFAULT_OPSET = 17


def _export_ready(model: torch.nn.Module) -> torch.nn.Module:
    """A float32 eval copy whose ultralytics heads emit their single export tensor."""
    model = copy.deepcopy(model).float().eval()
    try:
        from ultralytics.nn.modules import Detect
    except ImportError:  # a bare block or backbone: nothing to switch
        return model
    for module in model.modules():
        if isinstance(module, Detect):
            module.export, module.format, module.dynamic = True, "onnx", False
    return model


def export_onnx(model: torch.nn.Module, file: Path, imgsz: int = 640, batch: int = 1,
                opset: int = DEFAULT_OPSET) -> Path:
    """Write `model` (an ultralytics DetectionModel or any Mamba-YOLO module) to `file`; returns it."""
    try:
        import onnx  # noqa: F401  (torch.onnx needs it)
    except ImportError as error:
        raise MissingDependencyError("onnx is not installed", "pip install 'jetson-mamba[onnx]'") from error
    model = _export_ready(model)
    images = torch.zeros(batch, 3, imgsz, imgsz)
    file.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python values turned into constants
        torch.onnx.export(model, (images,), str(file), opset_version=opset, dynamo=False,
                          input_names=["images"], output_names=["output0"])
    foreign = nonstandard_ops(file)
    if foreign:
        raise VerificationError(f"the exported graph {file} uses non-standard ops: {', '.join(foreign)}",
                                "report this as a bug: every op must be in the default ONNX domain")
    return file


def _graph_ops(graph: object, seen: Set[str]) -> Set[str]:
    for node in graph.node:  # type: ignore[attr-defined]
        seen.add(f"{node.domain}::{node.op_type}" if node.domain not in STANDARD_DOMAINS else node.op_type)
        for attribute in node.attribute:
            if attribute.HasField("g"):
                _graph_ops(attribute.g, seen)
            for sub in attribute.graphs:
                _graph_ops(sub, seen)
    return seen


def onnx_ops(file: Path) -> List[str]:
    """Every op type in the file, including Loop/If bodies (custom-domain ops as 'domain::Op')."""
    import onnx

    return sorted(_graph_ops(onnx.load(str(file)).graph, set()))


def nonstandard_ops(file: Path) -> List[str]:
    return [op for op in onnx_ops(file) if "::" in op]


def check_onnx(file: Path, model: torch.nn.Module, images: torch.Tensor) -> float:
    """Relative error ||onnxruntime - torch|| / ||torch|| of the export head's output on `images`."""
    try:
        import onnxruntime
    except ImportError as error:
        raise MissingDependencyError("onnxruntime is not installed", "pip install 'jetson-mamba[onnx]'") from error
    with torch.no_grad():
        ref = _export_ready(model)(images)
    ref = (ref[0] if isinstance(ref, (list, tuple)) else ref).double()
    session = onnxruntime.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    out = torch.from_numpy(session.run(None, {"images": images.numpy()})[0]).double()
    if out.shape != ref.shape:
        raise VerificationError(f"ONNX output shape {tuple(out.shape)} != PyTorch {tuple(ref.shape)}",
                                "export again with the same imgsz and batch as the check")
    return float((out - ref).norm() / ref.norm().clamp_min(1e-30))

