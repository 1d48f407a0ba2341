"""The outcome of `verify`: one record per check and per skipped component (frozen; cli/verify.py renders it)."""

from __future__ import annotations

import math
import platform
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from jetson_mamba.compat.findings import Finding
from jetson_mamba.results import document

PASSED, FAILED, ERROR = "passed", "failed", "error"


@dataclass(frozen=True)
class CheckResult:
    """One numerical check: a component, a case, a dtype, a direction."""

    component: str  # "selective_scan[torch]", "mamba_ssm.Mamba", "mamba_yolo.VSSBlock", ...
    name: str  # the case, e.g. "variable B/C, z, D, delta_bias, softplus, L=37"
    dtype: str  # "float32", "float16", "bfloat16"
    direction: str  # "forward", "backward", "step", "update", "chunk states"
    status: str  # passed, failed, error
    error: Optional[float]  # the worst relative error over the compared tensors (null in JSON when not finite)
    tolerance: float
    tensors: Dict[str, float] = field(default_factory=dict)
    message: Optional[str] = None
    seconds: float = 0.0
    backend: Optional[str] = None  # the kernel backend checked ("torch", "triton", ...), None for other components

    @property
    def ok(self) -> bool:
        return self.status == PASSED

    @property
    def label(self) -> str:
        return f"{self.component} {self.direction} {self.dtype} [{self.name}]"


@dataclass(frozen=True)
class Skipped:
    component: str
    reason: str


@dataclass(frozen=True)
class VerifyReport:
    device: str
    quick: bool
    checks: List[CheckResult] = field(default_factory=list)
    skipped: List[Skipped] = field(default_factory=list)
    diagnosis: List[Finding] = field(default_factory=list)  # why checks failed, and the fixes
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
        """The `--json` document; timings rounded here (past 0.1 ms per check, 10 ms per task they are noise)."""
        import torch

        data = document(self, ok=self.ok, torch=torch.__version__, python=platform.python_version(),
                        summary={"passed": len(self.checks) - len(self.failures), "failed": len(self.failures),
                                 "skipped": len(self.skipped)})
        data["seconds"] = round(self.seconds, 2)
        data["task_seconds"] = {label: round(seconds, 2) for label, seconds in self.task_seconds.items()}
        for check, result in zip(data["checks"], self.checks):
            check["seconds"] = round(result.seconds, 4)
        return data


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
