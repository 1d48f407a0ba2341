"""Time every available backend of every op side by side; refuse to time one that computes wrong numbers.

Kernels are timed through the backend contract (`selective_scan_forward` / `_backward`, ...), the same
functions the public ops call, so backends compare like for like. Before a backend is timed for an
op and dtype, the matching verify check runs; a backend that fails it is reported as refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

from jetson_mamba.bench.devices import DeviceInfo, describe_device
from jetson_mamba.bench.shapes import Problem
from jetson_mamba.bench.timing import Timing, measure, rotation_count
from jetson_mamba.ops.backend import use_backend
from jetson_mamba.results import SCHEMA_VERSION
from jetson_mamba.verify.cases import conv_inputs, scan_inputs

if TYPE_CHECKING:
    from rich.console import Console

TIMED, REFUSED, UNAVAILABLE, ERROR = "timed", "refused", "unavailable", "error"
FORWARD, FORWARD_BACKWARD = "forward", "forward+backward"


@dataclass(frozen=True)
class BenchResult:
    op: str
    problem: str  # the problem's label
    dtype: str
    direction: str
    backend: str
    status: str  # timed, refused, unavailable, error
    timing: Optional[Timing] = None
    bytes: Optional[int] = None  # minimum traffic: every input read once, every output written once
    gbps: Optional[float] = None
    peak_fraction: Optional[float] = None
    ratio: Optional[float] = None  # median / fastest median of the same op, problem, dtype and direction
    vs_cuda: Optional[float] = None  # compiled kernel's median / this median (> 1: faster than compiled)
    message: Optional[str] = None

    @property
    def group(self) -> Tuple[str, str, str, str]:
        return (self.op, self.problem, self.dtype, self.direction)

    def to_json(self) -> Dict[str, Any]:
        data: Dict[str, Any] = {"op": self.op, "problem": self.problem, "dtype": self.dtype,
                                "direction": self.direction, "backend": self.backend, "status": self.status,
                                "message": self.message}
        if self.timing is not None:
            t = self.timing
            data.update({"median_ms": t.median_ms, "p10_ms": t.p10_ms, "p90_ms": t.p90_ms, "min_ms": t.min_ms,
                         "spread": t.spread, "samples": t.samples, "clock": t.clock, "bytes": self.bytes,
                         "gbps": self.gbps, "peak_fraction": self.peak_fraction, "ratio_to_fastest": self.ratio,
                         "cuda_time_over_this": self.vs_cuda})
        return data


@dataclass(frozen=True)
class BenchReport:
    device: DeviceInfo
    results: Tuple[BenchResult, ...] = ()

    def to_json(self) -> Dict[str, Any]:
        import platform

        import torch

        return {"schema_version": SCHEMA_VERSION, "device": self.device.name, "peak_gbps": self.device.peak_gbps, "torch": torch.__version__,
                "python": platform.python_version(), "results": [r.to_json() for r in self.results]}


@dataclass
class Settings:
    device: str
    dtypes: Sequence[str]
    directions: Sequence[str]
    backends: Optional[Sequence[str]]
    warmup: int
    repeat: int
    max_time_s: float = 10.0


def _nbytes(*tensors: Any) -> int:
    total = 0
    for t in tensors:
        if isinstance(t, (tuple, list)):
            total += _nbytes(*t)
        elif t is not None and hasattr(t, "element_size"):
            total += t.numel() * t.element_size()
    return total


def _first_line(exc: BaseException) -> str:
    return (f"{type(exc).__name__}: {exc}".strip().splitlines() or [type(exc).__name__])[0][:300]


class _Gate:
    """The verify check of (op, backend, dtype), run once: None when it passed, else why not."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.seen: Dict[Tuple[str, str, str], Optional[str]] = {}

    def __call__(self, op: str, backend: str, module: Any, dtype: Any) -> Optional[str]:
        import torch

        from jetson_mamba.verify import kernels
        from jetson_mamba.verify.cases import conv_cases, scan_cases

        key = (op, backend, str(dtype))
        if key not in self.seen:
            generator = torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))
            if op == "selective_scan":
                checks = [r for case in scan_cases(quick=True) for r in kernels.check_scan(
                    f"{op}[{backend}]", module, case, dtype, self.settings.device, generator)]
            else:
                checks = [r for case in conv_cases(quick=True) for r in kernels.check_conv(
                    f"{op}[{backend}]", module, case, dtype, self.settings.device, generator)]
            bad = [c for c in checks if not c.ok]
            self.seen[key] = (None if not bad else "correctness check failed, not timed: "
                              + "; ".join(f"{c.direction} {c.name}: {c.message}" for c in bad[:2]))
        return self.seen[key]


def _kernel_calls(problem: Problem, module: Any, dtype: Any, device: str, sets: int,
                  generator: Any) -> Tuple[Callable[[int], Any], Callable[[int], Any], int, int]:
    """(forward(i), forward+backward(i), forward bytes, forward+backward bytes) over `sets` input copies."""
    import torch

    if problem.scan is not None:
        case: Any = problem.scan
        inputs = [scan_inputs(case, dtype, device, generator) for _ in range(sets)]
        args = [(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], case.softplus)
                for x in inputs]
        forward_fn, backward_fn = module.selective_scan_forward, module.selective_scan_backward
        like = inputs[0]["u"]
    else:
        case = problem.conv
        inputs = [conv_inputs(case, dtype, device, generator) for _ in range(sets)]
        args = [(x["x"], x["weight"], x["bias"], None, None, False, case.silu) for x in inputs]
        forward_fn = module.causal_conv1d_forward
        like = inputs[0]["x"]

        def backward_fn(x: Any, weight: Any, bias: Any, seq_idx: Any, init: Any, _final: bool, silu: bool,
                        dout: Any) -> Any:
            return module.causal_conv1d_backward(x, weight, bias, dout, seq_idx, init, None, silu)

    douts = [torch.randn(like.shape, generator=generator).to(device=device, dtype=dtype) for _ in range(sets)]
    out = forward_fn(*args[0])
    grads = backward_fn(*args[0], douts[0])
    in_bytes = _nbytes(*args[0])
    fwd_bytes = in_bytes + _nbytes(out)
    both_bytes = fwd_bytes + in_bytes + _nbytes(douts[0]) + _nbytes(grads)

    def forward(i: int) -> Any:
        return forward_fn(*args[i % sets])

    def forward_backward(i: int) -> Any:
        forward_fn(*args[i % sets])
        return backward_fn(*args[i % sets], douts[i % sets])

    return forward, forward_backward, fwd_bytes, both_bytes


def _time_kernels(problem: Problem, settings: Settings, device: DeviceInfo, gate: _Gate,
                  advance: Callable[[str], None]) -> List[BenchResult]:
    import torch

    from jetson_mamba.errors import BackendUnavailableError
    from jetson_mamba.ops.backend import list_backends, select_backend

    results: List[BenchResult] = []
    for dtype_name in settings.dtypes:
        dtype = getattr(torch, dtype_name)
        for info in list_backends(problem.op, settings.device, dtype):
            if settings.backends and info.name not in settings.backends:
                continue
            advance(f"{problem.op} {info.name} {dtype_name}")

            result = partial(_result, problem.op, problem.label, dtype_name, info.name)

            try:
                _, module = select_backend(problem.op, settings.device, dtype, name=info.name)
            except BackendUnavailableError as exc:
                results += [result(d, UNAVAILABLE, exc.message) for d in settings.directions]
                continue
            refused = gate(problem.op, info.name, module, dtype)
            if refused:
                results += [result(d, REFUSED, refused) for d in settings.directions]
                continue
            try:
                forward, both, fwd_bytes, both_bytes = _kernel_calls(
                    problem, module, dtype, settings.device, 1, torch.Generator().manual_seed(0))
                sets = rotation_count(fwd_bytes, device.l2_bytes)
                if sets > 1:
                    forward, both, fwd_bytes, both_bytes = _kernel_calls(
                        problem, module, dtype, settings.device, sets, torch.Generator().manual_seed(0))
                for direction in settings.directions:
                    fn, nbytes = (forward, fwd_bytes) if direction == FORWARD else (both, both_bytes)
                    timing = measure(fn, settings.device, settings.warmup, settings.repeat,
                                     max_time_s=settings.max_time_s)
                    gbps = nbytes / (timing.median_ms * 1e-3) / 1e9
                    results.append(result(direction, TIMED, timing=timing, bytes=nbytes, gbps=gbps,
                                          peak_fraction=gbps / device.peak_gbps if device.peak_gbps else None))
            except Exception as exc:  # out of memory, a kernel that does not launch: report, keep going
                results += [result(d, ERROR, _first_line(exc)) for d in settings.directions
                            if not any(r.direction == d and r.backend == info.name and r.dtype == dtype_name
                                       for r in results)]
    return results


def _result(op: str, problem: str, dtype: str, backend: str, direction: str, status: str,
            message: Optional[str] = None, **fields: Any) -> BenchResult:
    return BenchResult(op, problem, dtype, direction, backend, status, message=message, **fields)


def _describe(bar: Any, task: Any, name: str, text: str) -> None:
    bar.update(task, description=f"{name}: {text}"[:70])


def _block_call(model: Any, x: Any, direction: str) -> Callable[[int], Any]:
    """One timed call: inference (no autograd) or a training step's forward and backward."""
    import torch

    def forward(_i: int) -> Any:
        with torch.no_grad():
            return model(x)

    def forward_backward(_i: int) -> Any:
        model(x).float().square().mean().backward()

    return forward if direction == FORWARD else forward_backward


def _build_block(problem: Problem) -> Any:
    """The block to time, or raise ImportError saying why it is absent."""
    if problem.block == "mamba_ssm.Mamba":
        from mamba_ssm.modules.mamba_simple import Mamba

        return Mamba(d_model=problem.block_shape[-1], d_state=16, d_conv=4, expand=2)
    from jetson_mamba.models.mamba_yolo import VSSBlock

    channels = problem.block_shape[1]
    return VSSBlock(in_channels=channels, hidden_dim=channels, ssm_d_state=16)


def _time_block(problem: Problem, settings: Settings, gate: _Gate,
                advance: Callable[[str], None]) -> List[BenchResult]:
    """Block latency. jetson-mamba's blocks run once per selective-scan backend (forced); mamba_ssm's
    `Mamba` runs on whatever kernels mamba_ssm itself calls ("installed")."""
    import torch

    from jetson_mamba.errors import BackendUnavailableError
    from jetson_mamba.ops.backend import list_backends, select_backend

    results: List[BenchResult] = []
    try:
        block = _build_block(problem)
    except Exception as exc:  # mamba_ssm absent or broken: say so
        return [BenchResult("block", problem.label, d, direction, "-", UNAVAILABLE, message=_first_line(exc))
                for d in settings.dtypes for direction in settings.directions]
    ours = problem.block != "mamba_ssm.Mamba"
    for dtype_name in settings.dtypes:
        dtype = getattr(torch, dtype_name)
        names = [i.name for i in list_backends("selective_scan", settings.device, dtype)] if ours else ["installed"]
        for name in names:
            if settings.backends and ours and name not in settings.backends:
                continue
            advance(f"{problem.block} {name} {dtype_name}")

            result = partial(_result, "block", problem.label, dtype_name, name)

            refused = None
            if ours:
                try:
                    _, module = select_backend("selective_scan", settings.device, dtype, name=name)
                    refused = gate("selective_scan", name, module, dtype)
                except BackendUnavailableError as exc:
                    results += [result(d, UNAVAILABLE, exc.message) for d in settings.directions]
                    continue
            if refused:
                results += [result(d, REFUSED, refused) for d in settings.directions]
                continue
            try:
                model = block.to(device=settings.device, dtype=dtype).train()
                x = torch.randn(*problem.block_shape, device=settings.device, dtype=dtype)
                with use_backend(name if ours else None):
                    for direction in settings.directions:
                        timing = measure(_block_call(model, x, direction), settings.device, settings.warmup, settings.repeat,
                                         max_time_s=settings.max_time_s)
                        results.append(result(direction, TIMED, timing=timing))
            except Exception as exc:
                results += [result(d, ERROR, _first_line(exc)) for d in settings.directions
                            if not any(r.direction == d and r.backend == name and r.dtype == dtype_name
                                       for r in results)]
    return results


def _with_ratios(results: List[BenchResult]) -> Tuple[BenchResult, ...]:
    """Each time over the fastest of its group, and the compiled (cuda) time over it: the target ratio."""
    best: Dict[Tuple[str, str, str, str], float] = {}
    cuda: Dict[Tuple[str, str, str, str], float] = {}
    for r in results:
        if r.timing is not None:
            best[r.group] = min(best.get(r.group, r.timing.median_ms), r.timing.median_ms)
            if r.backend == "cuda":
                cuda[r.group] = r.timing.median_ms
    return tuple(replace(r, ratio=r.timing.median_ms / best[r.group],
                         vs_cuda=cuda[r.group] / r.timing.median_ms if r.group in cuda else None)
                 if r.timing is not None and best.get(r.group) else r for r in results)


def run_bench(problems: Sequence[Problem], settings: Settings, console: Optional[Console] = None) -> BenchReport:
    """Time every problem on every selected backend, with a progress bar on `console` (none without one)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    device = describe_device(settings.device)
    results: List[BenchResult] = []
    gate = _Gate(settings)
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console,
                  transient=True, disable=console is None) as bar:
        task = bar.add_task("bench", total=len(problems))
        for problem in problems:
            advance = partial(_describe, bar, task, problem.name)
            if problem.op == "block":
                results += _time_block(problem, settings, gate, advance)
            else:
                results += _time_kernels(problem, settings, device, gate, advance)
            bar.advance(task)
    return BenchReport(device, _with_ratios(results))
