"""ONNX export of whole Mamba-YOLO models with standard ONNX ops only, and its checks against PyTorch.

The selective scan has no ONNX op; while `torch.onnx.export` runs, SS2D switches to a time-major
chunked scan of plain ops (Exp, Mul, Add, MatMul, Split, Concat; see
`scan._export_cross_selective_scan`): no Loop, static shapes, so the file runs on ONNX Runtime and
converts with TensorRT (`trtexec --onnx=model.onnx --fp16`) without plugins.
"""

from __future__ import annotations

import copy
import inspect
import statistics
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import torch

from jetson_mamba.errors import MissingDependencyError, VerificationError
from jetson_mamba.models.mamba_yolo import scan

STANDARD_DOMAINS = ("", "ai.onnx")
DEFAULT_OPSET = 17
MAX_LOOP_TRIPS = 64  # the longest Loop/Scan a deployable graph may hold
UNKNOWN_TRIPS = -1


def export_ready(model: torch.nn.Module) -> torch.nn.Module:
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


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError as error:
        raise MissingDependencyError("onnx is not installed", "pip install 'jetson-mamba[onnx]'") from error
    return onnx


def exporter_kwargs(export: Callable[..., Any]) -> Dict[str, Any]:
    """dynamo=False (the TorchScript exporter, whose graph we check) where `export` takes it: torch < 2.5
    has no such argument and rejects it (JetPack 5 and 6.0 ship such torch); there it is the only one."""
    return {"dynamo": False} if "dynamo" in inspect.signature(export).parameters else {}


def export_onnx(model: torch.nn.Module, file: Path, imgsz: int = 640, batch: int = 1,
                opset: int = DEFAULT_OPSET, chunk: int = scan.EXPORT_CHUNK) -> Path:
    """Write `model` (an ultralytics DetectionModel or any Mamba-YOLO module) to `file`; returns it.

    The graph is for this imgsz and batch only (static shapes); `chunk` bounds the scan's unrolled steps.
    """
    _import_onnx()  # torch.onnx needs it
    model = export_ready(model)
    images = torch.zeros(batch, 3, imgsz, imgsz)
    file.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad(), scan.export_chunk(chunk):
        warnings.simplefilter("ignore")  # tracer warnings about Python values turned into constants
        torch.onnx.export(model, (images,), str(file), opset_version=opset, input_names=["images"],
                          output_names=["output0"], **exporter_kwargs(torch.onnx.export))
    fold_constants(file)
    foreign = nonstandard_ops(file)
    if foreign:
        raise VerificationError(f"the exported graph {file} uses non-standard ops: {', '.join(foreign)}",
                                "report this as a bug: every op must be in the default ONNX domain")
    return file


def _graphs(graph: Any) -> Iterator[Any]:
    """The graph and every subgraph (Loop, Scan and If bodies), depth first."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from _graphs(attribute.g)
            for sub in attribute.graphs:
                yield from _graphs(sub)


def _op_name(node: Any) -> str:
    return node.op_type if node.domain in STANDARD_DOMAINS else f"{node.domain}::{node.op_type}"


def op_counts(file: Path) -> Dict[str, int]:
    """Op type -> number of nodes, subgraphs included (custom-domain ops as 'domain::Op'), most first."""
    onnx = _import_onnx()
    counts = Counter(_op_name(n) for g in _graphs(onnx.load(str(file)).graph) for n in g.node)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def onnx_ops(file: Path) -> List[str]:
    """Every op type in the file, including Loop/If bodies (custom-domain ops as 'domain::Op')."""
    return sorted(op_counts(file))


def nonstandard_ops(file: Path) -> List[str]:
    return [op for op in onnx_ops(file) if "::" in op]


def _constants(graph: Any) -> Dict[str, Any]:
    from onnx import numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attribute.t)
    return values


FOLD_MAX_ELEMENTS = 4096  # results larger than this and than their inputs (zeros, Expand) stay computed


def fold_constants(file: Path) -> Path:
    """Rewrite `file` with its shape arithmetic computed: Shape of a statically shaped value and every
    node whose inputs are all constants (and whose result is small) become Constants (evaluated by onnx's reference runtime),
    unused nodes go. The tracer leaves such arithmetic behind (ultralytics' head splits with chunk);
    folded, every value in the graph has a static shape that shape inference and TensorRT can see."""
    onnx = _import_onnx()
    import numpy as np
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    model = onnx.shape_inference.infer_shapes(onnx.load(str(file)), data_prop=True)
    graph = model.graph
    dims = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
            for v in list(graph.value_info) + list(graph.input) if v.type.tensor_type.HasField("shape")}
    constants = _constants(graph)
    nodes = []
    for node in graph.node:
        value: Optional[Any] = None
        if node.op_type == "Shape" and None not in dims.get(node.input[0], [None]):
            bounds = {a.name: a.i for a in node.attribute}
            shape = dims[node.input[0]][bounds.get("start", 0):bounds.get("end", len(dims[node.input[0]]))]
            value = np.array(shape, dtype=np.int64)
        elif (node.op_type != "Constant" and node.domain in STANDARD_DOMAINS and len(node.output) == 1
              and all(name in constants for name in node.input if name)):
            feeds = {name: constants[name] for name in node.input if name}
            value = np.asarray(ReferenceEvaluator(node).run(None, feeds)[0])
        inputs = sum(constants[name].size for name in node.input if name in constants)
        if value is not None and value.size <= max(FOLD_MAX_ELEMENTS, inputs):  # never a larger file
            constants[node.output[0]] = value
            node = helper.make_node("Constant", [], [node.output[0]], name=node.name,
                                    value=numpy_helper.from_array(value, node.output[0]))
        nodes.append(node)
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(nodes):  # the exporter writes nodes in topological order
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    del graph.value_info[:]
    initializers = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    onnx.save(model, str(file))
    return file


def loop_trips(file: Path) -> List[int]:
    """Trip count of every Loop and Scan in the file, subgraphs included (UNKNOWN_TRIPS when not static)."""
    onnx = _import_onnx()
    model = onnx.shape_inference.infer_shapes(onnx.load(str(file)))
    trips: List[int] = []
    for graph in _graphs(model.graph):
        constants = _constants(graph)
        shapes = {v.name: [d.dim_value if d.HasField("dim_value") else UNKNOWN_TRIPS
                           for d in v.type.tensor_type.shape.dim]
                  for v in list(graph.value_info) + list(graph.input)}
        for node in graph.node:
            if node.op_type == "Loop":
                bound = constants.get(node.input[0]) if node.input and node.input[0] else None
                trips.append(int(bound.reshape(-1)[0]) if bound is not None else UNKNOWN_TRIPS)
            elif node.op_type == "Scan":
                axes = [a.ints for a in node.attribute if a.name == "scan_input_axes"]
                n_state = len(node.input) - next(a.i for a in node.attribute if a.name == "num_scan_inputs")
                dims = shapes.get(node.input[n_state], [])
                axis = axes[0][0] if axes else 0
                trips.append(dims[axis] if len(dims) > axis else UNKNOWN_TRIPS)
    return trips


def dynamic_values(file: Path) -> List[str]:
    """Names of graph inputs, outputs and inferred intermediates whose shape is not fully static."""
    onnx = _import_onnx()
    model = onnx.shape_inference.infer_shapes(onnx.load(str(file)), strict_mode=True, data_prop=True)
    graph = model.graph
    produced = {o for n in graph.node for o in n.output}
    typed = {v.name: v for v in list(graph.value_info) + list(graph.output) + list(graph.input)}
    loose = [name for name in sorted(produced | {i.name for i in graph.input})
             if name in typed and not all(d.HasField("dim_value") for d in typed[name].type.tensor_type.shape.dim)]
    return loose + sorted(name for name in produced if name and name not in typed)


def check_graph(file: Path) -> Dict[str, Any]:
    """The deployability facts: full ONNX checker, no non-standard op, no long loop, static shapes."""
    onnx = _import_onnx()
    onnx.checker.check_model(str(file), full_check=True)
    trips = loop_trips(file)
    long = [t for t in trips if t == UNKNOWN_TRIPS or t > MAX_LOOP_TRIPS]
    if long:
        raise VerificationError(f"{file} holds loops of {long} trips (unknown: {UNKNOWN_TRIPS})",
                                f"report this as a bug: a deployable graph has no loop over {MAX_LOOP_TRIPS} trips")
    dynamic = dynamic_values(file)
    if dynamic:
        raise VerificationError(f"{file} has {len(dynamic)} values of non-static shape, e.g. {dynamic[:3]}",
                                "report this as a bug: the export is for one fixed input size")
    return {"checker": "full_check passed", "loops": trips, "static_shapes": True}


def to_fp16(src: Path, dst: Path) -> Path:
    """An fp16 copy of an exported fp32 graph (fp32 input and output, fp16 inside); returns dst.

    Float initializers, Constant values, ConstantOfShape values and Cast targets become fp16; Resize's
    roi and scales stay fp32 (the spec allows only float there).
    """
    onnx = _import_onnx()
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    keep = {name for n in graph.node if n.op_type == "Resize" for name in n.input[1:3] if name}

    def half(tensor: Any, name: str) -> Any:
        if tensor.data_type != TensorProto.FLOAT or name in keep:
            return tensor
        return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), tensor.name)

    for i, init in enumerate(list(graph.initializer)):
        graph.initializer[i].CopyFrom(half(init, init.name))
    for node in graph.node:
        for attribute in node.attribute:
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i == TensorProto.FLOAT:
                attribute.i = TensorProto.FLOAT16
            elif attribute.HasField("t"):
                attribute.t.CopyFrom(half(attribute.t, node.output[0]))
    for value, to, position in ((graph.input, TensorProto.FLOAT16, 0), (graph.output, TensorProto.FLOAT, None)):
        for io in value:
            inner = f"{io.name}_fp16"
            for node in graph.node:
                names = node.input if position == 0 else node.output
                for j, name in enumerate(names):
                    if name == io.name:
                        names[j] = inner
            cast = (helper.make_node("Cast", [io.name], [inner], to=to) if position == 0
                    else helper.make_node("Cast", [inner], [io.name], to=to))
            if position == 0:
                graph.node.insert(0, cast)
            else:
                graph.node.append(cast)
    del graph.value_info[:]
    onnx.save(model, str(dst))
    return dst


def ort_session(file: Path, threads: int) -> Any:
    try:
        import onnxruntime
    except ImportError as error:
        raise MissingDependencyError("onnxruntime is not installed", "pip install 'jetson-mamba[onnx]'") from error
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # no warnings about fp16 ops it runs in fp32
    return onnxruntime.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])


def check_onnx(file: Path, model: torch.nn.Module, images: torch.Tensor, threads: int = 0) -> float:
    """Relative error ||onnxruntime - torch|| / ||torch|| of the export head's output on `images`
    (onnxruntime with all its graph optimizations)."""
    with torch.no_grad():
        ref = export_ready(model)(images)
    ref = (ref[0] if isinstance(ref, (list, tuple)) else ref).double()
    session = ort_session(file, threads)
    out = torch.from_numpy(session.run(None, {"images": images.numpy()})[0]).double()
    if out.shape != ref.shape:
        raise VerificationError(f"ONNX output shape {tuple(out.shape)} != PyTorch {tuple(ref.shape)}",
                                "export again with the same imgsz and batch as the check")
    return float((out - ref).norm() / ref.norm().clamp_min(1e-30))


def _median_ms(run: Callable[[], Any], repeats: int) -> float:
    run()  # warm-up: first-call allocations and kernel choices
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def latency_ms(file: Path, model: torch.nn.Module, images: torch.Tensor, threads: int = 2,
               repeats: int = 3) -> Dict[str, float]:
    """Median latency (ms) of onnxruntime on `file` and of PyTorch eager on `model`, same threads and input.

    PyTorch runs on whichever selective-scan backend dispatch picks (`JETSON_MAMBA_BACKEND` forces one).
    """
    session = ort_session(file, threads)
    feed = {"images": images.numpy()}
    eager = export_ready(model)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            torch_ms = _median_ms(lambda: eager(images), repeats)
        onnx_ms = _median_ms(lambda: session.run(None, feed), repeats)
    finally:
        torch.set_num_threads(previous)
    return {"onnxruntime_ms": round(onnx_ms, 1), "torch_ms": round(torch_ms, 1),
            "ratio": round(onnx_ms / torch_ms, 3), "threads": threads}
