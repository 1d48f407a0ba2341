"""Serve an archive as a pip index: the static PEP 503/691 index behind the standard library's HTTP server.

`/simple/...` (every wheel) and `/sm87/simple/...` (one GPU arch's, see `index`) answer HTML, or PEP 691 JSON when the client's Accept header asks for it; wheels
and `manifest.json` (what `jetson-mamba install --archive URL` reads) come from the archive.
A read-only archive is indexed into a temporary directory.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import shutil
import socket
import tempfile
import threading
import urllib.parse
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from jetson_mamba.archive.fleet import Fleet, fleet, fleet_hosts, url_host
from jetson_mamba.archive.index import JSON_TYPE, write_index
from jetson_mamba.archive.manifest import MANIFEST_NAME
from jetson_mamba.errors import ArchiveError, UsageError
from jetson_mamba.untrusted import is_within

DEFAULT_HOST = "127.0.0.1"
_ANY = ("0.0.0.0", "::", "")
_OUTSIDE = ".jetson-mamba-outside-the-archive"  # never exists: a request for it is a 404
_INDEX_PATH = re.compile(r"/(?:sm\d{2,3}/)?simple(?:/|$)")  # /simple/... and /sm87/simple/...
_ROUTE_PROBES = ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1"))  # documentation addresses


class _Handler(SimpleHTTPRequestHandler):
    """Static files from the archive, the index (and a scanned manifest) from the index directory."""

    index_root = ""

    def translate_path(self, path: str) -> str:
        """The file for a request path; one that resolves outside its tree (`..`, a link) maps to a missing file."""
        plain = path.split("?", 1)[0].split("#", 1)[0]
        simple = _INDEX_PATH.match(plain) is not None
        in_index = simple or (plain == f"/{MANIFEST_NAME}" and (Path(self.index_root) / MANIFEST_NAME).is_file())
        if not in_index:
            target, root = super().translate_path(path), self.directory
        else:
            relative = urllib.parse.unquote(plain.lstrip("/"))
            if simple and plain.endswith("/") and JSON_TYPE in self.headers.get("Accept", ""):
                relative += "index.json"
            target, root = os.path.join(self.index_root, relative), self.index_root
        return target if is_within(target, root) else os.path.join(root, _OUTSIDE)

    def guess_type(self, path: Any) -> str:
        if str(path).endswith("index.json") and "/simple" in str(path):
            return JSON_TYPE
        return super().guess_type(path)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        if os.environ.get("JETSON_MAMBA_SERVE_LOG"):
            super().log_message(format, *args)


def _family(host: str) -> int:
    """AF_INET6 for an IPv6 address (`::1`, `::`), else AF_INET (an IPv4 address or a host name)."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _addresses() -> List[str]:
    """This machine's addresses: those its routes leave from (a UDP connect sends nothing), then its name's.

    Never raises: a machine without a route or a resolvable name gives fewer (the fleet gets its host name).
    """
    found: List[str] = []
    for family, destination in _ROUTE_PROBES:
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect((destination, 9))
                found.append(probe.getsockname()[0])
        except OSError:
            pass
    try:
        found += [str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None, 0, socket.SOCK_STREAM)]
    except OSError:
        pass
    return found


class ArchiveServer:
    """A running index server; `url` is what pip's --index-url takes. Use as a context manager or call close()."""

    def __init__(self, archive: Union[str, Path], host: str = DEFAULT_HOST, port: int = 8080) -> None:
        if not 0 <= port <= 65535:
            raise UsageError(f"--port {port} is not a TCP port (0-65535)",
                             "pass a port from 1 to 65535 with --port, or --port 0 for any free one")
        family = _family(host)
        archive = Path(archive).resolve()
        if not archive.is_dir():
            raise ArchiveError(f"archive directory {archive} does not exist", "pass the directory that holds the wheels")
        self._temporary: Optional[str] = None
        out = archive
        if not os.access(archive, os.W_OK):
            self._temporary = tempfile.mkdtemp(prefix="jetson-mamba-index-")
            out = Path(self._temporary)
        self.index = write_index(archive, out)
        handler = type("ArchiveHandler", (_Handler,), {"index_root": str(out)})
        server = type("Server", (ThreadingHTTPServer,), {"address_family": family})
        try:
            self.httpd = server((host, port), partial(handler, directory=str(archive)))
        except OSError as error:
            self.close()
            in_use = error.errno in (errno.EADDRINUSE, errno.EACCES)
            raise UsageError(f"cannot listen on {url_host(host)}:{port}: {error}",
                             "pick a free port with --port, or --port 0 for any free one" if in_use else
                             f"pass an address of this machine with --host (default {DEFAULT_HOST}; 0.0.0.0 or :: "
                             "for every interface)") from None
        self.host, self.port = self.httpd.server_address[:2]
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        """The URL on this machine (loopback when listening on every interface)."""
        host = self.host if self.host not in _ANY else ("::1" if self.httpd.address_family == socket.AF_INET6
                                                        else "127.0.0.1")
        return f"http://{url_host(host)}:{self.port}/simple/"

    @property
    def loopback_only(self) -> bool:
        """Whether only this machine can connect (the default host)."""
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def fleet(self) -> Fleet:
        """The commands and pip.conf for devices: on an address they can reach (this machine's when loopback)."""
        if self.loopback_only:
            hosts = [urllib.parse.urlsplit(self.url).hostname or self.host]
        else:
            hosts = fleet_hosts(self.host, _addresses() if self.host in _ANY else [], socket.gethostname())
        return fleet(hosts, self.port, self.index, self.loopback_only)

    def describe(self) -> Dict[str, Any]:
        found = self.fleet()
        return {"url": self.url, "fleet_url": found.indexes[-1].url, "host": self.host, "port": self.port,
                "loopback_only": self.loopback_only, "projects": self.index["projects"], "fleet": found.to_json()}

    def start(self) -> ArchiveServer:
        """Serve in a background thread (tests, embedding)."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def close(self) -> None:
        if hasattr(self, "httpd"):
            if self._thread is not None:
                self.httpd.shutdown()
            self.httpd.server_close()
        if self._temporary:
            shutil.rmtree(self._temporary, ignore_errors=True)

    def __enter__(self) -> ArchiveServer:
        return self.start()

    def __exit__(self, *exc: Tuple[Any, ...]) -> None:
        self.close()
