"""Install the wheels that fit, safely: pip --no-deps, missing runtime deps (never torch), patch, verify.

Steps: probe the target interpreter; select (hashing exactly the wheels about to be installed);
save the files of the distributions being replaced (and `jetson-mamba patch`'s record); `pip install --no-deps
--no-index --force-reinstall` the wheels; add missing runtime dependencies (einops, transformers,
triton), refusing any resolution that would touch torch; apply the needed runtime patches
(`jetson-mamba patch`); run the quick verification; check torch's version and files did not
change. Any failure puts the previous versions and files back (hash-checked) and says so.

The quick verification is `jetson-mamba verify --quick --json`, run by the target interpreter
(both kernels against references, Mamba and Mamba2 through their fused paths).
`JETSON_MAMBA_VERIFY_COMMAND` replaces it with a site-specific shell command (exit 0 = pass; the
target interpreter is in $JETSON_MAMBA_PYTHON), e.g. for an acceptance test.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

import jetson_mamba
from jetson_mamba.archive.environment import Snapshot, command_result, pip, tail, torch_fingerprint
from jetson_mamba.archive.select import Selection, Target, no_match_error, parse_requests, select_wheels
from jetson_mamba.archive.source import ArchiveSource
from jetson_mamba.compat.registry import RECORD_DIR
from jetson_mamba.errors import InstallError, JetsonMambaError
from jetson_mamba.probe import probe_machine
from jetson_mamba.probe.model import MachineInfo

RUNTIME_DEPENDENCIES = ("einops", "transformers", "triton")
# No wheels on some platforms (older Jetson releases): a failed install is a warning, not a failure.
OPTIONAL_DEPENDENCIES = ("triton",)
VERIFY_ENV = "JETSON_MAMBA_VERIFY_COMMAND"

Progress = Callable[[str], None]

def _package_env() -> Dict[str, str]:
    """Environment that lets the target interpreter import this jetson_mamba."""
    root = str(Path(jetson_mamba.__file__).resolve().parent.parent)
    paths = [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths))


def quick_verify(python: str) -> Dict[str, Any]:
    """The post-install check: `jetson-mamba verify --quick` in the target, or $JETSON_MAMBA_VERIFY_COMMAND."""
    override = os.environ.get(VERIFY_ENV)
    if override:
        result = command_result([override], env=dict(os.environ, JETSON_MAMBA_PYTHON=python), shell=True)
        return dict(result, via=VERIFY_ENV)
    result = command_result([python, "-m", "jetson_mamba", "verify", "--quick", "--json"], env=_package_env())
    return dict(result, via="jetson-mamba verify --quick")


def apply_patches(python: str) -> Dict[str, Any]:
    """`jetson-mamba patch --json --python PATH`: the runtime fixes the installed versions need."""
    result = command_result([sys.executable, "-m", "jetson_mamba", "patch", "--json", "--python", python],
                            env=_package_env())
    output = result["output"] if isinstance(result["output"], dict) else {}
    written = {name for change in output.get("changes", []) for name in change.get("patches", [])}
    already = {s["patch"] for s in output.get("patches", []) if s.get("status") == "applied"}
    result["applied"] = sorted(written | already)  # by this run, or already in place
    return result


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


def _install_dependencies(python: str, requirements: List[str], torch_version: Optional[str],
                          find_links: Optional[Path], snapshot: Snapshot, added: List[str],
                          progress: Progress) -> List[str]:
    """pip install the missing runtime deps with torch pinned; refuse a resolution that includes torch.

    Distributions the resolution would upgrade are saved in `snapshot` first, so a rollback restores them;
    `added` collects "name==version" of everything installed, as it happens. Returns the warnings.
    """
    warnings: List[str] = []
    with tempfile.TemporaryDirectory(prefix="jetson-mamba-pin-") as temporary:
        options: List[str] = []
        if torch_version:
            constraints = Path(temporary) / "constraints.txt"
            constraints.write_text(f"torch=={torch_version}\n")
            options += ["--constraint", str(constraints)]
        if find_links is not None:
            options += ["--find-links", str(find_links)]
        for requirement in requirements:
            progress(f"adding runtime dependency {requirement}")
            name = canonicalize_name(Requirement(requirement).name)
            report = Path(temporary) / f"{name}.json"
            plan = pip(python, ["install", "--dry-run", "--quiet", "--report", str(report), *options, requirement])
            pulled = _planned(report) if plan.returncode == 0 else []
            if plan.returncode == 0 and any(n == "torch" for n, _ in pulled):
                raise InstallError(f"installing {requirement} would install or change torch",
                                   f"install a {requirement} that works with your torch by hand, then rerun")
            snapshot.add([n for n, _ in pulled])
            done = plan if plan.returncode != 0 else pip(python, ["install", *options, requirement])
            if done.returncode != 0:
                if name in OPTIONAL_DEPENDENCIES:
                    warnings.append(f"{requirement} could not be installed (optional): {tail(done.stderr, 2)}")
                    continue
                raise InstallError(f"pip could not install the runtime dependency {requirement}: {tail(done.stderr, 5)}",
                                   f"install it by hand (`{python} -m pip install {requirement}`), then rerun")
            added.extend(f"{n}=={v}" for n, v in pulled)
    return warnings


def _planned(report: Path) -> List[tuple]:
    """(name, version) of everything a pip --dry-run --report would install."""
    try:
        data = json.loads(report.read_text())
    except (OSError, ValueError):
        return []
    return [(canonicalize_name(item["metadata"]["name"]), item["metadata"]["version"]) for item in data.get("install", [])]


def install_from_archive(location: str, python: Optional[str] = None, specs: Sequence[str] = (),
                         dry_run: bool = False, progress: Optional[Progress] = None) -> Dict[str, Any]:
    """Select and install from an archive directory or URL; the report as JSON-ready data.

    Raises NoMatchingWheelError (every rejection + the fix), ArchiveError (bad archive), or
    InstallError after rolling back to what was installed before.
    """
    say: Progress = progress or (lambda _message: None)
    python = python or sys.executable
    requests = parse_requests(specs)
    say(f"reading the archive {location}")
    source = ArchiveSource(location)
    try:
        say(f"probing {python}")
        machine = probe_machine(python=python)
        if machine.torch.python_version is None:
            raise InstallError(f"cannot run {python}: {machine.torch.error}", "pass a working interpreter with --python")
        target = Target.from_machine(machine)
        selection = _select(source, target, requests, say)
        report: Dict[str, Any] = {
            "archive": location, "python": python, "dry_run": dry_run,
            "machine": {"python": target.python_version, "platform": target.machine, "torch": target.torch_version,
                        "torch_cuda": target.torch_cuda, "cxx11_abi": target.cxx11_abi, "gpu_arch": target.gpu_arch},
            "selection": selection.to_json(), "explain": selection.explain(),
        }
        if selection.missing:
            error = no_match_error(selection, target, location)
            error.report = report  # type: ignore[attr-defined]  # the CLI prints it with --json
            raise error
        report["dependencies_missing"] = missing_dependencies(selection, machine)
        if dry_run:
            return report
        files = [source.fetch(c.record) for c in selection.chosen]
        report.update(_install(python, selection, files, machine, report["dependencies_missing"],
                               source.directory, say))
        return report
    finally:
        source.close()


def _install(python: str, selection: Selection, files: List[Path], machine: MachineInfo,
             dependencies: List[str], find_links: Optional[Path], say: Progress) -> Dict[str, Any]:
    names = [c.record.name for c in selection.chosen]
    torch_before = torch_fingerprint(python)
    snapshot = Snapshot.take(python, names, Path(tempfile.mkdtemp(prefix="jetson-mamba-rollback-")),
                             extra_dirs=[RECORD_DIR])
    result: Dict[str, Any] = {"replaced": snapshot.versions()}
    added: List[str] = []
    try:
        say(f"installing {', '.join(f.name for f in files)} (pip --no-deps)")
        done = pip(python, ["install", "--no-deps", "--no-index", "--force-reinstall", *map(str, files)])
        if done.returncode != 0:
            raise InstallError(f"pip install --no-deps failed: {tail(done.stderr, 8)}",
                               "fix what pip reports (check the wheels with `jetson-mamba archive verify`), then rerun")
        result["installed"] = [f"{c.record.name}=={c.record.version}" for c in selection.chosen]
        result["dependencies_added"] = added
        result["warnings"] = _install_dependencies(python, dependencies, machine.torch.version, find_links,
                                                   snapshot, added, say) if dependencies else []
        say("applying the runtime patches (jetson-mamba patch)")
        result["patches"] = apply_patches(python)
        if not result["patches"]["ok"]:
            raise InstallError(f"jetson-mamba patch failed: {result['patches'].get('output')}",
                               f"run `jetson-mamba patch --python {python}` to see why")
        say("verifying (quick)")
        result["verification"] = quick_verify(python)
        if not result["verification"]["ok"]:
            raise InstallError(f"the quick verification failed ({result['verification']['via']}): "
                               f"{result['verification'].get('output')}",
                               f"run `{python} -m jetson_mamba verify` for the details, or "
                               f"`jetson-mamba build --arch {machine.gpu.arch if machine.gpu else 'X.Y'}` "
                               f"to build wheels for this machine")
        torch_after = torch_fingerprint(python)
        result["torch_unchanged"] = torch_after == torch_before
        result["torch"] = {"version": torch_after["version"], "files": torch_after["files"]}
        if not result["torch_unchanged"]:
            raise InstallError(f"torch changed during the install: {torch_before} -> {torch_after}",
                               "reinstall your torch build; report this as a jetson-mamba bug")
    except BaseException as failure:  # Ctrl-C too: never leave a half-installed environment
        error = failure if isinstance(failure, JetsonMambaError) else \
            InstallError(f"{type(failure).__name__}: {failure}", "fix the cause above and rerun")
        say("rolling back")
        rollback = snapshot.restore(remove=sorted(set(names + [a.split("==")[0] for a in added])))
        restored = ", ".join(f"{n} {v}" for n, v in sorted(rollback["restored"].items()))
        state = f"rolled back to {restored} ({rollback['files_restored']} files restored, hash-checked)" if restored \
            else "rolled back: nothing was installed before"
        if rollback["removed"]:
            state += f"; removed {', '.join(rollback['removed'])}"
        if not rollback["ok"]:
            state = f"rollback incomplete ({'; '.join(rollback['problems'])}); saved files kept in {snapshot.directory}"
        else:
            snapshot.discard()
        raise InstallError(f"{error.message}\n{state}", error.fix) from None
    snapshot.discard()
    result["rolled_back"] = False
    return result
