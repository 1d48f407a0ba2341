"""Run a `BuildPlan`: sources -> patched work tree -> `pip wheel` -> labelled, stripped, checked wheel.

The compiler's output goes to a full log file; ninja's `[n/N]` lines drive a live progress
bar; a failure is turned into a diagnosis with the fix (`diagnose`). Work trees live under
the user's cache (`$XDG_CACHE_HOME/jetson-mamba/build`), keyed by source and options, so a
rebuild of unchanged sources only relinks.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import shlex
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Dict, List, Optional, Sequence, Tuple

from rich.console import Console

from jetson_mamba.compat.build_patches import BuildOptions
from jetson_mamba.errors import BuildError, MissingDependencyError, UsageError
from jetson_mamba.probe.fatbin import archs_of_wheel, merge
from jetson_mamba.probe.model import MachineInfo
from jetson_mamba.wheelbuild.diagnose import diagnose
from jetson_mamba.wheelbuild.plan import PACKAGES, BuildPlan, Spec
from jetson_mamba.wheelbuild.progress import HEARTBEAT_S, POLL_S, CompileProgress
from jetson_mamba.wheelbuild.schedule import Schedule, Share, count_units, share_jobs
from jetson_mamba.wheelbuild.source import Source, obtain, prepare_tree, tree_key
from jetson_mamba.wheelbuild.wheel import finish_wheel


@dataclass
class BuildResult:
    name: str
    version: str
    source: str
    tree: Path
    reused_tree: bool
    patches: List[str]
    log: Path
    wheel: Optional[Path] = None
    size: int = 0
    seconds: float = 0.0
    compiled_units: int = 0  # units compiled this time (0: every object was up to date)
    unit_seconds: List[Tuple[str, float]] = field(default_factory=list)  # this time's, slowest first
    jobs: int = 0  # its MAX_JOBS
    split_threads: int = 1
    started_s: float = 0.0  # seconds after the first package started: shows what ran beside what
    finished_s: float = 0.0
    sass: List[str] = field(default_factory=list)
    command: List[str] = field(default_factory=list)
    env: Dict[str, str] = field(default_factory=dict)
    archived: Optional[str] = None

    def to_json(self) -> Dict[str, Any]:
        data = dataclasses.asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()}


@dataclass
class BuildReport:
    schedule: Schedule
    results: List[BuildResult]
    seconds: float  # wall time of all compiles (sources prepared before)

    def units(self) -> List[Dict[str, Any]]:
        """Every unit compiled, slowest first."""
        rows = [{"package": r.name, "version": r.version, "unit": unit, "seconds": seconds}
                for r in self.results for unit, seconds in r.unit_seconds]
        return sorted(rows, key=lambda row: -float(row["seconds"]))

    def slowest(self) -> Optional[Dict[str, Any]]:
        units = self.units()
        return units[0] if units else None

    def to_json(self) -> Dict[str, Any]:
        return {"schedule": self.schedule.to_json(), "wall_seconds": self.seconds, "units": self.units(),
                "slowest_unit": self.slowest(), "results": [r.to_json() for r in self.results]}


def work_root() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "jetson-mamba" / "build"


def build_options(plan: BuildPlan) -> BuildOptions:
    return BuildOptions(plan.archs, plan.toolchain.compress_mode, plan.cxx_std)


def _prepare(plan: BuildPlan, spec: Spec, sources: Sequence[Path],
             directory: Optional[Path]) -> Tuple[Source, Path, List[str], bool]:
    """The patched tree of one spec: in `directory` (--prepare-only) or the keyed cache tree."""
    root = work_root()
    source = obtain(spec, sources, plan.toolchain.python, root / "sdists")
    options = build_options(plan)
    if directory is None:
        target = root / f"{source.name}-{source.version}-{tree_key(source, plan, options)}"
    else:
        target = directory / f"{source.name}-{source.version}"
    tree, patches, reused = prepare_tree(source, plan, options, target)
    return source, tree, patches, reused


def prepare_only(plan: BuildPlan, sources: Sequence[Path], directory: Path) -> List[BuildResult]:
    """Patched trees plus `build-<name>.sh` holding the exact environment and command; compiles nothing."""
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"--prepare-only {directory} is a file, not a directory",
                         "pass a new or existing directory to --prepare-only")
    results = []
    for spec in plan.specs:
        source, tree, patches, reused = _prepare(plan, spec, sources, directory)
        kind = PACKAGES[source.name]
        env = plan.env(kind)
        command = plan.command(Path("."), Path("..") / "wheelhouse")
        script = directory / f"build-{source.name}-{source.version}.sh"
        lines = ["#!/bin/sh", f"# {source.name} {source.version} for {', '.join('sm_' + a.replace('.', '') for a in plan.archs)}"
                 f"; patches: {', '.join(patches) or 'none'}",
                 f"# the wheel lands in ../wheelhouse without the local label +{plan.label}: "
                 "`jetson-mamba build --source` on this tree also labels, strips and checks it", "set -e",
                 f"cd \"$(dirname \"$0\")/{tree.name}\""]
        lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())]
        lines.append(" ".join(shlex.quote(c) for c in command))
        script.write_text("\n".join(lines) + "\n")
        script.chmod(0o755)
        results.append(BuildResult(source.name, source.version, source.origin, tree, reused, patches,
                                   log=script, command=command, env=env))
    return results


def _require_toolchain(plan: BuildPlan) -> None:
    toolchain = plan.toolchain
    if not toolchain.nvcc:
        raise MissingDependencyError("nvcc (the CUDA toolkit) was not found; nothing can be compiled",
                                     "install the CUDA toolkit (Jetson: sudo apt install nvidia-jetpack) and "
                                     "export CUDA_HOME=/usr/local/cuda PATH=/usr/local/cuda/bin:$PATH, "
                                     "or write the tree with --prepare-only DIR and build it elsewhere")
    if toolchain.torch_version is None or toolchain.torch_include is None:
        raise MissingDependencyError(f"{toolchain.python} has no torch with C++ headers to compile against",
                                     "run jetson-mamba from the environment whose torch the wheels are for "
                                     "(jetson-mamba never installs torch)")


_GRACE_S = 10.0  # for ninja to stop its compilers after SIGTERM


@dataclass
class _Job:
    """One package's compile: its prepared tree, its share of the machine and its running `pip wheel`."""

    source: Source
    tree: Path
    share: Share
    result: BuildResult
    process: Optional[subprocess.Popen[str]] = None
    status: Optional[int] = None
    stopped: bool = False  # killed because another package failed (or Ctrl-C)


def _job(plan: BuildPlan, prepared: Tuple[Source, Path, List[str], bool], share: Share) -> _Job:
    source, tree, patches, reused = prepared
    env = plan.env(PACKAGES[source.name], share)
    wheel_dir = tree / ".jetson-mamba-wheel"
    shutil.rmtree(wheel_dir, ignore_errors=True)
    command = plan.command(tree, wheel_dir)
    result = BuildResult(source.name, source.version, source.origin, tree, reused, patches,
                         tree.with_name(tree.name + ".log"), command=command, env=env, jobs=share.jobs,
                         split_threads=share.split_threads)
    return _Job(source, tree, share, result)


def _read_lines(key: int, stream: IO[str], lines: queue.Queue[Tuple[int, Optional[str]]]) -> None:
    for line in stream:
        lines.put((key, line))
    lines.put((key, None))


def _run(jobs: Sequence[_Job], progress: CompileProgress, began: float) -> None:
    """Run the jobs' `pip wheel` at the same time: every line to the job's log, ninja's to `progress`.
    The first failure stops the others (their finished objects stay for the next run)."""
    lines: queue.Queue[Tuple[int, Optional[str]]] = queue.Queue()
    logs = [job.result.log.open("w", buffering=1) for job in jobs]
    try:
        for key, job in enumerate(jobs):
            label = f"{job.source.name} {job.source.version}"
            progress.start(str(key), label, job.tree)
            job.result.started_s = round(time.monotonic() - began, 1)
            job.process = subprocess.Popen(job.result.command, cwd=str(job.tree), env={**os.environ, **job.result.env},
                                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                           errors="replace", bufsize=1, start_new_session=True)
            assert job.process.stdout is not None
            threading.Thread(target=_read_lines, args=(key, job.process.stdout, lines), daemon=True).start()
        running = len(jobs)
        while running:
            try:
                key, line = lines.get(timeout=POLL_S)
            except queue.Empty:
                progress.poll()
                continue
            job = jobs[key]
            if line is not None:
                logs[key].write(line)
                progress.feed(str(key), line)
                progress.poll()
                continue
            running -= 1
            assert job.process is not None
            job.status = job.process.wait()
            job.result.finished_s = round(time.monotonic() - began, 1)
            job.result.seconds = round(job.result.finished_s - job.result.started_s, 1)
            job.result.unit_seconds, job.result.compiled_units = progress.end(str(key), job.status)
            if job.status != 0:
                _stop(jobs)
    except BaseException:  # Ctrl-C: stop the compilers too, not just this process
        _stop(jobs)
        raise
    finally:
        for log in logs:
            log.close()


def _stop(jobs: Sequence[_Job]) -> None:
    """End each unfinished job: SIGTERM to its process group (pip, setup.py, ninja; ninja passes the
    signal on to the compilers, which it runs in process groups of their own), SIGKILL if it lingers.
    Each job has a session of its own, so Ctrl-C reaches only this process, which ends them here."""
    live = [job for job in jobs if job.process is not None and job.process.poll() is None]
    for job in live:
        job.stopped = True
        _signal_group(job, signal.SIGTERM)
    deadline = time.monotonic() + _GRACE_S
    for job in live:
        assert job.process is not None
        try:
            job.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(job, signal.SIGKILL)
            job.process.wait()


def _signal_group(job: _Job, signum: int) -> None:
    assert job.process is not None
    try:
        os.killpg(job.process.pid, signum)
    except ProcessLookupError:
        pass


def _finish(plan: BuildPlan, job: _Job, out_dir: Path) -> BuildResult:
    """The built wheel labelled, stripped and checked; or the diagnosis of the failure."""
    source, result, log = job.source, job.result, job.result.log
    if job.status != 0:
        found = diagnose(log.read_text(errors="replace"), job.share.jobs)
        evidence = f" ({found.evidence})" if found.evidence else ""
        raise BuildError(f"building {source.name} {source.version} failed: {found.message}{evidence}; "
                         f"full log: {log}", found.fix)
    wheel_dir = job.tree / ".jetson-mamba-wheel"
    built = sorted(wheel_dir.glob("*.whl"))
    if len(built) != 1:
        raise BuildError(f"pip wheel reported success but left {len(built)} wheels in {wheel_dir}",
                         f"read the full log: {log}")
    result.wheel = finish_wheel(built[0], out_dir, plan.label)
    result.size = result.wheel.stat().st_size
    archs = merge(list(archs_of_wheel(result.wheel).values()))
    result.sass = list(archs.sass)
    if set(archs.sass) != set(plan.archs) or archs.ptx:
        raise BuildError(f"{result.wheel.name} contains GPU code for sm {', '.join(archs.sass) or 'none'}"
                         f"{' and PTX ' + ', '.join(archs.ptx) if archs.ptx else ''}, not exactly the requested "
                         f"{', '.join(plan.archs)}", f"inspect the patched setup.py in {job.tree} and the log {log}")
    return result


def _units_of(tree: Path) -> int:
    setup = tree / "setup.py"
    return count_units(setup.read_text(errors="replace")) if setup.is_file() else 1


def schedule_for(plan: BuildPlan, machine: MachineInfo, trees: Sequence[Tuple[str, Path]]) -> Schedule:
    return share_jobs(plan.jobs, machine.cpu_count or 1, plan.toolchain.split_compile,
                      [(name, _units_of(tree)) for name, tree in trees])


def _describe_schedule(schedule: Schedule, jobs: Sequence[_Job]) -> str:
    parts = [f"{job.source.name} {job.source.version} ({job.share.units} units, MAX_JOBS={job.share.jobs}"
             + (f", --split-compile={job.share.split_threads}" if job.share.split_threads > 1 else "") + ")"
             for job in jobs]
    how = " at the same time" if schedule.parallel else " one after the other" if len(jobs) > 1 else ""
    return f"compiling{how}: {', '.join(parts)}"


def build_all(plan: BuildPlan, machine: MachineInfo, sources: Sequence[Path], out_dir: Path,
              archive: Optional[Path], console: Console, heartbeat_s: float = HEARTBEAT_S) -> BuildReport:
    """Build every spec, at the same time when the job budget allows (`schedule.share_jobs`);
    archive each wheel once all are built."""
    _require_toolchain(plan)
    prepared = [_prepare(plan, spec, sources, None) for spec in plan.specs]
    schedule = schedule_for(plan, machine, [(p[0].name, p[1]) for p in prepared])
    jobs = [_job(plan, p, share) for p, share in zip(prepared, schedule.shares)]
    began = time.monotonic()
    with CompileProgress(console, heartbeat_s) as progress:
        progress.say(_describe_schedule(schedule, jobs))
        for batch in ([jobs] if schedule.parallel else [[job] for job in jobs]):
            _run(batch, progress, began)
            if any(job.status != 0 for job in batch):
                break
        failed = [job for job in jobs if job.status not in (None, 0) and not job.stopped]
        results = [_finish(plan, job, out_dir) for job in failed[:1] + [j for j in jobs if j.status == 0]]
        report = BuildReport(schedule, results, round(time.monotonic() - began, 1))
        slowest = report.slowest()
        if slowest is not None:
            progress.say(f"built in {report.seconds:.1f} s; slowest unit: {slowest['package']} {slowest['unit']} "
                         f"{slowest['seconds']:.1f} s")
    for result in results:
        if archive is not None and result.wheel is not None:
            from jetson_mamba.archive import add_wheel

            provenance = {"source": result.source, "patches": result.patches,
                          "build_command": " ".join(shlex.quote(c) for c in result.command),
                          "build_env": result.env, "build_seconds": result.seconds, "archs": list(plan.archs),
                          "max_jobs": result.jobs}
            record = add_wheel(result.wheel, archive, provenance=provenance, built_on=machine)
            result.archived = str(archive / record.filename)
    return report
