"""`jetson-mamba archive add|list|verify`: keep a directory of prebuilt wheels with a manifest."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, List

from rich.table import Table

from jetson_mamba.cli.output import console, plain, print_json
from jetson_mamba.errors import ArchiveError

NAME = "archive"
HELP = "add wheels to an archive (reading their tags, GPU archs, torch/CUDA build), list it, verify it"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="check wheels and record them in the archive's manifest")
    add.add_argument("wheels", nargs="+", metavar="WHEEL")
    add.add_argument("--source", default=None, help="provenance: where the wheels came from (default: their path)")
    add.add_argument("--built-here", action="store_true",
                     help="record this machine (probed: Jetson L4T/JetPack, GPU, CUDA, torch) as the build machine")
    list_ = sub.add_parser("list", help="the wheels of the archive and what they were built for")
    verify = sub.add_parser("verify", help="check hashes, sizes, missing/extra files and entries; report every problem")
    for action in (add, list_, verify):
        action.add_argument("--archive", type=Path, default=None,
                            help="archive directory (default: $JETSON_MAMBA_ARCHIVE or ~/.local/share/jetson-mamba/wheels)")
        action.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")


def _archs(gpu: Any) -> str:
    if not gpu:
        return "-"
    return ",".join([f"sm_{a.replace('.', '')}" for a in gpu.get("sass", ())] +
                    [f"compute_{a.replace('.', '')}" for a in gpu.get("ptx", ())])


def _add(args: argparse.Namespace, archive: Path) -> int:
    from jetson_mamba.archive import add_wheel

    built_on = None
    if args.built_here:
        from jetson_mamba.probe import probe_machine

        built_on = probe_machine()
    added: List[Dict[str, Any]] = []
    for wheel in args.wheels:
        provenance = {"source": args.source or str(Path(wheel).resolve()), "added_by": "jetson-mamba archive add"}
        record = add_wheel(wheel, archive, provenance=provenance, built_on=built_on)
        added.append(record.to_json())
        if not args.json:
            console.print("added " + plain(f"{record.filename} ({record.name} {record.version}, "
                                           f"GPU {_archs(record.gpu_archs)}, CUDA {record.cuda.get('version') or '-'}, "
                                           f"torch {record.torch.get('version') or ('unknown' if record.torch.get('linked') else '-')})"))
    if args.json:
        print_json({"archive": str(archive), "added": added})
    return 0


def _list(args: argparse.Namespace, archive: Path) -> int:
    from jetson_mamba.archive import open_directory

    manifest = open_directory(archive)
    if args.json:
        print_json({"archive": str(archive), **manifest.to_json()})
        return 0
    table = Table(title=plain(archive))
    for column in ("wheel", "tags", "GPU archs", "CUDA", "torch", "C++11 ABI", "size"):
        table.add_column(column)
    for w in manifest.wheels:
        table.add_row(*map(plain, (w.filename, ",".join(w.tags), _archs(w.gpu_archs), w.cuda.get("version") or "-",
                                   w.torch.get("version") or ("unknown" if w.torch.get("linked") else "-"),
                                   w.torch.get("cxx11_abi"), f"{w.size / 1e6:.1f} MB")))
    console.print(table)
    return 0


def _verify(args: argparse.Namespace, archive: Path) -> int:
    from jetson_mamba.archive.store import verify_archive

    problems = verify_archive(archive)
    if args.json:
        print_json({"archive": str(archive), "ok": not problems, "problems": problems})
        return 0 if not problems else ArchiveError.exit_code
    for problem in problems:
        console.print(f"[red]problem:[/] {plain(problem)}")
    if problems:
        console.print(f"[bold]fix:[/] re-download or rebuild the listed wheels, then `jetson-mamba archive add "
                      f"--archive {plain(str(archive))} WHEEL...`")
        return ArchiveError.exit_code
    console.print(f"{plain(str(archive))}: every wheel matches its manifest entry")
    return 0


def run(args: argparse.Namespace) -> int:
    from jetson_mamba.archive.store import default_archive

    archive = args.archive or default_archive()
    return {"add": _add, "list": _list, "verify": _verify}[args.action](args, archive)
