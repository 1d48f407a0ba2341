"""Mamba-YOLO inside the real ultralytics: YAML parsing, parameter counts, training, prediction, ONNX export."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any, Dict, Tuple

import pytest
import torch

from jetson_mamba.cli import main
from jetson_mamba.errors import MissingDependencyError
from jetson_mamba.models import mamba_yolo
from jetson_mamba.models.mamba_yolo import integration

pytest.importorskip("ultralytics")

# Parameter counts of our configs (nc=80). B equals the original Mamba-YOLO-B.yaml's own summary
# (21.8M); the paper quotes 5.8M / 19.1M / 57.6M for T / B / L.
EXPECTED_PARAMS = {"t": 6_131_704, "b": 21_828_000}


@pytest.fixture(scope="module")
def yolo_t() -> Any:
    mamba_yolo.register()
    from ultralytics import YOLO

    return YOLO("mamba-yolo-t.yaml")


def _parsed(scale: str) -> Tuple[torch.nn.Sequential, Dict[str, Any]]:
    """parse_model output without DetectionModel's stride forward (cheap even for L)."""
    import ultralytics.nn.tasks as tasks

    mamba_yolo.register()
    d = tasks.yaml_model_load(f"mamba-yolo-{scale}.yaml")
    layers, _ = tasks.parse_model(d, ch=3, verbose=False)
    return layers, d


def test_register_is_idempotent_and_shipped_config_resolves() -> None:
    import ultralytics.nn.tasks as tasks

    mamba_yolo.register()
    first = tasks.parse_model
    mamba_yolo.register()
    assert tasks.parse_model is first
    assert tasks.VSSBlock is mamba_yolo.VSSBlock
    d = tasks.yaml_model_load("mamba-yolo-l.yaml")
    assert d["scale"] == "l" and d["scales"]["l"] == [0.67, 0.75, 768]


def test_parse_rules_scale_widths_and_pass_repeats() -> None:
    layers, _ = _parsed("l")
    stem, vss = layers[0], layers[1]
    assert isinstance(stem, mamba_yolo.SimpleStem) and stem.conv[3].out_channels == 96  # 128 * 0.75
    assert isinstance(vss, torch.nn.Sequential) and len(vss) == 2  # VSSBlock x round(3 * 0.67)
    assert vss[0].proj_conv[0].in_channels == 96 and vss[0].proj_conv[0].out_channels == 96
    assert isinstance(layers[6], mamba_yolo.VisionClueMerge) and layers[6].pw_linear[0].out_channels == 576
    assert layers[6].pw_linear[0].in_channels == 4 * 384  # c1 = ch[f] of the 512 * 0.75 stage
    xss = layers[11]
    assert isinstance(xss, mamba_yolo.XSSBlock) and len(xss.ss2d) == 2  # n goes into XSSBlock, not a Sequential
    assert xss.hidden_dim == 384 and xss.in_proj[0].in_channels == 576 + 384  # concat of P5-up and P4


@pytest.mark.parametrize("scale", sorted(EXPECTED_PARAMS))
def test_parameter_counts(scale: str) -> None:
    layers, _ = _parsed(scale)
    assert sum(p.numel() for p in layers.parameters()) == EXPECTED_PARAMS[scale]


def test_original_repository_yaml_builds(tmp_path: Path) -> None:
    """A YAML in the original repo's own form (its scale key 'B', CamelCase file name) parses too."""
    import ultralytics.nn.tasks as tasks
    import yaml

    config = yaml.safe_load(integration.config_path("b").read_text())
    config["scales"] = {"B": config["scales"]["b"]}
    file = tmp_path / "Mamba-YOLO-B.yaml"
    file.write_text(yaml.safe_dump(config))
    mamba_yolo.register()
    layers, _ = tasks.parse_model(tasks.yaml_model_load(str(file)), ch=3, verbose=False)
    assert sum(p.numel() for p in layers.parameters()) == EXPECTED_PARAMS["b"]


def test_older_inline_set_layout_is_patched() -> None:
    """ultralytics 8.1-8.3 wrote the parse rules as inline set literals in `if m in {...}`."""
    tree = ast.parse("def parse_model(d, ch):\n"
                     "    if m in {Classify, Conv, SPPF, C2f, C3}:\n"
                     "        if m in {BottleneckCSP, C2f, C3}:\n"
                     "            pass\n")
    integration._add_blocks_to_parse_rules(tree)
    sets = [sorted(e.id for e in n.elts) for n in ast.walk(tree) if isinstance(n, ast.Set)]
    assert {"SimpleStem", "VisionClueMerge", "VSSBlock", "XSSBlock"} <= set(sets[0])
    assert "XSSBlock" in sets[1] and "VSSBlock" not in sets[1]


def test_unknown_parse_model_layout_is_refused() -> None:
    with pytest.raises(MissingDependencyError, match="unknown layout"):
        integration._add_blocks_to_parse_rules(ast.parse("def parse_model(d, ch):\n    return {Conv}\n"))


def test_yolo_builds_and_runs(yolo_t: Any) -> None:
    model = yolo_t.model.eval()
    assert [type(m).__name__ for m in model.model[:3]] == ["SimpleStem", "VSSBlock", "VisionClueMerge"]  # n = round(3 * 0.33) = 1
    assert model.stride.tolist() == [8.0, 16.0, 32.0]
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64))
    assert out[0].shape == (1, 84, 8 * 8 + 4 * 4 + 2 * 2)


def test_standalone_detector_equals_ultralytics_model(yolo_t: Any) -> None:
    """The ultralytics-free builder has the same parameters, loads the ultralytics state_dict strictly,
    and computes the same head outputs (what the GPU latency benchmark runs where ultralytics is absent)."""
    from jetson_mamba.models.mamba_yolo.standalone import build_detector

    model = yolo_t.model.eval()
    standalone = build_detector("t").eval()
    standalone.load_state_dict(model.state_dict(), strict=True)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x)[1]
        maps = torch.cat([m.flatten(2) for m in standalone(x)], dim=2)
    for got, want in ((maps[:, :64], ref["boxes"]), (maps[:, 64:], ref["scores"])):
        assert float((got - want).norm() / want.norm()) < 1e-5


def _cli_json(capsys: pytest.CaptureFixture, *argv: str) -> Dict[str, Any]:
    capsys.readouterr()
    assert main(["yolo", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_train_predict_export_on_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture) -> None:
    """A few iterations of T on a synthetic set; reload the checkpoint and predict (API and CLI);
    export the trained model to ONNX (standard ops only) and compare onnxruntime with PyTorch."""
    monkeypatch.chdir(tmp_path)
    mamba_yolo.register()
    from ultralytics import YOLO

    data = Path(_cli_json(capsys, "dataset", str(tmp_path / "data"), "--count", "4")["data"])
    model = YOLO("mamba-yolo-t.yaml")
    model.train(data=str(data), epochs=1, imgsz=64, batch=2, workers=0, device="cpu", plots=False, amp=False,
                project=str(tmp_path / "runs"), name="t", exist_ok=True, verbose=False, val=False)
    weights = tmp_path / "runs" / "t" / "weights" / "last.pt"
    assert weights.is_file()
    trained = YOLO(str(weights))
    assert trained.model.names == {0: "box"}
    results = trained.predict(str(tmp_path / "data" / "images" / "val" / "0.jpg"), imgsz=64, conf=0.0,
                              device="cpu", save=False, verbose=False)
    boxes = results[0].boxes
    assert boxes is not None and boxes.xyxy.shape[-1] == 4 and len(boxes) > 0
    assert torch.isfinite(boxes.xyxy).all()

    image = str(tmp_path / "data" / "images" / "val" / "1.jpg")
    found = _cli_json(capsys, "predict", "--model", str(weights), "--source", image, "--imgsz", "64", "--conf", "0")
    assert found["images"][0]["detections"] and found["images"][0]["detections"][0]["class"] == "box"

    pytest.importorskip("onnxruntime")
    onnx_file = tmp_path / "t.onnx"
    exported = _cli_json(capsys, "export", "--model", str(weights), "--imgsz", "64", "--output", str(onnx_file),
                         "--half", "--repeats", "1")
    assert exported["onnx"] == str(onnx_file) and onnx_file.is_file()
    assert exported["bytes"] == onnx_file.stat().st_size and exported["export_seconds"] > 0
    from jetson_mamba.models.mamba_yolo.export import op_counts

    ops = exported["ops"]  # op type -> count, the whole graph
    assert ops == op_counts(onnx_file) and sum(ops.values()) > 1000
    assert {"Exp", "MatMul", "Mul", "Add"} <= set(ops) and not {"Loop", "Scan", "If", "Shape"} & set(ops)
    assert not [op for op in ops if "::" in op]  # no custom-domain op anywhere
    assert exported["graph"] == {"checker": "full_check passed", "loops": [], "static_shapes": True}
    assert exported["relative_error_vs_torch"] < 1e-4
    assert exported["fp16"]["relative_error_vs_torch"] < 1e-2 and Path(exported["fp16"]["onnx"]).is_file()
    latency = exported["latency"]
    assert latency["onnxruntime_ms"] > 0 and latency["torch_ms"] > 0 and latency["threads"] == 2
    assert exported["tensorrt"].startswith(f"trtexec --onnx={onnx_file}")

    # ultralytics' own exporter takes the same standard-ops path, and its onnxruntime backend predicts.
    native = Path(trained.export(format="onnx", imgsz=64, simplify=False, device="cpu"))
    from jetson_mamba.models.mamba_yolo.export import nonstandard_ops

    assert nonstandard_ops(native) == []
    onnx_results = YOLO(str(native), task="detect").predict(image, imgsz=64, conf=0.0, device="cpu", verbose=False)
    assert len(onnx_results[0].boxes) > 0


def test_dataset_is_deterministic_and_refuses_a_non_empty_directory(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    first = _cli_json(capsys, "dataset", str(tmp_path / "a"), "--count", "2", "--size", "48")
    _cli_json(capsys, "dataset", str(tmp_path / "b"), "--count", "2", "--size", "48")
    for split in ("train", "val"):
        for i in range(2):
            label = Path("labels", split, f"{i}.txt")
            assert (tmp_path / "a" / label).read_text() == (tmp_path / "b" / label).read_text()
            cls, *box = (tmp_path / "a" / label).read_text().split()
            assert cls == "0" and all(0.0 < float(v) < 1.0 for v in box)
    assert "train: images/train" in Path(first["data"]).read_text()
    assert main(["yolo", "dataset", str(tmp_path / "a")]) == 2
    assert "not empty" in capsys.readouterr().err


def test_cli_missing_weights_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    assert main(["yolo", "predict", "--model", "missing.pt", "--source", "x.jpg"]) == 2
    assert "fix:" in capsys.readouterr().err


@pytest.mark.slow
def test_export_json_is_alone_on_stdout_and_quiet_drops_its_progress(tmp_path: Path) -> None:
    """A first run (fresh YOLO_CONFIG_DIR) makes ultralytics print its settings notice to stdout: with
    --json it goes to stderr and stdout is one JSON document. On a terminal (FORCE_COLOR makes rich treat
    stderr as one), -q drops the export's progress spinner."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "YOLO_CONFIG_DIR": str(tmp_path / "config"), "FORCE_COLOR": "1"}
    onnx_file = tmp_path / "t.onnx"
    done = subprocess.run([sys.executable, "-m", "jetson_mamba", "-q", "yolo", "export", "--model", "t", "--imgsz",
                           "32", "--no-check", "--output", str(onnx_file), "--json"],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["onnx"] == str(onnx_file)
    assert "Ultralytics Settings" in done.stderr  # the notice was printed, on stderr
    assert "exporting" not in done.stderr, done.stderr[-3000:]
