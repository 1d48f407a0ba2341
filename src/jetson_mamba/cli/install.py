"""`jetson-mamba install`: install the archived wheels that fit this machine, safely, with the reasons."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Optional

from jetson_mamba.cli._python import checked_python
from jetson_mamba.cli.output import console, err_console, plain, print_json
from jetson_mamba.errors import JetsonMambaError
from jetson_mamba.results import document

if TYPE_CHECKING:
    from jetson_mamba.archive.install import InstallReport, Recovered

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


def _recovered_line(recovered: Optional[Recovered]) -> None:
    if recovered:
        state = ", ".join(f"{n} {v}" for n, v in sorted(recovered.restored.items())) or "nothing installed before"
        removed = f"; removed {', '.join(recovered.removed)}" if recovered.removed else ""
        console.print(plain(f"rolled back the install that process {recovered.pid} left unfinished: "
                             f"{state} ({recovered.files_restored} files restored, hash-checked){removed}"))


def _print_report(report: InstallReport, explain: bool) -> None:
    _recovered_line(report.recovered)
    if explain:
        for line in report.explain:
            console.print(plain(line))
    if report.dry_run:
        chosen = ", ".join(c["filename"] for c in report.selection["chosen"])
        console.print(f"would install {plain(chosen)}")
        if report.dependencies_missing:
            console.print(f"would add {plain(', '.join(report.dependencies_missing))}")
        return
    console.print(f"installed {plain(', '.join(report.installed))} into {plain(report.python)}")
    if report.replaced:
        console.print("replaced " + plain(", ".join(f"{n} {v}" for n, v in report.replaced.items())))
    console.print(f"dependencies added: {plain(', '.join(report.dependencies_added or ['none']))}")
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {plain(warning)}")
    applied = ", ".join(report.patches.get("applied") or []) or "none needed"
    console.print(f"patches: {plain(applied if report.patches.get('ok') else 'failed')}")
    verification = report.verification
    console.print(f"verification ({plain(str(verification.get('via')))}): {'passed' if verification.get('ok') else 'FAILED'}")
    console.print(f"torch {plain(str(report.torch.get('version')))} untouched ({report.torch.get('files')} files unchanged)")


def run(args: argparse.Namespace) -> int:
    args.python = checked_python(args.python)
    from jetson_mamba.archive.install import install_from_archive, recover
    from jetson_mamba.archive.store import default_archive

    if args.recover:
        found = recover(args.python)
        if args.json:
            print_json(document(found))
        elif found.recovered:
            _recovered_line(found.recovered)
        else:
            console.print(f"nothing to recover: no unfinished install in {plain(found.python)}'s environment")
        return 0

    archive = args.archive or str(default_archive())
    with err_console.status("installing") as status:
        def progress(message: str) -> None:
            status.update(plain(message))
            if not args.json:
                err_console.print(f"[dim]{plain(message)}[/]")

        try:
            report = install_from_archive(archive, python=args.python, specs=args.specs, dry_run=args.dry_run,
                                          progress=progress)
        except JetsonMambaError as error:
            partial = getattr(error, "report", None)
            if not (args.json and partial):
                raise  # the message lists every rejection already
            print_json({**error.to_json(), **document(partial)})
            return error.exit_code
    if args.json:
        print_json(document(report))
    else:
        _print_report(report, args.explain)
    return 0
