"""`--backend NAME`, spelt the same on every command that takes kernel backends (verify, bench, conformance)."""

from __future__ import annotations

import argparse
from typing import List, Optional, Sequence

DEST = "backends"


def add_backend_option(parser: argparse.ArgumentParser, help: str) -> None:
    """`--backend NAME`, repeatable and comma-separated; `--backends` stays as a hidden alias, so scripts
    written for bench's old spelling keep working."""
    parser.add_argument("--backend", dest=DEST, action="append", metavar="NAME",
                        help=f"{help}; repeatable or comma-separated")
    parser.add_argument("--backends", dest=DEST, action="append", help=argparse.SUPPRESS)


def backend_names(values: Optional[Sequence[str]]) -> List[str]:
    """The names given (in order, each once): `--backend a,b --backend c` -> [a, b, c]."""
    names = [name.strip() for value in values or () for name in value.split(",") if name.strip()]
    return list(dict.fromkeys(names))
