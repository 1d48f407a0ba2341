"""`jetson-mamba patch`: apply, check, show or revert the runtime fixes for installed mamba-ssm / causal-conv1d."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, List

from rich.table import Table

from jetson_mamba.cli._python import checked_python
from jetson_mamba.cli.output import console, plain, print_json
from jetson_mamba.compat import registry
from jetson_mamba.compat.installed import Environment, locate, patched_files, plan_for

NAME = "patch"
HELP = "fix installed mamba-ssm / causal-conv1d in place (reversible): causal-conv1d API, transformers 5, " \
       "torch without distributed, portable kernels"

_STYLE = {registry.APPLIED: "green", registry.NEEDED: "yellow", registry.NOT_NEEDED: "dim", registry.MISSING: "dim"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true",
                      help="only report; exit status 1 if a patch is needed")
    mode.add_argument("--revert", action="store_true",
                      help="restore every patched file byte-for-byte (with --dry-run: only list them)")
    parser.add_argument("--dry-run", action="store_true", help="print the unified diff; change nothing")
    parser.add_argument("--python", default=None,
                        help="patch the packages of this interpreter (default: the one running jetson-mamba)")


def _environment_lines(env: Environment) -> None:
    versions = env.facts["versions"]
    installed = ", ".join(f"{t.distribution} {t.version}" for t in env.targets) or "neither mamba-ssm nor causal-conv1d"
    console.print(f"[bold]{plain(env.python)}[/]: {plain(installed)} in {plain(str(env.purelib))}")
    extensions = ", ".join(f"{m} {'found' if p else 'missing'}" for m, p in env.facts["extensions"].items())
    console.print(f"  torch {versions.get('torch')}, transformers {versions.get('transformers')}; "
                  f"compiled: {plain(extensions)}")


def _status_table(plan: registry.PatchPlan) -> Table:
    """One row per patch and distribution: overall status, each file's status, and why."""
    groups: Dict[tuple, List[registry.PatchStatus]] = {}
    for s in plan.statuses:
        if s.status != registry.MISSING:
            groups.setdefault((s.patch, s.distribution), []).append(s)
    table = Table(show_lines=True)
    for column in ("patch", "status", "files", "why"):
        table.add_column(column, overflow="fold")
    for (patch, distribution), statuses in groups.items():
        found = {s.status for s in statuses}
        overall = next(st for st in (registry.NEEDED, registry.APPLIED, registry.NOT_NEEDED) if st in found)
        files = "\n".join(f"{s.path} [{_STYLE[s.status]}]({s.status})[/]" for s in statuses)
        why = statuses[0].reason if overall == registry.NOT_NEEDED else next(
            s.reason for s in statuses if s.status == overall)
        table.add_row(f"{patch}\n({distribution})", f"[{_STYLE[overall]}]{overall}[/]", files, plain(why))
    return table


def _revert(env: Environment, args: argparse.Namespace, stray: List[Path]) -> int:
    done: List[registry.Reverted] = []
    for root in env.roots:
        done.extend(registry.revert(root, dry_run=args.dry_run))
    if args.json:
        print_json({"action": "revert", "dry_run": args.dry_run, "python": env.python,
                    "files": [r.to_json() for r in done], "stray_removed": [str(p) for p in stray]})
        return 0
    _stray_line(stray)
    if not done:
        console.print("nothing to revert: no file was patched by jetson-mamba")
    verb = "would restore" if args.dry_run else "restored"
    for r in done:
        state = verb if r.action == "restored" else "already upstream (record dropped)"
        console.print(f"{state}: {plain(str(r.path))} (sha256 {r.sha256[:12]})")
    return 0


def _stray_line(stray: List[Path]) -> None:
    if stray:
        console.print(f"removed {len(stray)} temporary file(s) left by an interrupted run, e.g. "
                      f"{plain(str(stray[0]))}")


def run(args: argparse.Namespace) -> int:
    args.python = checked_python(args.python)
    env = locate(args.python)
    # One lock around planning and writing (or reverting): a patch or revert running beside this one waits,
    # so what this run reads is what it changes and what it reports.
    with registry.locked(env.roots, patched_files(env), clean=not (args.check or args.dry_run)) as stray:
        if args.revert:
            return _revert(env, args, stray)
        plan = plan_for(env)
        changed = [] if (args.check or args.dry_run) else registry.apply_plan(plan)
    action = "check" if args.check else "dry-run" if args.dry_run else "apply"
    if args.json:
        result: Dict[str, Any] = {"action": action, "python": env.python, "site_packages": str(env.purelib),
                                  "versions": env.facts["versions"], "extensions": env.facts["extensions"],
                                  **plan.to_json(), "written": [str(c.absolute) for c in changed],
                                  "stray_removed": [str(p) for p in stray]}
        if args.dry_run:
            result["diff"] = "".join(registry.unified_diff(c) for c in plan.changes)
        print_json(result)
        return 1 if args.check and not plan.clean else 0
    _environment_lines(env)
    _stray_line(stray)
    if plan.statuses:
        console.print(_status_table(plan))
    if args.dry_run:
        for change in plan.changes:
            console.print(plain(registry.unified_diff(change)), highlight=False, soft_wrap=True)
        console.print(f"dry run: {len(plan.changes)} file(s) would change")
        return 0
    if not env.targets:
        console.print("nothing to patch: neither mamba-ssm nor causal-conv1d is installed for this interpreter")
        return 0
    if args.check:
        console.print("all needed patches are applied" if plan.clean else
                      "[yellow]patches are needed[/]: run `jetson-mamba patch`")
        return 0 if plan.clean else 1
    if changed:
        console.print(f"patched {len(changed)} file(s); backups and hashes in "
                      f"{plain(str(changed[0].root / registry.RECORD_DIR))}; undo with `jetson-mamba patch --revert`")
    else:
        console.print("nothing to do: every needed patch is already applied")
    return 0
