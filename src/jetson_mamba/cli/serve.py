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
HELP = "serve an archive as a pip index: pip install --index-url http://HOST:PORT/simple/ mamba-ssm"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, metavar="DIR", help="the archive directory")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to listen on (default {DEFAULT_HOST}: only this machine, so an archive is "
                             "never shared by accident; 0.0.0.0 or :: serves the fleet on every interface, ::1 is "
                             "IPv6 loopback)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")


def _stop(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from jetson_mamba.archive.serve import ArchiveServer

    server = ArchiveServer(args.directory, args.host, args.port)
    signal.signal(signal.SIGTERM, _stop)  # a service manager's stop cleans up like Ctrl-C
    try:
        if args.json:
            print_json(server.describe())
        else:
            console.print(f"serving {plain(args.directory)} at {plain(server.url)} (Ctrl-C stops)")
            if server.loopback_only:
                console.print(f"only this machine can reach it; serve the fleet with --host 0.0.0.0 (or ::): "
                              f"`jetson-mamba serve {plain(args.directory)} --host 0.0.0.0 --port {server.port}`")
            else:
                console.print(f"devices: jetson-mamba install --archive {plain(server.fleet_url)}, or "
                              f"pip install --no-deps --index-url {plain(server.fleet_url)} mamba-ssm causal-conv1d")
        sys.stdout.flush()
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0
