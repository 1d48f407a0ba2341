"""What an nvcc flag costs in compile time: one real translation unit, compiled with each flag set.

The flags `jetson-mamba build` adds or keeps (`--compress-mode=size` instead of `-lineinfo`,
upstream's `--threads 4`, `--split-compile=N`) are compiled in turns (A B C A B C ...), so a
machine whose load drifts hurts every variant alike. Reports CPU seconds (user + sys of nvcc and
its children), wall seconds and the object's size, median over `--repeat` runs.

    python benchmarks/nvcc_flag_cost.py SRC_TREE/csrc/causal_conv1d_update.cu --arch 90 --repeat 3

SRC_TREE is an unpacked sdist (causal-conv1d or mamba-ssm); torch's headers come from this python.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Dict, List

UPSTREAM = ["-O3", "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
            "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
            "-U__CUDA_NO_BFLOAT162_OPERATORS__", "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
            "--expt-relaxed-constexpr", "--expt-extended-lambda", "--use_fast_math", "--ptxas-options=-v"]

VARIANTS: Dict[str, List[str]] = {
    "shipped (--compress-mode=size, --threads 4)": ["--compress-mode=size", "--threads", "4"],
    "no --compress-mode": ["--threads", "4"],
    "-lineinfo (upstream)": ["-lineinfo", "--threads", "4"],
    "no --threads": ["--compress-mode=size"],
    "--split-compile=2": ["--compress-mode=size", "--threads", "4", "--split-compile=2"],
}


def base_command(nvcc: str, source: Path, arch: str) -> List[str]:
    from torch.utils import cpp_extension

    includes = [f"-I{p}" for p in cpp_extension.include_paths("cuda")] + [f"-I{sysconfig.get_paths()['include']}",
                                                                           f"-I{source.parent}"]
    return [nvcc, *includes, "-c", str(source), "-DTORCH_EXTENSION_NAME=probe", "-D_GLIBCXX_USE_CXX11_ABI=1",
            "-std=c++20", "--compiler-options", "-fPIC", *UPSTREAM, "-gencode", f"arch=compute_{arch},code=sm_{arch}"]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def compile_once(command: List[str], output: Path) -> Dict[str, float]:
    cpu, wall = children_cpu(), time.monotonic()
    done = subprocess.run([*command, "-o", str(output)], capture_output=True, text=True, check=False,
                          env={**os.environ, "NVCC_APPEND_FLAGS": ""})
    if done.returncode != 0:
        sys.exit(f"nvcc failed:\n{done.stderr[-3000:]}")
    return {"cpu": children_cpu() - cpu, "wall": time.monotonic() - wall, "bytes": output.stat().st_size}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("--arch", default="90", help="sm number (90, 87, ...)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the medians here")
    args = parser.parse_args()
    nvcc = shutil.which("nvcc") or sys.exit("no nvcc on PATH")
    base = base_command(nvcc, args.source.resolve(), args.arch)
    runs: Dict[str, List[Dict[str, float]]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for turn in range(args.repeat):
            for name, flags in VARIANTS.items():
                runs[name].append(compile_once(base + flags, Path(tmp) / "unit.o"))
                print(f"turn {turn + 1}: {name}: {runs[name][-1]['cpu']:.1f} s CPU, "
                      f"{runs[name][-1]['wall']:.1f} s wall", flush=True)
    medians = {name: {k: statistics.median(r[k] for r in rs) for k in ("cpu", "wall", "bytes")}
               for name, rs in runs.items()}
    print(f"\n{args.source.name} for sm_{args.arch}, nvcc from {nvcc}, median of {args.repeat}:")
    print("| flags | CPU s | wall s | object bytes |\n| --- | ---: | ---: | ---: |")
    for name, m in medians.items():
        print(f"| {name} | {m['cpu']:.1f} | {m['wall']:.1f} | {m['bytes']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"source": str(args.source), "arch": args.arch, "medians": medians,
                                         "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
