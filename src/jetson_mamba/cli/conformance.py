"""`jetson-mamba conformance`: upstream's own test files, run against jetson-mamba's kernels."""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path

from jetson_mamba.cli._backend_option import add_backend_option, backend_names

NAME = "conformance"
HELP = ("run causal-conv1d's and mamba-ssm's own, unmodified test files against jetson-mamba's stand-ins on a "
        "backend (torch, triton; cuda = the compiled extensions, as the control)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_backend_option(parser, "torch, triton or cuda (default: torch)")
    parser.add_argument("--file", dest="files", action="append", metavar="NAME",
                        help="a suite (causal-conv1d-1.6.0, causal-conv1d-1.7.0, mamba-selective-scan, mamba-ssd, "
                             "mamba-state-update, mamba-layernorm-gated, mamba-generation, mamba-determinism) or a "
                             "prefix (causal-conv1d, mamba); repeatable (default: all)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--sample", type=int, metavar="N",
                      help="keep one case in N (by a hash of its id) plus every parameter value once "
                           "(default: the fixed CI sample of each file)")
    size.add_argument("--full", action="store_true", help="every case")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available); triton on the cpu runs "
                                         "under TRITON_INTERPRET=1")
    parser.add_argument("--shared", type=Path, help="the folder with sdists/ and upstream/ "
                                                     "(default: $JETSON_MAMBA_SHARED, else ../shared)")
    parser.add_argument("--wheelhouse", type=Path, help="the compiled causal_conv1d / mamba_ssm wheels "
                                                        "(needed by --backend cuda)")
    parser.add_argument("--work", type=Path, help="keep the unpacked files and pytest logs here (default: a temp folder)")
    parser.add_argument("--timeout", type=float, help="seconds for the whole command: each file gets what is left "
                                                     "(a file out of time reports what ran, and an error)")
    parser.add_argument("--case-timeout", type=float, default=300.0,
                        help="seconds one case may run before it fails as timed out (default 300; 0: no limit)")
    parser.add_argument("--pin-upstream-autotune", action="store_true",
                        help="mamba_ssm's autotuned Triton kernels keep their smallest config (a cold Triton cache "
                             "compiles minutes less; numbers do not depend on tile sizes)")
    parser.add_argument("--shard", metavar="K/N",
                        help="run only shard K of N of the chosen cases (by a hash of each case's id): N processes "
                             "with K = 1..N run the same cases as one, in parallel; merge their --json outputs with "
                             "conformance.report.merged_table")
    parser.add_argument("--markdown", type=Path, help="also write the results table (markdown) to this file")


def run(args: argparse.Namespace) -> int:
    from jetson_mamba.cli.output import console, print_json
    from jetson_mamba.conformance import BACKENDS, SUITES, run_suite
    from jetson_mamba.conformance.report import failure_error, table, text
    from jetson_mamba.conformance.suites import parse_shard
    from jetson_mamba.errors import UsageError
    from jetson_mamba.verify import require_torch

    require_torch()
    import torch

    backends = backend_names(args.backends) or ["torch"]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        raise UsageError(f"unknown backend {', '.join(unknown)}", f"use one of {', '.join(BACKENDS)}")
    wanted = args.files or [""]
    suites = [s for s in SUITES if any(s.name == w or s.name.startswith(w) for w in wanted)]
    if not suites:
        raise UsageError(f"no suite matches {', '.join(wanted)}", f"use one of {', '.join(s.name for s in SUITES)}")
    try:
        shard = None if args.shard is None else parse_shard(args.shard)
    except ValueError as error:
        raise UsageError(str(error), "pass --shard K/N, e.g. --shard 3/12 for the third of 12 shards") from None
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    shared = (args.shared or Path(os.environ.get("JETSON_MAMBA_SHARED", "../shared"))).resolve()
    sample = "full" if args.full else str(args.sample) if args.sample else "ci"
    work = args.work or Path(tempfile.mkdtemp(prefix="jetson-mamba-conformance-"))
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    results = []
    for backend in backends:
        for chosen in suites:
            status = contextlib.nullcontext() if args.json else console.status(
                f"{chosen.name} on {backend} ({device})", spinner="dots")
            with status:
                results.append(run_suite(chosen, backend, device, sample, shared, work.resolve(), args.wheelhouse,
                                         None if deadline is None else deadline - time.monotonic(),
                                         args.pin_upstream_autotune, args.case_timeout, shard))
            if not args.json:
                console.print(text(results[-1:]), end="", markup=False, soft_wrap=True)
    if args.markdown:
        args.markdown.write_text(table(results))
    error = None if all(r.ok for r in results) else failure_error(results)
    if args.json:
        data = {"ok": error is None, "work": str(work), "results": [r.to_dict() for r in results]}
        if error is not None:
            data["error"] = error.to_json()
        print_json(data)
        return error.exit_code if error is not None else 0
    if error is not None:
        raise error
    return 0

