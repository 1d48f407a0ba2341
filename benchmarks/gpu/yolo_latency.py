"""GPU proof and latency for Mamba-YOLO (issue 9), one command on the lab machine, from the repository root:

    python3 benchmarks/gpu/yolo_latency.py [--out DIR] [--backend cuda,triton,torch] [--batches 1,32]

It makes a venv that sees the system torch/triton, installs the sm_90 wheels from .carry/wheelhouse
(mamba-ssm 2.2.5 brings the compiled selective_scan_cuda) and re-runs itself inside it. Then, for
every selective-scan backend that can run on the GPU (cuda = compiled mamba kernel, triton, torch):

1. parity: every case of the Mamba-YOLO fixtures (../shared/fixtures/mamba_yolo_upstream, or
   .carry/fixtures/mamba_yolo_upstream, or $JETSON_MAMBA_SHARED/fixtures/...) loads strictly and
   reproduces the original's output on the GPU in fp32 (TF32 off), relative error < 1e-4; bf16
   autocast on the VSSBlock case < 3e-2;
2. gradients: one forward+backward of the whole T detector (batch 2, 256x256) gives the torch
   backend's parameter gradients (relative error of all gradients together < 1e-3);
3. latency: T detector (the ultralytics-free builder, same layers and weights layout as the
   ultralytics model; head output before DFL decode/NMS) at 640x640, batch 1 and 32, fp32 and fp16
   autocast, timed after warm-up (which also compiles the Triton kernels).

Writes yolo-latency.json and yolo-latency.md (the table for benchmarks/RESULTS.md) to --out
(default ./yolo-latency-out). Exit status 0 = every parity and gradient check passed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[2]
INNER = "JM_YOLO_LATENCY_INNER"
PARITY_TOL = 1e-4
BF16_TOL = 3e-2
GRAD_TOL = 1e-3


def _fixture_dir() -> Optional[Path]:
    candidates = [ROOT / ".carry" / "fixtures" / "mamba_yolo_upstream",
                  ROOT.parent / "shared" / "fixtures" / "mamba_yolo_upstream"]
    if os.environ.get("JETSON_MAMBA_SHARED"):
        candidates.insert(0, Path(os.environ["JETSON_MAMBA_SHARED"]) / "fixtures" / "mamba_yolo_upstream")
    return next((c for c in candidates if (c / "index.json").is_file()), None)


def _rel(out: Any, ref: Any) -> float:
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    return float((out - ref).norm() / ref.norm().clamp_min(1e-30))


def _parity(torch: Any, backend: str, fixtures: Path, device: str) -> List[Dict[str, Any]]:
    from jetson_mamba.models import mamba_yolo

    rows = []
    for entry in json.loads((fixtures / "index.json").read_text()):
        case = torch.load(fixtures / f"{entry['case']}.pt", map_location="cpu", weights_only=False)
        module = getattr(mamba_yolo, case["module"])(**case["kwargs"])
        module.load_state_dict(case["state_dict"], strict=True)
        module = module.to(device).eval()
        x = case["input"].to(device)
        with torch.no_grad():
            err = _rel(module(x), case["output"])
            rows.append({"backend": backend, "case": entry["case"], "dtype": "float32", "error": err,
                         "ok": err < PARITY_TOL})
            if entry["case"] == "vssblock":
                with torch.autocast(device, dtype=torch.bfloat16):
                    err = _rel(module(x).float(), case["output"])
                rows.append({"backend": backend, "case": "vssblock", "dtype": "bf16-autocast", "error": err,
                             "ok": err < BF16_TOL})
    return rows


def _gradients(torch: Any, device: str, size: int) -> Any:
    """All parameter gradients of the T detector for one fixed batch, flattened into one vector."""
    from jetson_mamba.models.mamba_yolo.standalone import build_detector

    torch.manual_seed(0)
    model = build_detector("t").to(device).train()
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    loss = sum(m.float().square().mean() for m in model(x))
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).cpu()


def _sync(torch: Any, device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _latency(torch: Any, device: str, batch: int, imgsz: int, half: bool, iters: int) -> float:
    """Milliseconds per forward of the T detector (after warm-up, which also compiles Triton kernels)."""
    from jetson_mamba.models.mamba_yolo.standalone import build_detector

    torch.manual_seed(0)
    model = build_detector("t").to(device).eval()
    x = torch.rand(batch, 3, imgsz, imgsz, device=device)
    with torch.no_grad(), torch.autocast(device.split(":")[0], dtype=torch.float16, enabled=half):
        for _ in range(3):
            model(x)
        _sync(torch, device)
        start = time.perf_counter()
        for _ in range(iters):
            model(x)
        _sync(torch, device)
    return (time.perf_counter() - start) * 1000.0 / iters


def inner(args: argparse.Namespace) -> int:
    import torch

    from jetson_mamba.ops import list_backends, use_backend

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = args.device
    infos = {i.name: i for i in list_backends("selective_scan", device, torch.float32)}
    wanted = [b.strip() for value in args.backends or ["cuda,triton,torch"] for b in value.split(",") if b.strip()]
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
    report: Dict[str, Any] = {"device": name, "torch": torch.__version__, "imgsz": args.imgsz,
                              "backends": {n: i.to_json() for n, i in infos.items()},
                              "parity": [], "gradients": [], "latency": []}
    from jetson_mamba.ops._compiled import why_unavailable

    report["vmamba_core"] = why_unavailable("selective_scan_cuda_core", "VMamba", torch.device(device),
                                            torch.float32) or "available: used by SS2D when no backend is forced"
    print(f"== VMamba selective_scan_cuda_core: {report['vmamba_core']}", flush=True)
    fixtures = _fixture_dir()
    if fixtures is None:
        report["parity_skipped"] = "fixtures not found (copy ../shared/fixtures to .carry/fixtures)"
    reference_grads = None
    for backend in ["torch"] + [b for b in wanted if b != "torch"]:
        info = infos.get(backend)
        if info is None or not info.available:
            print(f"== {backend}: not available ({info.reason if info else 'unknown backend'})", flush=True)
            continue
        with use_backend(backend):  # SS2D dispatches to it (and never to VMamba's compiled core)
            if fixtures is not None and backend in wanted:
                rows = _parity(torch, backend, fixtures, device)
                report["parity"] += rows
                worst = max(r["error"] for r in rows if r["dtype"] == "float32")
                print(f"== {backend} parity: {sum(r['ok'] for r in rows)}/{len(rows)} ok, worst fp32 {worst:.1e}",
                      flush=True)
            grads = _gradients(torch, device, args.grad_size)
            if reference_grads is None:
                reference_grads = grads
            if backend in wanted:
                err = _rel(grads, reference_grads)
                report["gradients"].append({"backend": backend, "worst_error_vs_torch": err, "ok": err < GRAD_TOL})
                print(f"== {backend} gradients of T vs torch backend: worst {err:.1e}", flush=True)
                for batch in (int(b) for b in args.batches.split(",") if b):
                    for half in (False, True):
                        ms = _latency(torch, device, batch, args.imgsz, half, iters=args.iters)
                        row = {"backend": backend, "batch": batch, "dtype": "fp16-autocast" if half else "fp32",
                               "ms_per_batch": round(ms, 2), "ms_per_image": round(ms / batch, 3),
                               "images_per_s": round(1000.0 * batch / ms, 1)}
                        report["latency"].append(row)
                        print(f"== {backend} latency {row}", flush=True)
    ok = all(r["ok"] for r in report["parity"] + report["gradients"]) and bool(report["gradients"])
    report["ok"] = ok
    (out / "yolo-latency.json").write_text(json.dumps(report, indent=2))
    lines = [f"Mamba-YOLO-T detector at {args.imgsz}x{args.imgsz} on {report['device']} (torch {report['torch']}), "
             "head output before DFL decode/NMS, synchronized wall clock:", "",
             "| backend | batch | dtype | ms / batch | ms / image | images/s |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['backend']} | {r['batch']} | {r['dtype']} | {r['ms_per_batch']} | {r['ms_per_image']} | "
              f"{r['images_per_s']} |" for r in report["latency"]]
    lines += ["", f"Fixture parity on the GPU: {sum(r['ok'] for r in report['parity'])}/{len(report['parity'])} ok; "
              "gradients vs torch backend: " + ", ".join(f"{g['backend']} {g['worst_error_vs_torch']:.1e}"
                                                         for g in report["gradients"])]
    (out / "yolo-latency.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print("== PASS" if ok else "== FAIL")
    return 0 if ok else 1


def outer(args: argparse.Namespace) -> int:
    """Venv with the system torch + the carried wheels, then this script again inside it."""
    work = Path(tempfile.mkdtemp(prefix="jm-yolo-"))
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(work / "venv")], check=True)
    python = str(work / "venv" / "bin" / "python")
    wheels = sorted(str(p) for p in (ROOT / ".carry" / "wheelhouse").glob("*.whl"))
    if wheels:
        subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", *wheels], check=True)
    else:
        print("== no .carry/wheelhouse/*.whl: the cuda backend will be unavailable", flush=True)
    paths = [str(ROOT / "src")]
    probe = subprocess.run([python, "-c", "import rich, packaging, yaml"], capture_output=True)
    if probe.returncode != 0:  # no network: borrow rich/packaging from pip's vendored copies
        vendor = subprocess.run([python, "-c", "import os, pip._vendor as v; print(os.path.dirname(v.__file__))"],
                                capture_output=True, text=True, check=True).stdout.strip()
        shim = work / "shim"
        shim.mkdir()
        for name in ("rich", "packaging"):
            (shim / name).symlink_to(Path(vendor) / name)
        paths.append(str(shim))
    # keep the caller's PYTHONPATH (on the lab machine: the torch venv's site-packages, see lab.sh)
    paths += [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths), **{INNER: "1"})
    return subprocess.run([python, __file__, *sys.argv[1:]], env=env).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(Path.cwd() / "yolo-latency-out"))
    # jetson-mamba's --backend spelling (repeatable, comma-separated); this process may lack jetson_mamba itself
    parser.add_argument("--backend", "--backends", dest="backends", action="append", metavar="NAME",
                        help="from cuda, triton, torch; repeatable or comma-separated (default: all three)")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--iters", type=int, default=10, help="timed iterations per configuration")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--grad-size", type=int, default=256, help="image size of the gradient check")
    parser.add_argument("--device", default="cuda", help="cuda (the proof) or cpu (a dry run of this script)")
    args = parser.parse_args()
    return inner(args) if os.environ.get(INNER) else outer(args)


if __name__ == "__main__":
    sys.exit(main())
