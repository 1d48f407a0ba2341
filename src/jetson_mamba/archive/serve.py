"""Serve an archive as a pip index: the static PEP 503/691 index behind the standard library's HTTP server.

`/simple/...` answers HTML, or PEP 691 JSON when the client's Accept header asks for it; wheels
and `manifest.json` (what `jetson-mamba install --archive URL` reads) come from the archive.
A read-only archive is indexed into a temporary directory.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from jetson_mamba.archive.index import JSON_TYPE, write_index
from jetson_mamba.archive.manifest import MANIFEST_NAME
from jetson_mamba.errors import ArchiveError, UsageError


class _Handler(SimpleHTTPRequestHandler):
    """Static files from the archive, the index (and a scanned manifest) from the index directory."""

    index_root = ""

    def translate_path(self, path: str) -> str:
        plain = path.split("?", 1)[0].split("#", 1)[0]
        in_index = plain.startswith("/simple") or (plain == f"/{MANIFEST_NAME}" and
                                                   (Path(self.index_root) / MANIFEST_NAME).is_file())
        if not in_index:
            return super().translate_path(path)
        relative = plain.lstrip("/")
        if plain.startswith("/simple") and plain.endswith("/") and JSON_TYPE in self.headers.get("Accept", ""):
            relative += "index.json"
        target = os.path.normpath(os.path.join(self.index_root, relative))
        return target if target.startswith(os.path.normpath(self.index_root)) else self.index_root

    def guess_type(self, path: Any) -> str:
        if str(path).endswith("index.json") and "/simple" in str(path):
            return JSON_TYPE
        return super().guess_type(path)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        if os.environ.get("JETSON_MAMBA_SERVE_LOG"):
            super().log_message(format, *args)


class ArchiveServer:
    """A running index server; `url` is what pip's --index-url takes. Use as a context manager or call close()."""

    def __init__(self, archive: Union[str, Path], host: str = "127.0.0.1", port: int = 8080) -> None:
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
        try:
            self.httpd = ThreadingHTTPServer((host, port), partial(handler, directory=str(archive)))
        except OSError as error:
            self.close()
            raise UsageError(f"cannot listen on {host}:{port}: {error}",
                             "pick a free port with --port, or --port 0 for any free one") from None
        self.host, self.port = self.httpd.server_address[:2]
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/simple/"

    @property
    def fleet_url(self) -> str:
        """The URL other machines use (this host's name when listening on every interface)."""
        host = socket.gethostname() if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/simple/"

    def describe(self) -> Dict[str, Any]:
        return {"url": self.url, "fleet_url": self.fleet_url, "host": self.host, "port": self.port,
                "projects": self.index["projects"]}

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
