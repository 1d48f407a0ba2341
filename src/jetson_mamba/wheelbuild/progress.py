"""Where a build's time goes, while it runs, on a terminal and in a log.

torch's BuildExtension compiles with ninja. Writing to a pipe, ninja prints `[k/N] command` when a
unit finishes and then appends the unit's start and end (ms) to `.ninja_log` in the build
directory; `build.ninja` names every unit beforehand. From those three this module prints, when the
output is not a terminal (CI logs, `| tee`), one line per finished unit (name, seconds, k/N) and a
heartbeat naming the units not finished yet whenever nothing was printed for `heartbeat_s`; on a
terminal, a live bar per package with the same unit lines above it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from jetson_mamba.wheelbuild.diagnose import progress_of, unit_times

HEARTBEAT_S = 20.0  # a log shows a line at least this often while anything compiles (CI wants <= 30 s)
POLL_S = 0.5  # how often running builds are looked at
_OUTPUT = re.compile(r"\s-o\s+(\S+)")
_BUILD_EDGE = re.compile(r"^build\s+(\S+?\.o)\s*:", re.MULTILINE)


def unit_of(line: str) -> Optional[str]:
    """The object file a ninja `[k/N] ... -o path/x.o ...` line finished ("x.o")."""
    match = _OUTPUT.search(line)
    if match:
        return Path(match.group(1).strip("'\"")).name
    objects = [token for token in line.split() if token.endswith(".o")]
    return Path(objects[-1]).name if objects else None


def ninja_units(build_ninja: str) -> List[str]:
    """The object files a `build.ninja` makes, in its order."""
    return [Path(out).name for out in _BUILD_EDGE.findall(build_ninja)]


class NinjaLog:
    """The entries ninja appends to a tree's `.ninja_log` files from now on (a reused tree has old ones)."""

    def __init__(self, tree: Path) -> None:
        self.tree = tree
        self.offsets: Dict[Path, int] = {p: p.stat().st_size for p in self._logs()}

    def _logs(self) -> List[Path]:
        return sorted(self.tree.glob("build/temp*/.ninja_log"))

    def new_times(self) -> Dict[str, float]:
        """{object file: seconds} of the whole lines appended since the last call."""
        found: Dict[str, float] = {}
        for path in self._logs():
            offset = self.offsets.get(path, 0)
            try:
                with path.open("rb") as handle:
                    size = handle.seek(0, 2)
                    offset = 0 if size < offset else offset  # ninja rewrote (compacted) its log
                    handle.seek(offset)
                    chunk = handle.read(size - offset)
            except OSError:
                continue
            complete = chunk[:chunk.rfind(b"\n") + 1]
            self.offsets[path] = offset + len(complete)
            found.update(unit_times(complete.decode(errors="replace")))
        return found


@dataclass
class _Package:
    label: str
    tree: Path
    started: float
    log: NinjaLog
    task: Optional[TaskID] = None
    total: Optional[int] = None
    done: int = 0
    outputs: List[str] = field(default_factory=list)  # every unit build.ninja names
    finished: List[str] = field(default_factory=list)  # units ninja reported, in order
    waiting: List[Tuple[str, int]] = field(default_factory=list)  # (unit, k) reported, seconds not yet logged
    logged: Dict[str, float] = field(default_factory=dict)  # what .ninja_log gained during this run
    times: Dict[str, float] = field(default_factory=dict)  # this run's reported units and their seconds
    ended: Optional[float] = None


class CompileProgress:
    """Progress of one or more package builds that run at the same time (see the module docstring)."""

    def __init__(self, console: Console, heartbeat_s: float = HEARTBEAT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console
        self.heartbeat_s = heartbeat_s
        self.clock = clock
        self.packages: Dict[str, _Package] = {}
        self.bars: Optional[Progress] = None
        self.began = clock()
        self.last_print = self.began
        self.last_poll = 0.0

    def __enter__(self) -> CompileProgress:
        if self.console.is_terminal:
            self.bars = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("units"), TimeElapsedColumn(), console=self.console, transient=False)
            self.bars.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bars is not None:
            self.bars.__exit__(None, None, None)

    def say(self, text: str) -> None:
        """A plain line, never wrapped or cut (logs are read with grep)."""
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)
        self.last_print = self.clock()

    def start(self, key: str, label: str, tree: Path) -> None:
        package = _Package(label, tree, self.clock(), NinjaLog(tree))
        if self.bars is not None:
            package.task = self.bars.add_task(label, total=None)
        self.packages[key] = package

    def feed(self, key: str, line: str) -> None:
        """One line of the build's output."""
        found = progress_of(line)
        if found is None:
            return
        package = self.packages[key]
        package.done, package.total = found
        unit = unit_of(line)
        if unit is not None:
            package.finished.append(unit)
            package.waiting.append((unit, found[0]))
        if package.task is not None and self.bars is not None:
            self.bars.update(package.task, completed=found[0], total=found[1])
        self._resolve(package)

    def poll(self) -> None:
        """Unit times that reached `.ninja_log`, and a heartbeat when the log has been quiet too long."""
        now = self.clock()
        if now - self.last_poll < POLL_S:
            return
        self.last_poll = now
        for package in self.packages.values():
            if package.ended is None:
                self._resolve(package)
        if self.bars is None and now - self.last_print >= self.heartbeat_s:
            running = [self._state(p, now) for p in self.packages.values() if p.ended is None]
            if running:
                self.say(f"... {now - self.began:.0f} s: " + "; ".join(running))

    def end(self, key: str, status: int) -> Tuple[List[Tuple[str, float]], int]:
        """The package's process exited: its last unit lines and a summary; ((unit, seconds) slowest first,
        units ninja reported compiling: those whose time never reached `.ninja_log` count too)."""
        package = self.packages[key]
        package.ended = self.clock()
        self._resolve(package)
        for unit, k in package.waiting:  # ninja reported it, but its log never had it
            self.say(f"{package.label}: {unit} finished ({k}/{package.total} units; time not in .ninja_log)")
        package.waiting = []
        units = sorted(package.times.items(), key=lambda item: -item[1])
        seconds = package.ended - package.started
        if status == 0:
            slowest = f"; slowest {units[0][0]} {units[0][1]:.1f} s" if units else ""
            compiled = f"{len(package.finished)} units compiled" if package.finished else "every object up to date"
            self.say(f"{package.label}: {compiled}, wheel built in {seconds:.1f} s{slowest}")
        else:
            self.say(f"{package.label}: failed after {seconds:.1f} s (exit {status})")
        if package.task is not None and self.bars is not None and status == 0:
            self.bars.update(package.task, completed=package.total or 1, total=package.total or 1)
        return units, len(package.finished)

    def _resolve(self, package: _Package) -> None:
        if not package.waiting:
            return
        # pip may pass ninja's line on after ninja logged the unit, or before: keep every entry
        package.logged.update(package.log.new_times())
        still = []
        for unit, k in package.waiting:
            if unit in package.logged:
                package.times[unit] = package.logged[unit]
                self.say(f"{package.label}: {unit} {package.times[unit]:.1f} s ({k}/{package.total} units)")
            else:
                still.append((unit, k))
        package.waiting = still

    def _state(self, package: _Package, now: float) -> str:
        elapsed = f"{now - package.started:.0f} s"
        if not package.outputs:
            build_ninja = sorted(package.tree.glob("build/temp*/build.ninja"))
            package.outputs = ninja_units(build_ninja[-1].read_text(errors="replace")) if build_ninja else []
        total = package.total if package.total is not None else len(package.outputs)
        if not total:
            return f"{package.label} preparing (setup.py), {elapsed}"
        if package.done >= total:
            return f"{package.label} {package.done}/{total} units, linking and packaging, {elapsed}"
        open_ = [u for u in package.outputs if u not in package.finished]
        named = f", unfinished: {', '.join(open_)}" if len(open_) == total - package.done else ""
        return f"{package.label} {package.done}/{total} units at {elapsed}{named}"
