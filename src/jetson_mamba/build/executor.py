"""Run a `BuildPlan`: sources -> patched work tree -> `pip wheel` -> labelled, stripped, checked wheel.

The compiler's output goes to a full log file; ninja's `[n/N]` lines drive a live progress
bar; a failure is turned into a diagnosis with the fix (`diagnose`). Work trees live under
the user's cache (`$XDG_CACHE_HOME/jetson-mamba/build`), keyed by source and options, so a
rebuild of unchanged sources only relinks.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from jetson_mamba.build.diagnose import diagnose, progress_of, unit_times
from jetson_mamba.build.plan import PACKAGES, BuildPlan, Spec
from jetson_mamba.build.source import Source, obtain, prepare_tree, tree_key
from jetson_mamba.build.wheel import finish_wheel
from jetson_mamba.compat.build_patches import BuildOptions
from jetson_mamba.errors import BuildError, MissingDependencyError, UsageError
from jetson_mamba.probe.fatbin import archs_of_wheel, merge
from jetson_mamba.probe.model import MachineInfo


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
    compiled_units: int = 0  # ninja steps run this time (0: every object was up to date)
    unit_seconds: List[Tuple[str, float]] = field(default_factory=list)
    sass: List[str] = field(default_factory=list)
    command: List[str] = field(default_factory=list)
    env: Dict[str, str] = field(default_factory=dict)
    archived: Optional[str] = None

    def to_json(self) -> Dict[str, Any]:
        data = dataclasses.asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()}


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


def _run_logged(command: List[str], env: Dict[str, str], cwd: Path, log: Path, label: str,
                console: Console) -> Tuple[int, int]:
    """(exit status, ninja steps run): streams everything to `log`, ninja's [n/N] to a progress bar."""
    steps = 0
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("units"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress, log.open("w", buffering=1) as out:
        task = progress.add_task(label, total=None)
        process = subprocess.Popen(command, cwd=str(cwd), env={**os.environ, **env}, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1)
        assert process.stdout is not None
        try:
            for line in process.stdout:
                out.write(line)
                found = progress_of(line)
                if found:
                    steps = max(steps, found[1])
                    progress.update(task, completed=found[0], total=found[1])
        except BaseException:  # Ctrl-C: stop the compilers too, not just this process
            process.kill()
            process.wait()
            raise
        status = process.wait()
        if status == 0:
            progress.update(task, completed=steps, total=steps,
                            description=label if steps else f"{label}: every object up to date")
    return status, steps


def _ninja_units(tree: Path) -> List[Tuple[str, float]]:
    logs = sorted(tree.glob("build/temp*/.ninja_log"))
    return unit_times(logs[-1].read_text(errors="replace")) if logs else []


def build_one(plan: BuildPlan, spec: Spec, sources: Sequence[Path], out_dir: Path, console: Console) -> BuildResult:
    source, tree, patches, reused = _prepare(plan, spec, sources, None)
    kind = PACKAGES[source.name]
    env = plan.env(kind)
    wheel_dir = tree / ".jetson-mamba-wheel"
    shutil.rmtree(wheel_dir, ignore_errors=True)
    command = plan.command(tree, wheel_dir)
    log = tree.with_name(tree.name + ".log")
    result = BuildResult(source.name, source.version, source.origin, tree, reused, patches, log,
                         command=command, env=env)
    started = time.monotonic()
    status, steps = _run_logged(command, env, tree, log, f"{source.name} {source.version}", console)
    result.seconds = round(time.monotonic() - started, 1)
    result.compiled_units = steps
    if status != 0:
        found = diagnose(log.read_text(errors="replace"), plan.jobs)
        evidence = f" ({found.evidence})" if found.evidence else ""
        raise BuildError(f"building {source.name} {source.version} failed: {found.message}{evidence}; "
                         f"full log: {log}", found.fix)
    built = sorted(wheel_dir.glob("*.whl"))
    if len(built) != 1:
        raise BuildError(f"pip wheel reported success but left {len(built)} wheels in {wheel_dir}",
                         f"read the full log: {log}")
    result.wheel = finish_wheel(built[0], out_dir, plan.label)
    result.size = result.wheel.stat().st_size
    result.unit_seconds = _ninja_units(tree)
    archs = merge(list(archs_of_wheel(result.wheel).values()))
    result.sass = list(archs.sass)
    if set(archs.sass) != set(plan.archs) or archs.ptx:
        raise BuildError(f"{result.wheel.name} contains GPU code for sm {', '.join(archs.sass) or 'none'}"
                         f"{' and PTX ' + ', '.join(archs.ptx) if archs.ptx else ''}, not exactly the requested "
                         f"{', '.join(plan.archs)}", f"inspect the patched setup.py in {tree} and the log {log}")
    return result


def build_all(plan: BuildPlan, machine: MachineInfo, sources: Sequence[Path], out_dir: Path,
              archive: Optional[Path], console: Console) -> List[BuildResult]:
    """Build every spec in order; archive each wheel as soon as it exists."""
    _require_toolchain(plan)
    results = []
    for spec in plan.specs:
        result = build_one(plan, spec, sources, out_dir, console)
        if archive is not None and result.wheel is not None:
            from jetson_mamba.archive import add_wheel

            provenance = {"source": result.source, "patches": result.patches,
                          "build_command": " ".join(shlex.quote(c) for c in result.command),
                          "build_env": result.env, "build_seconds": result.seconds, "archs": list(plan.archs),
                          "max_jobs": plan.jobs}
            record = add_wheel(result.wheel, archive, provenance=provenance, built_on=machine)
            result.archived = str(archive / record.filename)
        results.append(result)
    return results
