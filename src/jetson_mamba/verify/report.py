"""The outcome of `verify`: one record per check and per skipped component, JSON and a rich table."""

from __future__ import annotations

import math
import platform
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

PASSED, FAILED, ERROR = "passed", "failed", "error"


def _finite(value: Optional[float]) -> Optional[float]:
    """JSON has no Infinity: a non-finite error is reported as null (with a message saying why)."""
    return value if value is not None and math.isfinite(value) else None


@dataclass
class CheckResult:
    """One numerical check: a component, a case, a dtype, a direction."""

    component: str  # "selective_scan[torch]", "mamba_ssm.Mamba", "mamba_yolo.VSSBlock", ...
    name: str  # the case, e.g. "variable B/C, z, D, delta_bias, softplus, L=37"
    dtype: str  # "float32", "float16", "bfloat16"
    direction: str  # "forward", "backward", "step", "update", "chunk states"
    status: str  # passed, failed, error
    error: Optional[float]  # the worst relative error over the compared tensors
    tolerance: float
    tensors: Dict[str, float] = field(default_factory=dict)
    message: Optional[str] = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == PASSED

    @property
    def label(self) -> str:
        return f"{self.component} {self.direction} {self.dtype} [{self.name}]"

    def to_json(self) -> Dict[str, Any]:
        return {
            "component": self.component, "name": self.name, "dtype": self.dtype, "direction": self.direction,
            "status": self.status, "error": _finite(self.error), "tolerance": self.tolerance,
            "tensors": {key: _finite(value) for key, value in self.tensors.items()},
            "message": self.message, "seconds": round(self.seconds, 4),
        }


@dataclass(frozen=True)
class Skipped:
    component: str
    reason: str

    def to_json(self) -> Dict[str, str]:
        return {"component": self.component, "reason": self.reason}


@dataclass
class VerifyReport:
    device: str
    quick: bool
    checks: List[CheckResult] = field(default_factory=list)
    skipped: List[Skipped] = field(default_factory=list)
    diagnosis: List[Dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    seed: Optional[int] = None
    notes: List[str] = field(default_factory=list)
    task_seconds: Dict[str, float] = field(default_factory=dict)  # where the time went (cold JIT shows here)

    @property
    def failures(self) -> List[CheckResult]:
        return [check for check in self.checks if not check.ok]

    @property
    def ok(self) -> bool:
        return not self.failures and bool(self.checks)

    def to_json(self) -> Dict[str, Any]:
        import torch

        return {
            "ok": self.ok,
            "quick": self.quick,
            "device": self.device,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "seed": self.seed,
            "seconds": round(self.seconds, 2),
            "summary": {"passed": len(self.checks) - len(self.failures), "failed": len(self.failures),
                        "skipped": len(self.skipped)},
            "checks": [check.to_json() for check in self.checks],
            "skipped": [skip.to_json() for skip in self.skipped],
            "diagnosis": self.diagnosis,
            "notes": self.notes,
            "task_seconds": {label: round(seconds, 2) for label, seconds in self.task_seconds.items()},
        }


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
        console.print(f"[bold]{escape(finding['severity'])}[/] {escape(finding['message'])}\n  fix: "
                      f"{escape(finding['fix'])}")
    passed = len(report.checks) - len(report.failures)
    colour = "green" if report.ok else "red"
    console.print(f"[{colour}]{passed} passed, {len(report.failures)} failed, {len(report.skipped)} skipped "
                  f"in {report.seconds:.1f} s[/]")


def run_check(component: str, name: str, dtype: str, direction: str, tol: float,
              compute: Callable[[], Tuple[Mapping[str, Any], Mapping[str, Any]]]) -> CheckResult:
    """Run `compute` -> (outputs, float64 references), judge every tensor against `tol`.

    An exception is a check in status `error` (with its message), never a crash of the whole run.
    """
    from jetson_mamba.verify.compare import compare, worst

    started = time.perf_counter()
    try:
        outputs, references = compute()
    except Exception as exc:  # the kernel under test failed: that is the finding
        text = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:300]
        return CheckResult(component, name, dtype, direction, ERROR, None, tol, message=text,
                           seconds=time.perf_counter() - started)
    errors = compare(outputs, references)
    tensor, error = worst(errors)
    bad = [key for key, value in errors.items() if not value <= tol]
    message = None
    if bad:
        message = "; ".join(f"{key}: " + ("NaN/Inf (unwritten or overflowed output)" if not math.isfinite(errors[key])
                                          else f"{errors[key]:.2e} > {tol:.0e}") for key in bad)
    return CheckResult(component, name, dtype, direction, FAILED if bad else PASSED, error, tol, errors,
                       message, time.perf_counter() - started)
