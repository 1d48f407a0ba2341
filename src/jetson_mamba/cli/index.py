"""`jetson-mamba index DIR`: write a PEP 503 (+ PEP 691 JSON) simple index for an archive."""

from __future__ import annotations

import argparse
from pathlib import Path

from jetson_mamba.cli.output import console, plain, print_json

NAME = "index"
HELP = "write a pip simple index (PEP 503 HTML + PEP 691 JSON) for an archive directory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, metavar="DIR", help="the archive directory")
    parser.add_argument("--out", type=Path, default=None, help="write the index here instead of DIR")


def run(args: argparse.Namespace) -> int:
    from jetson_mamba.archive.index import write_index

    written = write_index(args.directory, args.out)
    if args.json:
        print_json(written)
        return 0
    for name, files in written["projects"].items():
        console.print(f"{plain(name)}: {len(files)} wheel(s)")
    console.print(f"wrote {plain(written['index'])}; serve it with `jetson-mamba serve {plain(str(args.directory))}`")
    return 0
