"""The deployable ONNX export: torch-version-safe exporter call, loop-trip bound over subgraphs, static
shapes, op counts, fp16 copy, onnxruntime parity."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Dict, List

import pytest
import torch

from jetson_mamba.errors import VerificationError
from jetson_mamba.models import mamba_yolo
from jetson_mamba.models.mamba_yolo import export, scan

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402


def _ss2d() -> torch.nn.Module:
    torch.manual_seed(0)
    return mamba_yolo.SS2D(d_model=16, d_state=4).eval()


class _Stem(torch.nn.Module):
    """A 3-channel input for export_onnx's images, then one SS2D at 1/2 resolution."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, 2, 1)
        self.ss2d = _ss2d()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ss2d(self.conv(x))


def _legacy_export(calls: List[Dict[str, Any]]) -> Any:
    """torch.onnx.export as torch < 2.5 has it: no `dynamo` argument (passing one is a TypeError)."""
    real = torch.onnx.export

    def export_2_4(model: Any, args: Any, f: Any, export_params: bool = True, verbose: bool = False,
                   training: Any = None, input_names: Any = None, output_names: Any = None,
                   opset_version: Any = None, **kwargs: Any) -> Any:
        if "dynamo" in kwargs:
            raise TypeError("export() got an unexpected keyword argument 'dynamo'")
        calls.append(dict(kwargs, opset_version=opset_version))
        return real(model, args, f, input_names=input_names, output_names=output_names,
                    opset_version=opset_version, **export.exporter_kwargs(real))

    return export_2_4


def test_export_runs_on_a_torch_without_the_dynamo_argument(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """yolo export passed dynamo=False unconditionally, which torch < 2.5 rejects."""
    calls: List[Dict[str, Any]] = []
    monkeypatch.setattr(torch.onnx, "export", _legacy_export(calls))
    assert export.exporter_kwargs(torch.onnx.export) == {}
    file = export.export_onnx(_Stem(), tmp_path / "ss2d.onnx", imgsz=16)
    assert calls and file.is_file()


def test_exporter_kwargs_follow_the_signature() -> None:
    def new(model: Any, args: Any, f: Any, dynamo: bool = True) -> None: ...

    assert export.exporter_kwargs(new) == {"dynamo": False}
    expected = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    assert export.exporter_kwargs(torch.onnx.export) == expected


@pytest.mark.parametrize("imgsz, chunk", [(24, 64), (30, 8)])
def test_ss2d_export_is_static_loop_free_and_matches_torch(tmp_path: Path, imgsz: int, chunk: int) -> None:
    pytest.importorskip("onnxruntime")
    model = _Stem().eval()
    file = export.export_onnx(model, tmp_path / "m.onnx", imgsz=imgsz, chunk=chunk)
    assert export.check_graph(file) == {"checker": "full_check passed", "loops": [], "static_shapes": True}
    ops = export.op_counts(file)
    assert not {"Loop", "Scan", "If", "Shape"} & set(ops)
    steps = scan._chunk_plan((imgsz // 2) ** 2, chunk)[1]
    assert steps <= chunk and ops["Exp"] >= steps  # one per unrolled step (both passes share them)
    # ONNX Runtime's Softplus and its 6-D Transposes were ~20% of the T detector's time: the scan is
    # time-major (NCHW -> NHWC and back, the column directions' (H, W) swap and its undo), softplus exp-free
    assert "Softplus" not in ops and ops.get("Transpose", 0) <= 4
    images = torch.rand(1, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0))
    assert export.check_onnx(file, model, images) < 1e-5
    half = export.to_fp16(file, tmp_path / "m-fp16.onnx")
    export.check_graph(half)
    assert 1e-7 < export.check_onnx(half, model, images) < 1e-2  # really fp16 inside, still close
    weights = onnx.load(str(half)).graph.initializer
    assert weights and {t.data_type for t in weights if t.dims} == {TensorProto.FLOAT16}


def _loop(trips: int, name: str) -> Any:
    """A Loop node of `trips` trips whose body adds 1 to a carried value."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["v_in", "one"], ["v_out"])],
        f"{name}_body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1])],
        [helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])])
    trip = helper.make_node("Constant", [], [f"{name}_M"], value=helper.make_tensor("", TensorProto.INT64, [], [trips]))
    loop = helper.make_node("Loop", [f"{name}_M", "", "x"], [f"{name}_y"], body=body)
    return trip, loop


def _model_with_nested_loop(tmp_path: Path, trips: int) -> Path:
    """A top-level Loop of 3 trips and, inside an If branch, a Loop of `trips` trips."""
    inner_trip, inner = _loop(trips, "inner")
    then = helper.make_graph([inner_trip, inner], "then", [],
                             [helper.make_tensor_value_info("inner_y", TensorProto.FLOAT, [1])])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["same"])], "else", [],
                              [helper.make_tensor_value_info("same", TensorProto.FLOAT, [1])])
    outer_trip, outer = _loop(3, "outer")
    branch = helper.make_node("If", ["flag"], ["z"], then_branch=then, else_branch=other)
    graph = helper.make_graph(
        [outer_trip, outer, branch], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("outer_y", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [1])])
    file = tmp_path / "loops.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(file))
    return file


def test_loop_trips_are_found_inside_subgraphs(tmp_path: Path) -> None:
    file = _model_with_nested_loop(tmp_path, 100)
    assert sorted(export.loop_trips(file)) == [3, 100]
    assert export.op_counts(file) == {"Constant": 2, "Loop": 2, "Identity": 3, "Add": 2, "If": 1}
    with pytest.raises(VerificationError, match="loops of \\[100\\] trips"):
        export.check_graph(file)
    export.check_graph(_model_with_nested_loop(tmp_path, export.MAX_LOOP_TRIPS))  # 64 is allowed


def test_a_loop_without_a_static_trip_count_is_unbounded(tmp_path: Path) -> None:
    _, loop = _loop(1, "free")
    graph = helper.make_graph([helper.make_node("Constant", [], ["c"], value=helper.make_tensor(
        "", TensorProto.BOOL, [], [True])), helper.make_node("Loop", ["", "c", "x"], ["y"], body=loop.attribute[0].g)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    file = tmp_path / "while.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(file))
    assert export.loop_trips(file) == [export.UNKNOWN_TRIPS]
    with pytest.raises(VerificationError):
        export.check_graph(file)
