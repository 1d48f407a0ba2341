"""Plan and run every check for the components present on this machine; list the absent ones as skipped."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Dict, FrozenSet, List, Optional, Sequence

from jetson_mamba.ops._compiled import is_standin
from jetson_mamba.ops.backend import use_backend
from jetson_mamba.verify import blocks, kernels
from jetson_mamba.verify.cases import conv_cases, scan_cases
from jetson_mamba.verify.compare import exact_float32
from jetson_mamba.verify.extensions import (
    ConvAdapter,
    MambaScanAdapter,
    VMambaCoreAdapter,
    conv_uses_buffers,
    import_module,
)
from jetson_mamba.verify.plan import Plan, Task, absent_or_broken
from jetson_mamba.verify.report import ERROR, CheckResult, Skipped, VerifyReport

if TYPE_CHECKING:  # rich is not imported at run time: a target being verified may lack it
    from rich.console import Console

logger = logging.getLogger("jetson_mamba.verify")

QUICK_DTYPES = ("float32", "bfloat16")
FULL_DTYPES = ("float32", "float16", "bfloat16")
OPS = ("selective_scan", "causal_conv1d")
# (module name, what it is, which adapter checks it)
EXTENSIONS = (
    ("selective_scan_cuda", "mamba-ssm's compiled selective scan", "scan"),
    ("causal_conv1d_cuda", "causal-conv1d's compiled kernels", "conv"),
    ("selective_scan_cuda_core", "VMamba's compiled selective scan (used by Mamba-YOLO)", "core"),
    ("selective_scan_cuda_oflex", "VMamba's compiled selective scan, oflex build (used by Mamba-YOLO)", "core"),
)
STANDINS = ("selective_scan_cuda", "causal_conv1d_cuda", "causal_conv1d_cuda_legacy", "selective_scan_cuda_core",
            "selective_scan_cuda_oflex")


def _torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)


def _every_case(case: Any) -> Optional[str]:
    return None


def _kernel_checks(plan: Plan, component: str, module: Any, op: str, dtype: Any, salt: int,
                   offers: FrozenSet[str], supports: Callable[[Any], Optional[str]] = _every_case,
                   backend: Optional[str] = None) -> List[Task]:
    """Tasks for every case of `op` (that `supports` takes) on one kernel module (a backend, named in each
    result, or an extension adapter) offering the optional functions `offers` (ops.backend.CONTRACTS)."""
    tasks: List[Task] = []
    cases = scan_cases(plan.quick) if op == "selective_scan" else conv_cases(plan.quick)
    for index, case in enumerate(cases):
        if supports(case) is not None:
            continue

        def run(case: Any = case, index: int = index) -> List[CheckResult]:
            generator = plan.generator(salt + index)
            if op == "selective_scan":
                results = kernels.check_scan(component, module, case, dtype, plan.device, generator,
                                             with_x="selective_scan_forward_x" in offers)
            else:
                results = kernels.check_conv(component, module, case, dtype, plan.device, generator)
            return [replace(result, backend=backend) for result in results]

        tasks.append(Task(f"{component} {kernels.dtype_name(dtype)} {case.label}", run))
    if "causal_conv1d_update" in offers:
        tasks.append(Task(f"{component} update {kernels.dtype_name(dtype)}", lambda: [replace(
            kernels.check_conv_update(component, module, dtype, plan.device, plan.generator(salt + 99)),
            backend=backend)]))
    return tasks


def _plan_backends(plan: Plan) -> None:
    """Every registered backend of every op (built in, or registered by a test or a plugin)."""
    from jetson_mamba.errors import BackendUnavailableError
    from jetson_mamba.ops.backend import list_backends, select_backend

    for op in OPS:
        for info in list_backends(op, plan.device):
            if plan.backends and info.name not in plan.backends:
                continue
            component = f"{op}[{info.name}]"
            reasons: Dict[str, str] = {}
            for dtype_index, name in enumerate(plan.dtypes):
                dtype = _torch_dtype(name)
                try:
                    backend = select_backend(op, plan.device, dtype, name=info.name)
                except BackendUnavailableError as exc:
                    reasons[name] = exc.message
                    continue
                plan.tasks.extend(_kernel_checks(plan, component, backend.module, op, dtype, 100 * dtype_index,
                                                 backend.offers, backend=info.name))
            if len(reasons) == len(plan.dtypes):  # unusable whatever the dtype: one entry, the first reason
                plan.skipped.append(Skipped(component, next(iter(reasons.values()))))
            else:
                plan.skipped.extend(Skipped(f"{component} {name}", why) for name, why in reasons.items())


def check_backend_names(backends: Optional[Sequence[str]], device: str, option: str = "--backend") -> None:
    """Backend names asked for must exist for some op: a typo must not turn into a run that checks nothing."""
    from jetson_mamba.errors import UsageError
    from jetson_mamba.ops.backend import list_backends

    known = {info.name for op in OPS for info in list_backends(op, device)}
    unknown = [name for name in backends or () if name not in known]
    if unknown:
        raise UsageError(f"unknown backend(s) {', '.join(unknown)}; known here: {', '.join(sorted(known))}",
                         f"use {option} with one of {', '.join(sorted(known))} (comma-separated)")


def _adapter(kind: str, module: Any) -> Any:
    if kind == "scan":
        return MambaScanAdapter(module)
    if kind == "core":
        return VMambaCoreAdapter(module)
    return ConvAdapter(module, buffers=conv_uses_buffers(module))


def _plan_extensions(plan: Plan) -> None:
    """The compiled extensions through their own APIs (CUDA only), and jetson-mamba's stand-ins for them."""
    import torch

    on_gpu = torch.device(plan.device).type == "cuda"
    if not plan.backends or "cuda" in plan.backends:
        for name, what, kind in EXTENSIONS:
            module, why = import_module(name)
            if module is None:
                absent_or_broken(plan, name, what, why)
                continue
            if is_standin(module) or "jetson_mamba" in str(getattr(module, "__file__", "")):
                continue  # a stand-in installed under the extension's name: checked below
            if not on_gpu:
                plan.skipped.append(Skipped(name, f"{what}: compiled for CUDA, and there is no GPU here"))
                continue
            op = "causal_conv1d" if kind == "conv" else "selective_scan"
            for index, dtype_name in enumerate(plan.dtypes):
                adapter = _adapter(kind, module)
                plan.tasks.extend(_kernel_checks(plan, name, adapter, op, _torch_dtype(dtype_name),
                                                 1000 + 100 * index, adapter.OFFERS, adapter.supports))
    for name in STANDINS:
        module, why = import_module(f"jetson_mamba.ops.standins.{name}")
        component = f"standins.{name}"
        if module is None:
            absent_or_broken(plan, component, "jetson-mamba's stand-in", why)
            continue
        kind = "conv" if "conv" in name else ("core" if name.startswith("selective_scan_cuda_") else "scan")
        op = "causal_conv1d" if kind == "conv" else "selective_scan"
        why = plan.forced_unusable(op)
        if why is not None:
            plan.skipped.append(Skipped(component, f"--backend {plan.forced}: {why}"))
            continue
        for index, dtype_name in enumerate(("float32",) if plan.quick else plan.dtypes):
            adapter = _adapter(kind, module)
            plan.tasks.extend(_kernel_checks(plan, component, adapter, op, _torch_dtype(dtype_name),
                                             2000 + 100 * index, adapter.OFFERS, adapter.supports))


def make_plan(quick: bool, device: Optional[str] = None, backends: Optional[Sequence[str]] = None,
              seed: Optional[int] = None) -> Plan:
    """What to check here: quick = small shapes, fp32 and bf16; full = odd shapes, every dtype."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    plan = Plan(device=device, quick=quick, dtypes=QUICK_DTYPES if quick else FULL_DTYPES,
                backends=list(backends) if backends else None,
                seed=seed if seed is not None else int.from_bytes(os.urandom(4), "little"),
                tasks=[], skipped=[])
    check_backend_names(plan.backends, plan.device)
    if os.environ.get("JETSON_MAMBA_TRITON_AUTOTUNE") == "0":
        plan.notes.append("jetson-mamba's Triton kernels run their first config (JETSON_MAMBA_TRITON_AUTOTUNE=0)")
    _plan_backends(plan)
    _plan_extensions(plan)
    blocks.plan_blocks(plan)
    return plan


def execute(plan: Plan, console: Optional[Console] = None) -> VerifyReport:
    """Run the tasks (with a progress bar on `console`, none without one) and collect the report.

    Without a console rich is not imported: `install` runs this in a target that may not have it."""
    checks: List[CheckResult] = []
    task_seconds: Dict[str, float] = {}
    started = time.perf_counter()
    with _progress_bar(console) as bar, use_backend(plan.forced), exact_float32():
        task_id = bar.add_task("verify", total=len(plan.tasks))
        for task in plan.tasks:
            bar.update(task_id, description=task.label[:70])
            task_started = time.perf_counter()
            try:
                checks.extend(task.run())
            except Exception as exc:  # building the inputs or the reference failed: a failed check, not a crash
                message = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                checks.append(CheckResult(task.label, "setup", "-", "setup", ERROR, None, 0.0, message=message))
            task_seconds[task.label] = time.perf_counter() - task_started
            # with `jetson-mamba -v`: a trace on stderr that survives a run killed by a time limit
            logger.info("verify: %s: %.1f s", task.label, task_seconds[task.label])
            bar.advance(task_id)
    return VerifyReport(device=_describe(plan.device), quick=plan.quick, checks=checks, skipped=list(plan.skipped),
                        seconds=time.perf_counter() - started, seed=plan.seed, notes=list(plan.notes),
                        task_seconds=task_seconds)


class _NoBar:
    """The part of rich's Progress that execute uses, doing nothing."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def update(self, *args: Any, **kwargs: Any) -> None:
        return None

    advance = update


def _progress_bar(console: Optional[Console]) -> Any:
    if console is None:
        return _NoBar()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, console=console, transient=True)


def _describe(device: str) -> str:
    import torch

    dev = torch.device(device)
    if dev.type != "cuda":
        return "cpu"
    major, minor = torch.cuda.get_device_capability(dev)
    return f"{device} ({torch.cuda.get_device_name(dev)}, sm_{major}{minor})"
