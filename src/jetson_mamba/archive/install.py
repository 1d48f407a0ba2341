"""Install the wheels that fit, safely: pip --no-deps, missing runtime deps (never torch & co.), patch, verify.

Steps: probe the target interpreter; select (hashing exactly the wheels about to be installed);
save the files of the distributions being replaced (and `jetson-mamba patch`'s record); `pip install --no-deps
--no-index --force-reinstall` the wheels; add missing runtime dependencies (einops, transformers,
triton), refusing any resolution that would touch torch, torchvision, numpy or OpenCV; apply the needed runtime patches
(`jetson-mamba patch`); run the quick verification; check torch's version and files did not
change. Any failure puts the previous versions and files back (hash-checked) and says so.

The install is a list of steps over one `TargetEnvironment` (save, install the wheels, add the
dependencies, patch, verify, check torch), each with its undo; a failure, Ctrl-C, SIGTERM or SIGHUP
undoes the steps done, in reverse, with those signals held off until the rollback is complete. The
saved files and a journal live in `<site-packages>/.jetson-mamba-rollback/`: a run killed outright
(SIGKILL, power) is rolled back by the next `install` before it does anything else, or by
`install --recover`.

The quick verification is `python -m jetson_mamba.verify --quick` (plain JSON, no rich), run by the
target interpreter (both kernels against references, Mamba and Mamba2 through their fused paths).
`JETSON_MAMBA_VERIFY_COMMAND` replaces it with a site-specific shell command (exit 0 = pass; the
target interpreter is in $JETSON_MAMBA_PYTHON), e.g. for an acceptance test.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from jetson_mamba.archive import signals
from jetson_mamba.archive.environment import Snapshot, TargetEnvironment, planned, rollback_area, tail
from jetson_mamba.archive.extras import protected_state, refuse_protected
from jetson_mamba.archive.select import (
    NO_TORCH_FIX,
    Selection,
    Target,
    no_match_error,
    parse_requests,
    select_wheels,
)
from jetson_mamba.archive.signals import Stopped
from jetson_mamba.archive.source import ArchiveSource
from jetson_mamba.errors import InstallError, JetsonMambaError, MissingDependencyError
from jetson_mamba.probe.model import MachineInfo

RUNTIME_DEPENDENCIES = ("einops", "transformers", "triton")
# No wheels on some platforms (older Jetson releases): a failed install is a warning, not a failure.
OPTIONAL_DEPENDENCIES = ("triton",)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class TargetFacts:
    """What the selection matched against: the target interpreter's Python, platform, torch and GPU."""

    python: Optional[str]
    platform: str
    torch: Optional[str]
    torch_cuda: Optional[str]
    cxx11_abi: Optional[bool]
    gpu_arch: Optional[str]


@dataclass(frozen=True)
class Recovered:
    """An install killed outright, rolled back: what was put back."""

    pid: int
    restored: Dict[str, str]  # distribution -> the version installed again
    removed: List[str]
    files_restored: int


@dataclass(frozen=True)
class RecoverReport:
    python: str
    recovered: Optional[Recovered]


@dataclass(frozen=True)
class InstallReport:
    """The outcome of `install` (cli/install.py renders it; --json is `results.document` of it). A dry run
    (or a selection that misses, carried on the error as `error.report`) stops after `dependencies_missing`."""

    archive: str
    python: str
    dry_run: bool
    machine: TargetFacts
    selection: Dict[str, Any]  # chosen and rejected wheels, each with its reasons
    explain: List[str]
    dependencies_missing: List[str] = field(default_factory=list)
    recovered: Optional[Recovered] = None
    replaced: Dict[str, str] = field(default_factory=dict)
    installed: List[str] = field(default_factory=list)
    dependencies_added: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    patches: Dict[str, Any] = field(default_factory=dict)  # `jetson-mamba patch --json` in the target
    verification: Dict[str, Any] = field(default_factory=dict)  # {"ok", "via", "output"...}
    torch_unchanged: Optional[bool] = None
    torch: Dict[str, Any] = field(default_factory=dict)  # {"version", "files"} after the install
    rolled_back: Optional[bool] = None


@dataclass
class Step:
    """One change to the target and how to take it back (None: the steps before it undo it)."""

    name: str
    do: Callable[[], None]
    undo: Optional[Callable[[], None]] = None


def missing_dependencies(selection: Selection, machine: MachineInfo) -> List[str]:
    """Runtime dependencies the chosen wheels declare and the target lacks (never torch)."""
    wanted: Dict[str, str] = {}
    for choice in selection.chosen:
        for text in choice.record.requires_dist:
            try:
                requirement = Requirement(text)
            except InvalidRequirement:
                continue
            name = canonicalize_name(requirement.name)
            if name in RUNTIME_DEPENDENCIES and not (requirement.marker and "extra" in str(requirement.marker)):
                wanted.setdefault(name, str(requirement))
    return [text for name, text in sorted(wanted.items()) if machine.packages.version(name) is None]


def _select(source: ArchiveSource, target: Target, requests: Sequence[Requirement],
            progress: Progress) -> Selection:
    """Select, hashing (and for a URL downloading) only the wheels chosen, until the choice is stable."""
    digests: Dict[str, Optional[str]] = {}
    while True:
        selection = select_wheels(target, source.manifest, digests, requests)
        unchecked = [c.record for c in selection.chosen if c.record.filename not in digests]
        if not unchecked:
            return selection
        digests.update(source.digests(unchecked, progress))


def _install_dependencies(env: TargetEnvironment, requirements: List[str], find_links: Optional[Path],
                          snapshot: Snapshot, added: List[str], progress: Progress) -> List[str]:
    """pip install the missing runtime deps with the protected distributions (torch, torchvision, numpy,
    OpenCV) pinned as installed; refuse a resolution that would install or change one of them.

    Distributions the resolution would upgrade are saved in `snapshot` first, so a rollback restores them;
    `added` collects "name==version" of everything installed, as it happens. Returns the warnings.
    """
    warnings: List[str] = []
    state = protected_state(env)
    with tempfile.TemporaryDirectory(prefix="jetson-mamba-pin-") as temporary:
        constraints = Path(temporary) / "constraints.txt"
        constraints.write_text(state.constraints())
        options: List[str] = ["--constraint", str(constraints)]
        if find_links is not None:
            options += ["--find-links", str(find_links)]
        for requirement in requirements:
            progress(f"adding runtime dependency {requirement}")
            name = canonicalize_name(Requirement(requirement).name)
            report = Path(temporary) / f"{name}.json"
            plan = env.pip(["install", "--dry-run", "--quiet", "--report", str(report), *options, requirement])
            pulled = planned(report) if plan.returncode == 0 else []
            refuse_protected(pulled, state, requirement)
            snapshot.add([n for n, _ in pulled])
            snapshot.will_install([n for n, _ in pulled])
            done = plan if plan.returncode != 0 else env.pip(["install", *options, requirement])
            if done.returncode != 0:
                if name in OPTIONAL_DEPENDENCIES:
                    warnings.append(f"{requirement} could not be installed (optional): {tail(done.stderr, 2)}")
                    continue
                raise InstallError(f"pip could not install the runtime dependency {requirement}: {tail(done.stderr, 5)}",
                                   f"install it by hand (`{env.python} -m pip install {requirement}`), then rerun")
            added.extend(f"{n}=={v}" for n, v in pulled)
    return warnings


def install_from_archive(location: str, python: Optional[str] = None, specs: Sequence[str] = (),
                         dry_run: bool = False, progress: Optional[Progress] = None) -> InstallReport:
    """Select and install from an archive directory or URL.

    Raises NoMatchingWheelError (every rejection + the fix), ArchiveError (bad archive), or
    InstallError after rolling back to what was installed before.
    """
    say: Progress = progress or (lambda _message: None)
    env = TargetEnvironment(python or sys.executable)
    requests = parse_requests(specs)
    say(f"reading the archive {location}")
    source = ArchiveSource(location)
    try:
        say(f"probing {env.python}")
        machine = env.facts()
        if machine.torch.python_version is None:
            raise InstallError(f"cannot run {env.python}: {machine.torch.error}",
                               "pass a working interpreter with --python")
        target = Target.from_machine(machine)
        selection = _select(source, target, requests, say)
        report = InstallReport(
            archive=location, python=env.python, dry_run=dry_run,
            machine=TargetFacts(target.python_version, target.machine, target.torch_version, target.torch_cuda,
                                target.cxx11_abi, target.gpu_arch),
            selection=selection.to_json(), explain=selection.explain())
        if selection.missing:
            error = no_match_error(selection, target, location)
            error.report = report  # type: ignore[attr-defined]  # the CLI prints it with --json
            raise error
        report = replace(report, dependencies_missing=missing_dependencies(selection, machine))
        if dry_run:
            return report
        if machine.torch.version is None:  # the verification could only fail: change nothing
            raise MissingDependencyError(
                f"torch is not installed for {env.python}, so the Mamba packages cannot run or be verified there",
                NO_TORCH_FIX)
        files = [source.fetch(c.record) for c in selection.chosen]
        recovered: Optional[Recovered] = None
        fields: Dict[str, Any] = {}  # "rolled_back": False once committed: a signal after that changes nothing
        with signals.raising():  # from the claim to the end: none of it is left half-done by SIGTERM / SIGHUP
            try:
                with rollback_area(env.purelib()) as (directory, stale):
                    recovered = _recover(stale, say) if stale is not None else None
                    _install(env, selection, files, machine, report.dependencies_missing, source.directory,
                             directory, say, fields)
            except Stopped as stop:
                if fields.get("rolled_back") is not False:
                    raise InstallError(f"{stop} before the install began: nothing was installed"
                                       f"{' (the unfinished install found was rolled back)' if recovered else ''}",
                                       "rerun the install when it may run to the end") from None
        return replace(report, recovered=recovered, **fields)
    finally:
        source.close()


def recover(python: Optional[str] = None, progress: Optional[Progress] = None) -> RecoverReport:
    """`install --recover`: roll back an install that was killed outright (if there is one)."""
    env = TargetEnvironment(python or sys.executable)
    found: Optional[Recovered] = None
    with signals.raising():
        try:
            with rollback_area(env.purelib()) as (_directory, stale):
                found = _recover(stale, progress or (lambda _message: None)) if stale is not None else None
        except Stopped as stop:
            if found is None:
                raise InstallError(f"{stop}: nothing was rolled back", "rerun `jetson-mamba install --recover`") from None
    return RecoverReport(env.python, found)


def _recover(stale: Snapshot, say: Progress) -> Recovered:
    """Roll back what a killed run (its journal) had changed; InstallError if that cannot be done exactly."""
    say(f"rolling back the install that process {stale.pid} left unfinished")
    with signals.deferred():  # the restore and the discard of its journal: both or neither
        rollback = stale.restore()
        if rollback["ok"]:
            stale.discard()
    if not rollback["ok"]:
        raise InstallError(f"the install that process {stale.pid} left unfinished could not be rolled back: "
                           f"{'; '.join(rollback['problems'])}; saved files kept in {stale.directory}",
                           f"reinstall the packages by hand (`{stale.python} -m pip install --force-reinstall "
                           f"--no-deps ...`), then delete {stale.directory}")
    return Recovered(stale.pid, rollback["restored"], rollback["removed"], rollback["files_restored"])


def _install(env: TargetEnvironment, selection: Selection, files: List[Path], machine: MachineInfo,
             dependencies: List[str], find_links: Optional[Path], directory: Path, say: Progress,
             result: Dict[str, Any]) -> None:
    """The steps with their undo; they fill `result` with InstallReport fields, by name, and the commit sets
    its "rolled_back" to False (the caller's: a signal right after the commit finds it set)."""
    names = [c.record.name for c in selection.chosen]
    torch_before = env.torch_fingerprint()
    added: List[str] = []
    snapshot: List[Snapshot] = []  # set by the first step

    def save() -> None:
        snapshot.append(env.snapshot(names, directory))
        result["replaced"] = snapshot[0].versions()

    def install_wheels() -> None:
        snapshot[0].will_install(names)
        done = env.pip(["install", "--no-deps", "--no-index", "--force-reinstall", *map(str, files)])
        if done.returncode != 0:
            raise InstallError(f"pip install --no-deps failed: {tail(done.stderr, 8)}",
                               "fix what pip reports (check the wheels with `jetson-mamba archive verify`), then rerun")
        result["installed"] = [f"{c.record.name}=={c.record.version}" for c in selection.chosen]

    def add_dependencies() -> None:
        result["dependencies_added"] = added
        result["warnings"] = _install_dependencies(env, dependencies, find_links, snapshot[0], added, say) \
            if dependencies else []

    def patch() -> None:
        result["patches"] = env.patch()
        if not result["patches"]["ok"]:
            raise InstallError(f"jetson-mamba patch failed: {result['patches'].get('output')}",
                               f"run `jetson-mamba patch --python {env.python}` to see why")

    def verify() -> None:
        result["verification"] = env.quick_verify()
        if not result["verification"]["ok"]:
            raise InstallError(f"the quick verification failed ({result['verification']['via']}): "
                               f"{result['verification'].get('output')}",
                               f"run `{env.python} -m jetson_mamba verify` for the details, or "
                               f"`jetson-mamba build --arch {machine.gpu.arch if machine.gpu else 'X.Y'}` "
                               f"to build wheels for this machine")

    def check_torch() -> None:
        torch_after = env.torch_fingerprint()
        result["torch_unchanged"] = torch_after == torch_before
        result["torch"] = {"version": torch_after["version"], "files": torch_after["files"]}
        if not result["torch_unchanged"]:
            raise InstallError(f"torch changed during the install: {torch_before} -> {torch_after}",
                               "reinstall your torch build; report this as a jetson-mamba bug")

    steps = [
        Step("saving the files being replaced", save, lambda: snapshot and snapshot[0].put_back()),
        Step(f"installing {', '.join(f.name for f in files)} (pip --no-deps)", install_wheels,
             lambda: snapshot[0].uninstall(names)),
        Step("adding runtime dependencies", add_dependencies,
             lambda: snapshot[0].uninstall([a.split("==")[0] for a in added])),
        Step("applying the runtime patches (jetson-mamba patch)", patch),  # undone with the files they patch
        Step("verifying (quick)", verify),
        Step("checking torch is untouched", check_torch),
    ]
    try:
        _run_steps(steps, say)
    except _Failed as failure:
        raise InstallError(f"{failure.error.message}\n{_rollback_state(snapshot[0] if snapshot else None)}",
                           failure.error.fix) from None
    with signals.held():  # the commit: the journal goes, this install stays
        snapshot[0].discard()
        result["rolled_back"] = False


class _Failed(Exception):
    def __init__(self, error: JetsonMambaError) -> None:
        super().__init__(error.message)
        self.error = error


def _run_steps(steps: Sequence[Step], say: Progress) -> None:
    """Do the steps in order; on any failure or termination signal undo the ones begun, in reverse
    (with the signals held off), and raise _Failed with the cause."""
    begun: List[Step] = []
    with signals.raising():
        try:
            for step in steps:
                say(step.name)
                begun.append(step)  # before `do`: a step stopped half-way is undone too
                step.do()
            return
        except BaseException as failure:  # Ctrl-C and SIGTERM/SIGHUP too: never leave a half-installed environment
            cause = failure
    error = cause if isinstance(cause, JetsonMambaError) else InstallError(
        f"{cause}" if isinstance(cause, Stopped) else "interrupted (Ctrl-C)" if isinstance(cause, KeyboardInterrupt)
        else f"{type(cause).__name__}: {cause}",
        "rerun the install when it may run to the end" if isinstance(cause, (Stopped, KeyboardInterrupt))
        else "fix the cause above and rerun")
    say("rolling back")
    with signals.held():
        for step in reversed(begun):
            if step.undo is not None:
                step.undo()
    raise _Failed(error)


def _rollback_state(snapshot: Optional[Snapshot]) -> str:
    """What the rollback left, in one line (the saved files are kept if it was not exact)."""
    if snapshot is None:
        return "nothing was changed"
    check = snapshot.check()
    if not check["ok"]:
        return f"rollback incomplete ({'; '.join(check['problems'])}); saved files kept in {snapshot.directory}"
    snapshot.discard()
    restored = ", ".join(f"{n} {v}" for n, v in sorted(check["restored"].items()))
    state = f"rolled back to {restored} ({check['files_restored']} files restored, hash-checked)" if restored \
        else "rolled back: nothing was installed before"
    if check["removed"]:
        state += f"; removed {', '.join(check['removed'])}"
    return state
