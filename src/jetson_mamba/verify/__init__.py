"""`jetson-mamba verify`: prove the kernels compute the right numbers on this machine.

Every component present is checked against float64 references (ops/<op>/naive.py) on fresh random
inputs, forward and backward, in float32 / float16 / bfloat16 where it supports them, with outputs
NaN-poisoned first (an unwritten output fails). Components:

- each kernel backend of each op (`selective_scan[cuda|triton|torch|...]`, `causal_conv1d[...]`,
  including any registered with `jetson_mamba.ops.backend.register_backend`), and the decode update;
- the compiled extensions through their own APIs (`selective_scan_cuda`, `causal_conv1d_cuda`,
  VMamba's `selective_scan_cuda_core` and `selective_scan_cuda_oflex`) and jetson-mamba's stand-ins for
  them (`standins.*`);
- the public ops through dispatch and autograd (`ops.selective_scan_fn`, `ops.causal_conv1d_fn`,
  `ops.mamba_chunk_scan_combined`);
- mamba_ssm's `Mamba` and `Mamba2` (fused paths, backward, `step()`), when mamba_ssm imports;
- the Mamba-YOLO blocks (`mamba_yolo.SS2D`, `mamba_yolo.VSSBlock`, `mamba_yolo.XSSBlock`).

`--quick` (small shapes, float32 and bfloat16) takes seconds, also on the CPU. `--backend NAME` limits the
kernel-backend checks; a single built-in one is also chosen (`ops.use_backend`) for the checks that
dispatch, which are skipped when it cannot run here. Float32 is checked with TF32 off.

JSON (`jetson-mamba verify --json`, also `python -m jetson_mamba verify --quick --json`)::

    {
      "ok": true,                      # every check passed (and there was at least one)
      "quick": true,
      "device": "cpu" | "cuda (NVIDIA H200, sm_90)",
      "torch": "2.11.0+cu130", "python": "3.12.3", "seed": 123, "seconds": 4.2,
      "summary": {"passed": 40, "failed": 0, "skipped": 5},
      "schema_version": 1,             # raised only when a key is renamed or removed
      "checks": [{
          "component": "selective_scan[torch]",  # what was checked
          "name": "variable B/C, z, D, delta_bias, softplus, 2x6x37 N=4",   # the case
          "dtype": "float32", "direction": "forward" | "backward" | "update" | "step",
          "status": "passed" | "failed" | "error",
          "error": 3.1e-07,                # worst relative error ||out-ref||/||ref|| (null: NaN/Inf or error)
          "tolerance": 0.0001,
          "tensors": {"out": 3.1e-07, "last_state": 2.0e-07},   # each compared tensor
          "message": null,                 # on failure: which tensors, or the exception
          "seconds": 0.01,
          "backend": "torch"}],          # the kernel backend checked (null for extensions and blocks)
      "skipped": [{"component": "selective_scan_cuda", "reason": "... not installed"}],
      "diagnosis": [{"id": "...", "severity": "error", "message": "...", "fix": "..."}],
      "error": {"error": "verification", "exit_code": 10, "message": "...", "fix": "..."}   # only on failure
    }

Exit status: 0 when every check passed, 10 (VerificationError) when any failed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from jetson_mamba.compat.findings import Finding
from jetson_mamba.errors import VerificationError
from jetson_mamba.verify.report import CheckResult, Skipped, VerifyReport

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["CheckResult", "Skipped", "VerifyReport", "diagnose_failures", "failure_error", "require_torch",
           "run_verify"]

_KERNEL_IMAGE = "no kernel image is available"


def require_torch() -> None:
    """verify and bench need torch in this interpreter; say so (with the fix) instead of a traceback."""
    import sys

    from jetson_mamba.errors import MissingDependencyError

    try:
        import torch  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install raising OSError on its libraries
        raise MissingDependencyError(
            f"torch cannot be imported by {sys.executable}: {type(exc).__name__}: {exc}",
            "install PyTorch for this machine (on a Jetson, NVIDIA's JetPack wheel); jetson-mamba never installs "
            "torch. `jetson-mamba doctor` shows what is wrong") from None


def run_verify(quick: bool = False, device: Optional[str] = None, backends: Optional[Sequence[str]] = None,
               seed: Optional[int] = None, console: Optional[Console] = None) -> VerifyReport:
    """Plan and run every check (a progress bar on `console`, if given); on failure the report carries
    the diagnosis."""
    from jetson_mamba.verify.runner import execute, make_plan

    report = execute(make_plan(quick, device, backends, seed), console=console)
    return replace(report, diagnosis=diagnose_failures(report)) if report.failures else report


def _gpu_arch() -> Optional[str]:
    """This GPU's compute capability as "8.7" (None without one)."""
    import torch

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability()
    return f"{major}.{minor}"


def _passing_backends(report: VerifyReport) -> List[str]:
    """Kernel backends all of whose checks passed, e.g. ['torch', 'triton']."""
    status: Dict[str, bool] = {}
    for check in report.checks:
        if check.backend is not None:
            status[check.backend] = status.get(check.backend, True) and check.ok
    return [name for name, ok in status.items() if ok]


def diagnose_failures(report: VerifyReport) -> List[Finding]:
    """Why checks failed and the fix: what the failures show, plus the doctor's error/warning findings
    for this machine (with the runtime patches in effect, so an applied patch is not offered again)."""
    found: List[Finding] = []
    failed = report.failures
    no_image = sorted({check.component for check in failed if _KERNEL_IMAGE in (check.message or "")})
    if no_image:
        arch = _gpu_arch()
        sm = f"sm_{arch.replace('.', '')}" if arch else "this GPU's"
        found.append(Finding("no-kernel-image", "error",
                             f"{', '.join(no_image)}: the compiled extension has no {sm} code "
                             "(`no kernel image is available for execution on the device`)",
                             f"`jetson-mamba build --arch {arch or '<arch>'}`, then `jetson-mamba install` the wheels"))
    bad_backends = sorted({check.backend for check in failed if check.backend is not None})
    good = [name for name in _passing_backends(report) if name not in bad_backends]
    if bad_backends:
        if good:
            alternative = f"force a backend that passed: `JETSON_MAMBA_BACKEND={good[0]}`"
        elif "torch" not in bad_backends:
            alternative = ("use the portable backend: `JETSON_MAMBA_BACKEND=torch` "
                           "(check it with `jetson-mamba verify --backend torch`)")
        else:
            alternative = "no backend computes correct numbers here: run `jetson-mamba doctor` and report it"
        found.append(Finding("wrong-kernel-backend", "error",
                             f"backend(s) {', '.join(bad_backends)} compute wrong numbers on this machine", alternative))
    try:
        from jetson_mamba.compat.findings import diagnose_machine
        from jetson_mamba.compat.installed import patches_in_effect
        from jetson_mamba.probe import probe_machine

        machine = probe_machine()
        found += [finding for finding in diagnose_machine(machine, patches_in_effect(machine))
                  if finding.severity != "info"]
    except Exception as exc:  # the diagnosis must never hide the failures themselves
        found.append(Finding("doctor-unavailable", "warning", f"the doctor could not run: {type(exc).__name__}: {exc}",
                             "run `jetson-mamba doctor` separately"))
    return found


def report_document(report: VerifyReport) -> Tuple[Dict[str, Any], int]:
    """The `--json` document of a report (with "error" on failure) and the exit status."""
    data = report.to_json()
    if report.ok:
        return data, 0
    error = failure_error(report)
    data["error"] = error.to_json()
    return data, error.exit_code


def failure_error(report: VerifyReport) -> VerificationError:
    """The error that makes `verify` exit non-zero: names the failed checks and the first fix."""
    failed = report.failures
    names = "; ".join(f"{check.label}: {check.message}" for check in failed[:3])
    more = f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
    errors = [finding for finding in report.diagnosis if finding.severity == "error"]
    fix = errors[0].fix if errors else "run `jetson-mamba doctor`, and rerun `jetson-mamba verify` to confirm"
    if not report.checks:
        first = f": {report.skipped[0].component}: {report.skipped[0].reason}" if report.skipped else ""
        return VerificationError(f"nothing could be checked here{first}",
                                 "pick a backend this machine can run (`jetson-mamba verify` without --backend "
                                 "checks every one), or run `jetson-mamba doctor` to see what is missing")
    return VerificationError(f"{len(failed)} of {len(report.checks)} checks failed: {names}{more}", fix)
