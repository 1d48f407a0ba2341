"""`jetson-mamba install`: install the archived wheels that fit this machine, safely, with the reasons."""

from __future__ import annotations

import argparse
from typing import Any, Dict

from rich.markup import escape

from jetson_mamba.cli._python import checked_python
from jetson_mamba.cli.output import console, err_console, print_json
from jetson_mamba.errors import JetsonMambaError

NAME = "install"
HELP = "pick the archived wheels that fit this machine and install them without touching torch"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("specs", nargs="*", metavar="SPEC",
                        help="distributions to install, e.g. mamba-ssm==2.2.5 (default: every one in the archive)")
    parser.add_argument("--archive", default=None,
                        help="archive directory or http(s) URL of `jetson-mamba serve` "
                             "(default: $JETSON_MAMBA_ARCHIVE or ~/.local/share/jetson-mamba/wheels)")
    parser.add_argument("--explain", action="store_true", help="print why each wheel was chosen or rejected")
    parser.add_argument("--dry-run", action="store_true", help="select and explain, install nothing")
    parser.add_argument("--python", default=None, help="install into this interpreter's environment")
    parser.add_argument("--recover", action="store_true",
                        help="only roll back an install that was killed outright (SIGKILL, power loss); "
                             "every install also does this first")


def _recovered_line(recovered: Any) -> None:
    if recovered:
        state = ", ".join(f"{n} {v}" for n, v in sorted(recovered["restored"].items())) or "nothing installed before"
        removed = f"; removed {', '.join(recovered['removed'])}" if recovered["removed"] else ""
        console.print(escape(f"rolled back the install that process {recovered['pid']} left unfinished: "
                             f"{state} ({recovered['files_restored']} files restored, hash-checked){removed}"))


def _print_report(report: Dict[str, Any], explain: bool) -> None:
    _recovered_line(report.get("recovered"))
    if explain:
        for line in report.get("explain", []):
            console.print(escape(line))
    if report.get("dry_run"):
        chosen = ", ".join(c["filename"] for c in report["selection"]["chosen"])
        console.print(f"would install {escape(chosen)}")
        if report.get("dependencies_missing"):
            console.print(f"would add {escape(', '.join(report['dependencies_missing']))}")
        return
    console.print(f"installed {escape(', '.join(report.get('installed', [])))} into {escape(report['python'])}")
    if report.get("replaced"):
        console.print("replaced " + escape(", ".join(f"{n} {v}" for n, v in report["replaced"].items())))
    console.print(f"dependencies added: {escape(', '.join(report.get('dependencies_added') or ['none']))}")
    for warning in report.get("warnings", []):
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    patches = report.get("patches", {})
    applied = ", ".join(patches.get("applied") or []) or "none needed"
    console.print(f"patches: {escape(applied if patches.get('ok') else 'failed')}")
    verification = report.get("verification", {})
    console.print(f"verification ({escape(str(verification.get('via')))}): {'passed' if verification.get('ok') else 'FAILED'}")
    torch = report.get("torch", {})
    console.print(f"torch {escape(str(torch.get('version')))} untouched ({torch.get('files')} files unchanged)")


def run(args: argparse.Namespace) -> int:
    args.python = checked_python(args.python)
    from jetson_mamba.archive.install import install_from_archive, recover
    from jetson_mamba.archive.store import default_archive

    if args.recover:
        found = recover(args.python)
        if args.json:
            print_json(found)
        elif found["recovered"]:
            _recovered_line(found["recovered"])
        else:
            console.print(f"nothing to recover: no unfinished install in {escape(found['python'])}'s environment")
        return 0

    archive = args.archive or str(default_archive())
    with err_console.status("installing") as status:
        def progress(message: str) -> None:
            status.update(escape(message))
            if not args.json:
                err_console.print(f"[dim]{escape(message)}[/]")

        try:
            report = install_from_archive(archive, python=args.python, specs=args.specs, dry_run=args.dry_run,
                                          progress=progress)
        except JetsonMambaError as error:
            partial = getattr(error, "report", None)
            if not (args.json and partial):
                raise  # the message lists every rejection already
            print_json({**error.to_json(), **partial})
            return error.exit_code
    if args.json:
        print_json(report)
    else:
        _print_report(report, args.explain)
    return 0
