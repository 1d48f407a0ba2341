"""`jetson-mamba bench`: time every available kernel backend side by side on this device."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    from jetson_mamba.bench.runner import BenchReport
    from jetson_mamba.bench.workloads import WorkloadReport

from jetson_mamba.cli._backend_option import add_backend_option, backend_names

NAME = "bench"
HELP = ("time every available backend (compiled, Triton, torch) per op and for whole blocks, side by side; "
        "backends that fail their correctness check are refused")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--op", dest="ops", action="append",
                        choices=("selective_scan", "causal_conv1d", "block", "lm", "yolo"),
                        help="ops to time (repeatable; default: selective_scan, causal_conv1d, block); block, lm "
                             "and yolo, when named, also time upstream's Mamba(1024), a 130M-shaped "
                             "MambaLMHeadModel and Mamba-YOLO-T on our kernels and on the compiled ones when "
                             "installed")
    parser.add_argument("--batch", help="batch sizes of the block/lm/yolo workloads (default 1,8 on a GPU, 1 on "
                                        "the CPU)")
    parser.add_argument("--small", action="store_true", help="tiny block/lm/yolo shapes (the default on the CPU)")
    parser.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                        help="per workload: start no new measurement after this long (default 180 GPU, 60 CPU)")
    parser.add_argument("--partial", metavar="FILE", type=Path,
                        help="append each block/lm/yolo row to FILE as JSON lines as soon as it is measured")
    parser.add_argument("--shape", help="one custom shape instead of the defaults, e.g. B=8,D=2048,L=2048,N=16 "
                                        "(keys B D L N G z W; G>0 = grouped B/C, z=0 = no gate)")
    add_backend_option(parser, "backends to time (default: every available one)")
    parser.add_argument("--dtype", dest="dtypes", default=None,
                        help="comma-separated dtypes (default: float32,bfloat16 on a GPU, float32 on the CPU)")
    parser.add_argument("--direction", choices=("forward", "forward+backward", "both"), default="both")
    parser.add_argument("--repeat", type=int, default=None, help="timed calls per measurement (default 20 GPU, 5 CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 3 GPU, 1 CPU)")
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--markdown", nargs="?", const="-", metavar="FILE",
                        help="a Markdown report (for benchmarks/RESULTS.md) on stdout, or into FILE (then it "
                             "combines with --json)")
    parser.add_argument("--plot", metavar="FILE", type=Path, help="also write a PNG bar chart to FILE")


def print_table(report: BenchReport) -> None:
    """One table per op and shape, then the backends that could not run here."""
    from rich.markup import escape
    from rich.table import Table

    from jetson_mamba.bench.report import COLUMNS, by_problem, cells, unavailable
    from jetson_mamba.bench.runner import TIMED
    from jetson_mamba.cli.output import console

    for title, rows in by_problem(report.results).items():
        table = Table(title=f"{title} on {report.device.name}")
        for column in COLUMNS:
            table.add_column(column, justify="left" if column in ("dtype", "direction", "backend") else "right")
        for r in rows:
            row = [escape(c) for c in cells(r)]
            if r.status != TIMED:
                row[3] = f"[yellow]{row[3]}[/]"
            table.add_row(*row)
        console.print(table)
    for name, why in unavailable(report.results).items():
        console.print(f"[yellow]not timed[/] {escape(name)}: {escape(why)}")


def print_workloads(report: WorkloadReport) -> None:
    """The block/lm/yolo workloads as one table, then its notes (the ratio's meaning, or why there is none)."""
    from rich.markup import escape
    from rich.table import Table

    from jetson_mamba.bench.report import workload_table
    from jetson_mamba.cli.output import console

    columns, rows, notes = workload_table(report)
    table = Table(title="Workloads through upstream's modules")
    for column in columns:
        table.add_column(column, justify="left" if column in ("workload", "dtype") else "right")
    for row in rows:
        table.add_row(*(escape(c) for c in row))
    console.print(table)
    for note in notes:
        console.print(escape(note))


def run(args: argparse.Namespace) -> int:
    from jetson_mamba.verify import require_torch

    require_torch()
    import torch

    from jetson_mamba.bench.report import require_matplotlib, to_markdown, workloads_markdown, write_plot
    from jetson_mamba.bench.runner import FORWARD, FORWARD_BACKWARD, Settings, run_bench
    from jetson_mamba.bench.shapes import OPS, custom_problems, default_problems, parse_shape
    from jetson_mamba.bench.workloads import WORKLOADS, run_workloads
    from jetson_mamba.cli.output import console, err_console, print_json
    from jetson_mamba.errors import UsageError
    from jetson_mamba.verify.runner import check_backend_names

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = torch.device(device).type == "cuda"
    ops = args.ops or list(OPS)
    workload_settings = _workload_settings(args, device, on_gpu)
    if args.shape:
        problems = custom_problems(parse_shape(args.shape), ops)
        if not problems:
            raise UsageError("--shape applies to selective_scan and causal_conv1d, not to blocks, lm or yolo",
                             "add --op selective_scan or --op causal_conv1d (--small shrinks block, lm, yolo)")
    else:
        problems = [p for p in default_problems(on_gpu) if p.op in ops]
    workloads = [name for name in WORKLOADS if name in (args.ops or ())]  # named only: the default run stays as it was
    dtypes = [d.strip() for d in (args.dtypes or ("float32,bfloat16" if on_gpu else "float32")).split(",")]
    for name in dtypes:
        if name not in ("float32", "float16", "bfloat16"):
            raise UsageError(f"unknown dtype {name!r}", "use float32, float16 or bfloat16")
    directions = {"forward": [FORWARD], "forward+backward": [FORWARD_BACKWARD]}.get(args.direction,
                                                                                    [FORWARD, FORWARD_BACKWARD])
    settings = Settings(device=device, dtypes=dtypes, directions=directions,
                        backends=backend_names(args.backends) or None,
                        warmup=args.warmup if args.warmup is not None else (3 if on_gpu else 1),
                        repeat=args.repeat if args.repeat is not None else (20 if on_gpu else 5))
    check_backend_names(settings.backends, device)
    if args.plot:
        require_matplotlib()
    sink = None if args.json else err_console
    report = run_bench(problems, settings, console=sink)
    extra = run_workloads(workloads, workload_settings, _partial_writer(args.partial), console=sink) \
        if workloads else None
    if args.plot:
        write_plot(report, args.plot)
    if args.markdown:
        command = "jetson-mamba " + " ".join(sys.argv[1:]) if sys.argv[1:] else "jetson-mamba bench --markdown"
        text = to_markdown(report, command) + "\n" + (workloads_markdown(extra) + "\n" if extra else "")
        if args.markdown != "-":
            Path(args.markdown).write_text(text)
        elif not args.json:
            sys.stdout.write(text)
    if args.json:
        data = report.to_json()
        data["plot"] = str(args.plot) if args.plot else None
        data["markdown"] = args.markdown if args.markdown not in (None, "-") else None
        data["workloads"] = extra.to_json() if extra else None
        print_json(data)
    elif not args.markdown:
        print_table(report)
        if extra:
            print_workloads(extra)
        if args.plot:
            console.print(f"chart written to {args.plot}")
    return 0


def _workload_settings(args: argparse.Namespace, device: str, on_gpu: bool) -> Any:
    """Batches, sizes and budget of the block/lm/yolo workloads, checked before anything is timed."""
    from jetson_mamba.bench.workloads import FULL, SMALL, WorkloadSettings
    from jetson_mamba.errors import UsageError

    text = args.batch or ("1,8" if on_gpu else "1")
    try:
        batches = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise UsageError(f"--batch {text!r} is not a list of integers", "e.g. --batch 1,8") from None
    if not batches or min(batches) < 1:
        raise UsageError(f"--batch {text!r} needs positive batch sizes", "e.g. --batch 1,8")
    if args.budget is not None and args.budget <= 0:
        raise UsageError(f"--budget {args.budget} must be positive", "e.g. --budget 120")
    return WorkloadSettings(device=device, batches=batches, sizes=SMALL if args.small or not on_gpu else FULL,
                            warmup=args.warmup if args.warmup is not None else (3 if on_gpu else 1),
                            repeat=args.repeat if args.repeat is not None else (20 if on_gpu else 3),
                            budget_s=args.budget or (180.0 if on_gpu else 60.0),
                            backends=backend_names(args.backends) or None)


def _partial_writer(path: Optional[Path]) -> Callable[[Any], None]:
    """Each finished workload row appended to `path` as one JSON line, so a run cut short keeps its rows."""
    import json

    def write(row: Any) -> None:
        if path is not None:
            with path.open("a") as handle:
                handle.write(json.dumps(row.to_json()) + "\n")

    return write
