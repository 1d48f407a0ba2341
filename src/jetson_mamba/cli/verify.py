"""`jetson-mamba verify`: check every kernel and block present against float64 references."""

from __future__ import annotations

import argparse
import os

from jetson_mamba.cli._backend_option import add_backend_option, backend_names

NAME = "verify"
HELP = ("check that every kernel backend, compiled extension and Mamba block present computes the right "
        "numbers (forward and backward, against float64 references)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="small shapes, float32 and bfloat16: seconds, also on a CPU")
    add_backend_option(parser, "only these kernel backends (cuda, triton, torch, or a registered one); a single one "
                               "is also forced for the blocks")
    parser.add_argument("--device", help="torch device to check on (default: cuda when available, else cpu)")
    parser.add_argument("--seed", type=int, help="seed for the random inputs (default: a fresh one each run)")


def run(args: argparse.Namespace) -> int:
    from jetson_mamba.cli.output import print_json
    from jetson_mamba.verify import failure_error, report_document, require_torch, run_verify
    from jetson_mamba.verify.report import print_report

    require_torch()
    # correctness does not depend on tile sizes: jetson-mamba's Triton kernels skip autotuning here
    os.environ.setdefault("JETSON_MAMBA_TRITON_AUTOTUNE", "0")
    backends = backend_names(args.backends)
    report = run_verify(quick=args.quick, device=args.device, backends=backends or None, seed=args.seed,
                        progress=not args.json)
    if args.json:
        data, code = report_document(report)
        print_json(data)
        return code
    print_report(report)
    if not report.ok:
        raise failure_error(report)
    return 0
