"""The `jetson-mamba` command line: one module per command, discovered from this package.

A command module defines `NAME`, `HELP`, `add_arguments(parser)` and `run(args) -> int`.
Command modules must import cheaply (no torch at import time): `--help` loads all of them.
Only this layer exits; everything below raises `JetsonMambaError`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import traceback
from pathlib import Path
from types import ModuleType
from typing import List, Optional, Sequence

from jetson_mamba import __version__
from jetson_mamba.cli.output import print_error, silence_progress
from jetson_mamba.errors import INTERRUPTED_EXIT_CODE, InternalError, JetsonMambaError

_NOT_COMMANDS = {"output"}


def _command_modules() -> List[ModuleType]:
    """Every module of this package that defines a command, sorted by name."""
    modules = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name in _NOT_COMMANDS:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "run") and hasattr(module, "NAME"):
            modules.append(module)
    return sorted(modules, key=lambda m: m.NAME)


def _add_common(parser: argparse.ArgumentParser) -> None:
    """--json, -v and -q on `parser` and on every sub-command below it (`archive list -v` and
    `yolo train -q` as well as `doctor -v`), each only where the parser has not defined it."""
    flags = (
        (("--json",), "machine-readable output on stdout"),
        (("-v", "--verbose"), "log decisions on stderr (e.g. which kernel backend each op runs on); "
                              "show the traceback of an unexpected error"),
        (("-q", "--quiet"), "no progress bars or informational lines on stderr: only the result and errors"),
    )
    for names, text in flags:
        if not any(name in parser._option_string_actions for name in names):
            parser.add_argument(*names, action="store_true", default=argparse.SUPPRESS, help=text)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_common(child)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jetson-mamba",
        description="Set up, patch, build, verify and benchmark a Mamba stack on Jetson and other CUDA machines.",
    )
    parser.add_argument("--version", action="version", version=f"jetson-mamba {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        command = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    _add_common(parser)
    return parser


def _log_to_stderr() -> None:
    """jetson_mamba's INFO log lines on the current stderr (once per process)."""
    logger = logging.getLogger("jetson_mamba")
    if not any(getattr(h, "jetson_mamba_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.jetson_mamba_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for flag in ("json", "verbose", "quiet"):
        if not hasattr(args, flag):
            setattr(args, flag, False)
    if args.verbose and args.quiet:
        parser.error("-v and -q contradict each other: give one of them")
    if args.verbose:
        _log_to_stderr()
    if args.quiet:
        silence_progress()
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args))
    except JetsonMambaError as error:
        print_error(error, as_json=args.json)
        return error.exit_code
    except KeyboardInterrupt:
        print_error(JetsonMambaError(f"interrupted: `jetson-mamba {args.command}` stopped (Ctrl-C)"), as_json=args.json)
        return INTERRUPTED_EXIT_CODE
    except Exception as failure:  # the last resort: a bug must not show users a traceback (-v does)
        if getattr(args, "verbose", False):
            traceback.print_exc()
        print_error(internal_error(args.command, failure), as_json=args.json)
        return InternalError.exit_code


def internal_error(command: str, failure: BaseException) -> InternalError:
    """One line for an unexpected exception: what failed, where, and how to report it."""
    frames = traceback.extract_tb(failure.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    text = " ".join(str(failure).split())[:300]
    return InternalError(f"`jetson-mamba {command}` failed unexpectedly: {type(failure).__name__}: {text}{where}",
                         f"this is a jetson-mamba bug: please report it with the output of "
                         f"`jetson-mamba -v {command} ...` (the same command with -v shows the traceback)")
