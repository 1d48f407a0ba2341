"""`jetson-mamba bench`: time every available kernel backend side by side on this device."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jetson_mamba.cli._backend_option import add_backend_option, backend_names

NAME = "bench"
HELP = ("time every available backend (compiled, Triton, torch) per op and for whole blocks, side by side; "
        "backends that fail their correctness check are refused")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--op", dest="ops", action="append", choices=("selective_scan", "causal_conv1d", "block"),
                        help="ops to time (repeatable; default: all)")
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


def run(args: argparse.Namespace) -> int:
    from jetson_mamba.verify import require_torch

    require_torch()
    import torch

    from jetson_mamba.bench.report import print_table, require_matplotlib, to_markdown, write_plot
    from jetson_mamba.bench.runner import FORWARD, FORWARD_BACKWARD, Settings, run_bench
    from jetson_mamba.bench.shapes import OPS, custom_problems, default_problems, parse_shape
    from jetson_mamba.cli.output import console, print_json
    from jetson_mamba.errors import UsageError
    from jetson_mamba.verify.runner import check_backend_names

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = torch.device(device).type == "cuda"
    ops = args.ops or list(OPS)
    if args.shape:
        problems = custom_problems(parse_shape(args.shape), ops)
        if not problems:
            raise UsageError("--shape applies to selective_scan and causal_conv1d, not to blocks",
                             "add --op selective_scan or --op causal_conv1d")
    else:
        problems = [p for p in default_problems(on_gpu) if p.op in ops]
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
    report = run_bench(problems, settings, progress=not args.json)
    if args.plot:
        write_plot(report, args.plot)
    if args.markdown:
        command = "jetson-mamba " + " ".join(sys.argv[1:]) if sys.argv[1:] else "jetson-mamba bench --markdown"
        text = to_markdown(report, command) + "\n"
        if args.markdown != "-":
            Path(args.markdown).write_text(text)
        elif not args.json:
            sys.stdout.write(text)
    if args.json:
        data = report.to_json()
        data["plot"] = str(args.plot) if args.plot else None
        data["markdown"] = args.markdown if args.markdown not in (None, "-") else None
        print_json(data)
    elif not args.markdown:
        print_table(report)
        if args.plot:
            console.print(f"chart written to {args.plot}")
    return 0
