"""`jetson-mamba verify`: check every kernel and block present against float64 references."""

from __future__ import annotations

import argparse
import math
import os
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

if TYPE_CHECKING:
    from jetson_mamba.verify.report import CheckResult, VerifyReport

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


_SHORT = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


def _fmt(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return "NaN/Inf" if not math.isfinite(value) else f"{value:.1e}"


def print_report(report: VerifyReport) -> None:
    """A table of every check (worst error next to its tolerance), then skips and the diagnosis."""
    from rich.markup import escape
    from rich.table import Table

    from jetson_mamba.cli.output import console

    table = Table(title=f"jetson-mamba verify on {report.device}" + (" (quick)" if report.quick else ""))
    for column in ("component", "check", "dtype", "cases", "worst error", "tolerance", "result"):
        table.add_column(column, justify="right" if column in ("cases", "worst error", "tolerance") else "left")
    rows: Dict[Tuple[str, str, str], List[CheckResult]] = {}
    for check in report.checks:  # one row per component, direction and dtype; every case is in --json
        rows.setdefault((check.component, check.direction, check.dtype), []).append(check)
    for (component, direction, dtype), checks in rows.items():
        bad = [c for c in checks if not c.ok]
        errors = [c.error if c.error is not None else math.inf for c in checks]
        result = "[green]ok[/]" if not bad else f"[bold red]{len(bad)} {bad[0].status}[/]"
        table.add_row(escape(component), direction, _SHORT.get(dtype, dtype), str(len(checks)),
                      _fmt(max(errors)), f"{max(c.tolerance for c in checks):.0e}", result)
    console.print(table)
    for check in report.failures:
        console.print(f"[bold red]{check.status}[/] {escape(check.label)}: {escape(check.message or '')}")
    for skip in report.skipped:
        console.print(f"[yellow]skipped[/] {escape(skip.component)}: {escape(skip.reason)}")
    for note in report.notes:
        console.print(f"[dim]note: {escape(note)}[/]")
    for finding in report.diagnosis:
        console.print(f"[bold]{escape(finding.severity)}[/] {escape(finding.message)}\n  fix: {escape(finding.fix)}")
    passed = len(report.checks) - len(report.failures)
    colour = "green" if report.ok else "red"
    console.print(f"[{colour}]{passed} passed, {len(report.failures)} failed, {len(report.skipped)} skipped "
                  f"in {report.seconds:.1f} s[/]")


def run(args: argparse.Namespace) -> int:
    from jetson_mamba.cli.output import err_console, print_json
    from jetson_mamba.verify import failure_error, report_document, require_torch, run_verify

    require_torch()
    # correctness does not depend on tile sizes: jetson-mamba's Triton kernels skip autotuning here
    os.environ.setdefault("JETSON_MAMBA_TRITON_AUTOTUNE", "0")
    backends = backend_names(args.backends)
    report = run_verify(quick=args.quick, device=args.device, backends=backends or None, seed=args.seed,
                        console=None if args.json else err_console)
    if args.json:
        data, code = report_document(report)
        print_json(data)
        return code
    print_report(report)
    if not report.ok:
        raise failure_error(report)
    return 0
