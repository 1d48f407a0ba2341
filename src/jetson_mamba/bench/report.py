"""Bench output: table cells (cli/bench.py prints them), Markdown for benchmarks/RESULTS.md, a PNG chart (matplotlib)."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from jetson_mamba.bench.runner import TIMED, UNAVAILABLE, BenchReport, BenchResult
from jetson_mamba.bench.workloads import WorkloadReport
from jetson_mamba.errors import MissingDependencyError

COLUMNS = ("dtype", "direction", "backend", "median ms", "p10-p90 ms", "GB/s", "% of peak", "x fastest",
           "cuda/this")


def cells(r: BenchResult) -> List[str]:
    if r.status != TIMED or r.timing is None:
        return [r.dtype, r.direction, r.backend, f"{r.status}: {r.message or ''}", "", "", "", "", ""]
    t = r.timing
    return [r.dtype, r.direction, r.backend, f"{t.median_ms:.3f}", f"{t.p10_ms:.3f}-{t.p90_ms:.3f}",
            f"{r.gbps:.3g}" if r.gbps is not None else "-",
            f"{100 * r.peak_fraction:.0f}%" if r.peak_fraction is not None else "-",
            f"{r.ratio:.2f}" if r.ratio is not None else "-",
            f"{r.vs_cuda:.2f}" if r.vs_cuda is not None else "-"]


def by_problem(results: Sequence[BenchResult]) -> Dict[str, List[BenchResult]]:
    """Timed, refused and failed rows per op and shape (backends that cannot run here are listed apart)."""
    grouped: Dict[str, List[BenchResult]] = {}
    for r in results:
        if r.status != UNAVAILABLE:
            grouped.setdefault(f"{r.op} - {r.problem}", []).append(r)
    return grouped


def unavailable(results: Sequence[BenchResult]) -> Dict[str, str]:
    """Backend -> why it could not run here (the first reason seen)."""
    reasons: Dict[str, str] = {}
    for r in results:
        if r.status == UNAVAILABLE:
            name = r.op if r.op != "block" else r.problem.split(":")[0]
            reasons.setdefault(f"{name}[{r.backend}]", r.message or "")
    return reasons


def to_markdown(report: BenchReport, command: str, date: Optional[str] = None) -> str:
    """A Markdown section: machine, date, command, then one table per op and shape."""
    import platform

    import torch

    date = date or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    clock = next((r.timing.clock for r in report.results if r.timing is not None), "-")
    peak = f"{report.device.peak_gbps:.0f} GB/s" if report.device.peak_gbps else "unknown"
    lines = [f"## jetson-mamba bench on {report.device.name} ({date})", "",
             f"torch {torch.__version__}, Python {platform.python_version()}, peak memory bandwidth {peak}. "
             f"Command: `{command}`. Times are medians after warm-up ({clock}); GB/s counts every input read "
             "once and every output written once; `x fastest` is the time over the fastest backend's; `cuda/this` "
             "is the compiled kernel's time over this one (above 1: faster than the compiled kernel).", ""]
    for title, rows in by_problem(report.results).items():
        lines += [f"### {title}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(cell.replace("|", "/") for cell in cells(r)) + " |" for r in rows]
        lines.append("")
    missing = unavailable(report.results)
    if missing:
        lines += ["Not timed here:", ""] + [f"- {name}: {why}" for name, why in missing.items()] + [""]
    return "\n".join(lines)


def require_matplotlib() -> None:
    """Fail before the benchmark runs, not after it (the timings would be lost)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(f"--plot needs matplotlib ({exc})",
                                     "pip install 'jetson-mamba[plot]' (or pip install matplotlib)") from None


def _workload(r: BenchResult) -> str:
    return f"{r.op} {r.problem.split(':')[0]}  {r.dtype} {r.direction}"


def write_plot(report: BenchReport, path: Path) -> Path:
    """Horizontal bars, one row per workload and one bar per backend, on one linear scale: the speed-up
    over the compiled kernel where it was timed, else the time relative to the fastest backend; each bar
    is labelled with its time in ms, so no log axis is needed to read it."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = [r for r in report.results if r.status == TIMED and r.timing is not None]
    against_cuda = any(r.vs_cuda is not None for r in timed)
    workloads = list(dict.fromkeys(_workload(r) for r in timed))
    backends = list(dict.fromkeys(r.backend for r in timed))
    height = 0.8 / max(1, len(backends))
    fig, ax = plt.subplots(figsize=(10.0, 1.0 + 0.35 * max(1, len(workloads) * len(backends))))
    for index, backend in enumerate(backends):
        for row, workload in enumerate(workloads):
            match = next((r for r in timed if r.backend == backend and _workload(r) == workload), None)
            value = None if match is None else (match.vs_cuda if against_cuda else match.ratio)
            if match is None or value is None:
                continue
            y = row + index * height
            ax.barh(y, value, height=height, color=f"C{index}", label=backend if row == 0 else None)
            ax.text(value, y, f" {match.timing.median_ms:.3g} ms", va="center", fontsize=8)
    ax.set_yticks([row + height * (len(backends) - 1) / 2 for row in range(len(workloads))])
    ax.set_yticklabels(workloads, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("speed-up over the compiled CUDA kernel (>1: faster)" if against_cuda
                  else "time relative to the fastest backend (1 = fastest)")
    ax.set_title(f"jetson-mamba bench on {report.device.name}")
    ax.margins(x=0.15)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def workload_table(report: WorkloadReport) -> Tuple[List[str], List[List[str]], List[str]]:
    """(columns, rows, notes) of the workloads table; compiled and ratio columns only when the compiled
    extensions were timed, else a note saying why there is no ratio."""
    with_compiled = report.compiled_missing is None
    columns = ["workload", "batch", "dtype", f"ours ({report.ours_backend})"]
    columns += ["compiled", "ratio compiled/ours"] if with_compiled else []
    rows = []
    for r in report.rows:
        unit = f" {r.unit}"
        cells = [f"{r.workload}: {r.name}", str(r.batch or "-"), r.dtype,
                 f"{r.ours:.3f}{unit}" if r.ours is not None else f"{r.status}: {r.message or ''}"]
        if with_compiled:
            cells += [f"{r.compiled:.3f}{unit}" if r.compiled is not None else "-",
                      f"{r.ratio:.2f}" if r.ratio is not None else "-"]
            if r.ours is not None and r.message:
                cells[-1] += f" ({r.status}: {r.message})"
        rows.append(cells)
    notes = ["ratio = compiled time / our time (tok/s: ours / compiled); above 1: ours is faster."] if with_compiled \
        else [f"No ratio: the compiled kernels cannot run here ({report.compiled_missing})."]
    return columns, rows, notes


def workloads_markdown(report: WorkloadReport) -> str:
    """The workloads as one Markdown table (issue 18's layout) with its note."""
    columns, rows, notes = workload_table(report)
    lines = ["### Workloads through upstream's modules: compiled extensions vs stand-ins", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
    return "\n".join(lines + [""] + notes) + "\n"
