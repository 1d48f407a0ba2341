"""`jetson-mamba yolo`: build, train, predict with and export Mamba-YOLO through the real ultralytics."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List

NAME = "yolo"
HELP = ("Mamba-YOLO (T/B/L) with ultralytics: setup (installs ultralytics without touching torch), info "
        "(params, GFLOPs), train, predict, export to ONNX; dataset writes a tiny synthetic set for a smoke run")

SUBCOMMANDS = ("setup", "info", "train", "predict", "export", "dataset")
NEEDS_ULTRALYTICS = ("info", "train", "predict", "export")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output on stdout")
    parser.add_argument("--device", default=None,
                        help="torch device for ultralytics (cpu, 0, cuda:0; default: ultralytics' choice, "
                             "the first GPU if there is one)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="yolo_command", metavar="SUBCOMMAND")
    setup = sub.add_parser("setup", help="install ultralytics into this (or --python's) environment without "
                                         "letting pip install or change torch, torchvision, numpy or OpenCV")
    setup.add_argument("--python", help="the interpreter of the environment to set up (default: this one)")
    setup.add_argument("--dry-run", action="store_true", help="say what would be installed; change nothing")
    info = sub.add_parser("info", help="parameters and GFLOPs of the T/B/L configs next to the published ones")
    info.add_argument("--scale", choices=("t", "b", "l", "all"), default="all")
    info.add_argument("--imgsz", type=int, default=640, help="input size for the GFLOPs (default 640)")
    train = sub.add_parser("train", help="train on an ultralytics data.yaml")
    train.add_argument("--data", required=True, help="ultralytics dataset YAML (path, train, val, names)")
    train.add_argument("--model", default="t", help="scale (t, b, l), a model YAML, or a .pt to fine-tune")
    train.add_argument("--epochs", type=int, default=100, help="passes over the training set (default 100)")
    train.add_argument("--imgsz", type=int, default=640, help="square input size in pixels (default 640)")
    train.add_argument("--batch", type=int, default=16, help="images per step (default 16; -1: ultralytics "
                                                             "picks one that fits the GPU's memory)")
    train.add_argument("--workers", type=int, default=0, help="dataloader processes (0: in the main process)")
    train.add_argument("--project", default="runs/mamba-yolo", help="folder of the runs (default runs/mamba-yolo)")
    train.add_argument("--name", default="train", help="this run's folder name in --project (default train)")
    predict = sub.add_parser("predict", help="detect objects in images")
    predict.add_argument("--model", required=True, help="trained .pt (or a scale for an untrained smoke run)")
    predict.add_argument("--source", required=True, help="image file, folder or glob")
    predict.add_argument("--imgsz", type=int, default=640, help="square input size in pixels (default 640)")
    predict.add_argument("--conf", type=float, default=0.25, help="smallest confidence kept (default 0.25)")
    predict.add_argument("--save", action="store_true", help="also write annotated images (ultralytics runs dir)")
    export = sub.add_parser("export", help="ONNX with standard ops only (checked against PyTorch with onnxruntime)")
    export.add_argument("--model", required=True, help="trained .pt, a model YAML, or a scale (t, b, l)")
    export.add_argument("--output", type=Path, help="ONNX file to write (default: next to the weights)")
    export.add_argument("--imgsz", type=int, default=640)
    export.add_argument("--batch", type=int, default=1)
    export.add_argument("--opset", type=int, default=17)
    export.add_argument("--chunk", type=int, default=64,
                        help="most scan steps unrolled per chunk (graph size vs speed; default 64)")
    export.add_argument("--half", action="store_true",
                        help="also write an fp16 copy (NAME-fp16.onnx) and check it on onnxruntime")
    export.add_argument("--threads", type=int, default=2,
                        help="CPU threads for the onnxruntime and PyTorch latency (default 2)")
    export.add_argument("--repeats", type=int, default=3, help="timed runs per latency (median; default 3)")
    export.add_argument("--no-check", dest="check", action="store_false",
                        help="skip the onnxruntime-vs-PyTorch comparison and latency")
    dataset = sub.add_parser("dataset", help="write a tiny synthetic detection set (images, labels, data.yaml)")
    dataset.add_argument("directory", type=Path, help="where to write it (created)")
    dataset.add_argument("--count", type=int, default=8, help="images per split")
    dataset.add_argument("--size", type=int, default=64, help="image side in pixels")
    for command in (info, train, predict, export, dataset):
        _common(command)
    setup.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                       help="machine-readable output on stdout")


@contextlib.contextmanager
def _stdout_to_stderr(active: bool) -> Iterator[None]:
    """With --json, everything ultralytics prints (its logger holds the original stdout) goes to stderr,
    at the file-descriptor level, so stdout carries the one JSON document alone."""
    if not active:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _setup(args: argparse.Namespace) -> Dict[str, Any]:
    from jetson_mamba.archive.environment import TargetEnvironment
    from jetson_mamba.archive.extras import install_ultralytics
    from jetson_mamba.cli._python import checked_python
    from jetson_mamba.cli.output import err_console

    python = checked_python(args.python) or sys.executable
    report = install_ultralytics(TargetEnvironment(python), dry_run=args.dry_run,
                                 progress=lambda text: err_console.print(text, markup=False))
    return report.to_json()


def _offline() -> None:
    """Before ultralytics is imported: no network probes or downloads, no requirement auto-installs."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("ULTRALYTICS_SKIP_REQUIREMENTS_CHECKS", "1")


def _info(args: argparse.Namespace) -> Dict[str, Any]:
    import torch
    from ultralytics.utils.torch_utils import get_flops

    from jetson_mamba.models.mamba_yolo import PUBLISHED, SCALES, load_yolo

    rows: List[Dict[str, Any]] = []
    for scale in SCALES if args.scale == "all" else (args.scale,):
        with torch.no_grad():
            model = load_yolo(scale).model
            rows.append({"scale": scale, "parameters": sum(p.numel() for p in model.parameters()),
                         "gflops": round(get_flops(model, args.imgsz), 2), "imgsz": args.imgsz,
                         "published_parameters_m": PUBLISHED[scale][0], "published_gflops": PUBLISHED[scale][1]})
    return {"models": rows}


def _train(args: argparse.Namespace) -> Dict[str, Any]:
    from jetson_mamba.models.mamba_yolo import load_yolo

    model = load_yolo(args.model)
    model.train(data=args.data, epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, workers=args.workers,
                device=args.device, project=str(Path(args.project).resolve()), name=args.name, plots=False)
    save_dir = Path(model.trainer.save_dir)
    return {"save_dir": str(save_dir), "best": str(save_dir / "weights" / "best.pt"),
            "last": str(save_dir / "weights" / "last.pt")}


def _predict(args: argparse.Namespace) -> Dict[str, Any]:
    from jetson_mamba.models.mamba_yolo import load_yolo

    model = load_yolo(args.model)
    images = []
    for result in model.predict(args.source, imgsz=args.imgsz, conf=args.conf, device=args.device,
                                save=args.save, verbose=False):
        boxes = result.boxes
        images.append({"path": result.path, "detections": [
            {"class": result.names[int(c)], "confidence": round(float(p), 4), "xyxy": [round(float(v), 1) for v in b]}
            for b, p, c in zip(boxes.xyxy.tolist(), boxes.conf.tolist(), boxes.cls.tolist())]})
    return {"images": images}


def _export(args: argparse.Namespace) -> Dict[str, Any]:
    import time

    import torch

    from jetson_mamba.cli.output import err_console
    from jetson_mamba.errors import UsageError
    from jetson_mamba.models.mamba_yolo import load_yolo
    from jetson_mamba.models.mamba_yolo.export import (
        check_graph,
        check_onnx,
        export_onnx,
        latency_ms,
        op_counts,
        to_fp16,
    )

    if args.chunk < 1 or args.threads < 1 or args.repeats < 1:
        raise UsageError(f"--chunk {args.chunk} / --threads {args.threads} / --repeats {args.repeats} must be positive",
                         "pass positive numbers, e.g. --chunk 64 --threads 2 --repeats 3")
    model = load_yolo(args.model).model
    output = args.output or (Path(args.model).with_suffix(".onnx") if args.model.endswith(".pt")
                             else Path(f"mamba-yolo-{args.model}.onnx"))
    with err_console.status(f"exporting {output} (imgsz {args.imgsz}, batch {args.batch})"):
        start = time.perf_counter()
        export_onnx(model, output, imgsz=args.imgsz, batch=args.batch, opset=args.opset, chunk=args.chunk)
        data: Dict[str, Any] = {"onnx": str(output), "export_seconds": round(time.perf_counter() - start, 1),
                                "bytes": output.stat().st_size, "ops": op_counts(output)}
    with err_console.status("checking the graph (onnx full check, loops, static shapes)"):
        data["graph"] = check_graph(output)
    half = output.with_name(f"{output.stem}-fp16.onnx") if args.half else None
    if half is not None:
        to_fp16(output, half)
        check_graph(half)
        data["fp16"] = {"onnx": str(half), "bytes": half.stat().st_size}
    if args.check:
        images = torch.rand(args.batch, 3, args.imgsz, args.imgsz, generator=torch.Generator().manual_seed(0))
        with err_console.status("onnxruntime vs PyTorch: outputs and latency"):
            data["relative_error_vs_torch"] = check_onnx(output, model, images)
            if half is not None:
                data["fp16"]["relative_error_vs_torch"] = check_onnx(half, model, images)
            data["latency"] = latency_ms(output, model, images, args.threads, args.repeats)
    data["tensorrt"] = f"trtexec --onnx={output} --saveEngine={output.with_suffix('.engine')} --fp16"
    return data


def _dataset(args: argparse.Namespace) -> Dict[str, Any]:
    from jetson_mamba.errors import UsageError
    from jetson_mamba.models.mamba_yolo.synthetic import write_dataset

    if args.size < 32 or args.count < 1:
        raise UsageError(f"--size {args.size} / --count {args.count} is too small",
                         "use --size 32 or more and --count 1 or more")
    if args.directory.exists() and any(args.directory.iterdir()):
        raise UsageError(f"{args.directory} exists and is not empty", "name a new or empty directory")
    data = write_dataset(args.directory, count=args.count, size=args.size)
    return {"data": str(data), "images_per_split": args.count, "size": args.size,
            "train": f"jetson-mamba yolo train --data {data} --imgsz {args.size}"}


def _print(command: str, data: Dict[str, Any]) -> None:
    from jetson_mamba.cli.output import console

    if command == "setup":
        verb = "would install" if data["dry_run"] else "installed"
        console.print(f"{verb}: {', '.join(f'{n} {v}' for n, v in data['installed']) or 'nothing'}", markup=False)
        for line in data["left_out"]:
            console.print(f"left out: {line}", markup=False)
        console.print(f"untouched: {', '.join(f'{n} {v}' for n, v in sorted(data['protected'].items()))}",
                      markup=False)
    elif command == "info":
        console.print(f"{'scale':<6}{'params':>12}{'GFLOPs':>9}   published (params, GFLOPs)")
        for row in data["models"]:
            console.print(f"{row['scale']:<6}{row['parameters'] / 1e6:>11.2f}M{row['gflops']:>9.1f}   "
                          f"{row['published_parameters_m']}M, {row['published_gflops']}")
    elif command == "predict":
        for image in data["images"]:
            console.print(f"{image['path']}: {len(image['detections'])} detections")
            for det in image["detections"]:
                console.print(f"  {det['class']} {det['confidence']:.2f} {det['xyxy']}")
    else:
        for key, value in data.items():
            console.print(f"{key}: {value}")


def run(args: argparse.Namespace) -> int:
    from jetson_mamba.errors import UsageError

    if args.yolo_command not in SUBCOMMANDS:
        raise UsageError("jetson-mamba yolo needs a subcommand",
                         f"run one of: {', '.join(f'jetson-mamba yolo {c}' for c in SUBCOMMANDS)}")
    if args.yolo_command in NEEDS_ULTRALYTICS and importlib.util.find_spec("ultralytics") is None:
        from jetson_mamba.errors import MissingDependencyError

        raise MissingDependencyError(f"`jetson-mamba yolo {args.yolo_command}` needs ultralytics, which is not "
                                     "installed", "jetson-mamba yolo setup (installs it without touching torch, "
                                     "torchvision, numpy or OpenCV)")
    _offline()
    commands = {"setup": _setup, "info": _info, "train": _train, "predict": _predict, "export": _export,
                "dataset": _dataset}
    with _stdout_to_stderr(args.json):
        data = commands[args.yolo_command](args)
    if args.json:
        from jetson_mamba.cli.output import print_json

        print_json(data)
    else:
        _print(args.yolo_command, data)
    return 0
