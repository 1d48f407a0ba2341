"""Printing for commands: JSON on stdout for tools, rich text for people."""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any, Match, Optional, TextIO

from rich.console import Console
from rich.markup import escape

from jetson_mamba.errors import JetsonMambaError

# Off a terminal (a pipe, a file, a CI log) rich would lay tables out for 80 columns and cut cells with
# an ellipsis (`selective_sca…`): there, lines take the width their content needs (COLUMNS still wins).
_UNBOUNDED = 1000


def _width(stream: TextIO) -> Optional[int]:
    """None (rich measures the terminal, or reads COLUMNS) on a terminal; else as wide as the content."""
    isatty = getattr(stream, "isatty", None)
    return None if "COLUMNS" in os.environ or (isatty is not None and isatty()) else _UNBOUNDED


# No emoji codes: `:smile:` in a file name or an error text is shown as written.
console = Console(highlight=False, emoji=False, width=_width(sys.stdout))
err_console = Console(stderr=True, highlight=False, emoji=False, width=_width(sys.stderr))  # progress and notes
_error_console = Console(stderr=True, highlight=False, emoji=False, width=_width(sys.stderr))  # errors: never silenced


def silence_progress() -> None:
    """-q: progress bars and informational lines on stderr are dropped; results and errors stay."""
    err_console.quiet = True


def plain(value: Any) -> str:
    """Text from outside (a manifest field, a device file, an error of another program) for a markup string.

    rich reads `[bold]` and `[/x]` in printed strings and table cells as markup (`[/x]` is an error
    that aborts the command); every value not written by us goes through this. Trailing backslashes
    are doubled and closed by an empty tag of our own, so they print as written whether a tag, other
    text or nothing follows (a table title, a cell, the end of a line).
    """
    text = str(value)
    trailing = len(text) - len(text.rstrip("\\"))
    body = _BRACKETS.sub(_escape_bracket, escape(text)).rstrip("\\")
    return body + "\\" * (2 * trailing) + "[bold][/bold]" if trailing else body


def _escape_bracket(match: Match[str]) -> str:
    """rich turns `\\[` outside a tag into `[`: one more backslash keeps the ones that were written."""
    return match.group(1) + "\\["


_BRACKETS = re.compile(r"(?<!\\)(\\+)\[(?![a-z#/@][^[]*?])")


def print_json(data: Any) -> None:
    """One JSON document on stdout; nothing else may go to stdout with --json."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def print_error(error: JetsonMambaError, as_json: bool) -> None:
    if as_json:
        print_json(error.to_json())
        return
    _error_console.print(f"[bold red]error:[/] {plain(error.message)}", markup=True, soft_wrap=True)
    if error.fix:
        _error_console.print(f"[bold]fix:[/] {plain(error.fix)}", markup=True, soft_wrap=True)
