"""`jetson-mamba serve DIR`: serve an archive as a pip index for a fleet of devices."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from jetson_mamba.archive.serve import DEFAULT_HOST
from jetson_mamba.cli.output import console, plain, print_json

NAME = "serve"
HELP = ("serve an archive as a pip index, one per GPU arch: pip install --no-deps --index-url "
        "http://HOST:PORT/sm87/simple/ --trusted-host HOST mamba-ssm")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, metavar="DIR", help="the archive directory")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to listen on (default {DEFAULT_HOST}: only this machine, so an archive is "
                             "never shared by accident; 0.0.0.0 or :: serves the fleet on every interface, ::1 is "
                             "IPv6 loopback)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")


def _stop(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def _say(text: str) -> None:
    """One line as written: a command must survive copy and paste (no wrapping off a terminal)."""
    console.print(text, soft_wrap=True)


def _print_fleet(server: Any, directory: Path) -> None:
    """The commands a device runs: per-arch pip (plain pip cannot tell GPUs apart), a pip.conf, jetson-mamba."""
    found = server.fleet()
    if found.loopback_only:
        _say(f"only this machine can reach it; to serve the fleet listen on every interface: "
             f"`jetson-mamba serve {plain(directory)} --host 0.0.0.0 --port {server.port}` (or --host :: for "
             f"IPv6 too), or on one address of this machine with --host ADDRESS")
        _say("on this machine:")
    else:
        others = f" (or {', '.join(plain(h) for h in found.hosts[1:])})" if found.hosts[1:] else ""
        _say(f"other machines reach it as {plain(found.hosts[0])}{others}; on each device, the index of its GPU "
             "(plain pip cannot tell GPUs apart: from /simple/ it takes the highest label, sm90 over sm87):")
    for index in found.indexes:
        _say(f"  {index.label}: {plain(index.pip())}")
    first = found.indexes[0]
    _say(f"keeping the device's other index: {plain(first.pip('--extra-index-url'))} (--no-deps: the wheels "
         "declare torch, which must stay the device's own; the == pins keep a newer sdist elsewhere from winning)")
    _say(f"or in the device's pip.conf (/etc/pip.conf or ~/.config/pip/pip.conf), for {first.label}:")
    for line in first.pip_conf.splitlines():
        _say(f"  {plain(line)}")
    _say(f"or let jetson-mamba pick arch, torch and CUDA: {plain(found.install)}")


def run(args: argparse.Namespace) -> int:
    from jetson_mamba.archive.serve import ArchiveServer

    server = ArchiveServer(args.directory, args.host, args.port)
    signal.signal(signal.SIGTERM, _stop)  # a service manager's stop cleans up like Ctrl-C
    try:
        if args.json:
            print_json(server.describe())
        else:
            _say(f"serving {plain(args.directory)} at {plain(server.url)} (Ctrl-C stops)")
            _print_fleet(server, args.directory)
        sys.stdout.flush()
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0
