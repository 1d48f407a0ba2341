"""Where an archive lives: a local directory, an http(s) URL served by `jetson-mamba serve`, or any
PEP 503 index (pypiserver, a static mirror; its wheels are downloaded and read, as there is no manifest).

Both give the manifest and the chosen wheels as local files with their actual sha256, so the
selection can check hashes of exactly the wheels it is about to install.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import BinaryIO, Callable, Dict, List, Optional, Sequence, Tuple

from jetson_mamba.archive.manifest import MANIFEST_LIMIT, MANIFEST_NAME, Manifest, WheelRecord, parse_manifest
from jetson_mamba.archive.store import open_directory
from jetson_mamba.archive.wheel import read_wheel, sha256_of
from jetson_mamba.errors import ArchiveError
from jetson_mamba.untrusted import is_within

_TIMEOUT = 30.0
_PAGE_LIMIT = MANIFEST_LIMIT  # an index page or manifest.json
_WHEEL_LIMIT = 4 << 30  # one wheel (read_wheel caps what its members expand to)
_BAD_INDEX = "the index is broken or hostile: fix or regenerate it (`jetson-mamba index DIR`), or use another archive"


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: List[str] = []

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.hrefs.append(href)


def _links(page: bytes) -> List[str]:
    """The hrefs of a PEP 503 HTML page."""
    parser = _Anchors()
    parser.feed(page.decode("utf-8", "replace"))
    return parser.hrefs


def wheel_filename_of(url: str) -> Optional[str]:
    """The wheel file name an index link points to, or None when the link is no plain wheel file name.

    The last path segment is unquoted first, so `..%2F..%2Fx.whl` is seen as the path it is and refused.
    """
    name = urllib.parse.unquote(urllib.parse.urlparse(url).path.rsplit("/", 1)[-1])
    if not name.endswith(".whl") or name != Path(name).name or any(c in name for c in "/\\\0") or \
            name.startswith("."):
        return None
    return name


def _is_url(location: str) -> bool:
    return urllib.parse.urlparse(location).scheme in ("http", "https")


def _unreachable(url: str, error: Exception) -> ArchiveError:
    return ArchiveError(f"cannot reach the archive at {url}: {error}",
                        "check the URL and that `jetson-mamba serve DIR --host 0.0.0.0` runs on that host "
                        "(and the port is open), or pass a local directory to --archive")


def _copy(url: str, out: BinaryIO, limit: int) -> None:
    """Copy the body at `url` into `out`, refusing more than `limit` bytes (HTTPError passes through)."""
    copied = 0
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT) as response:
            for block in iter(lambda: response.read(1 << 20), b""):
                copied += len(block)
                if copied > limit:
                    raise ArchiveError(f"{url} sends more than {limit >> 20} MiB",
                                       "the server is broken or hostile: use another archive")
                out.write(block)
    except urllib.error.HTTPError:
        raise
    except (urllib.error.URLError, OSError) as error:
        raise _unreachable(url, getattr(error, "reason", error)) from None


class ArchiveSource:
    """An opened archive: its manifest, and a way to get a wheel file and its actual digest."""

    def __init__(self, location: str) -> None:
        self.location = location
        self._downloads: Optional[Path] = None
        self._files: Dict[str, Path] = {}
        if _is_url(location):
            base = location.rstrip("/")
            if base.endswith("/simple"):
                base = base[:-len("/simple")]
            self.base_url: Optional[str] = base + "/"
            self.directory: Optional[Path] = None
        else:
            self.base_url = None
            self.directory = Path(location)
        try:
            self.manifest = self._remote_manifest() if self.directory is None else open_directory(self.directory)
        except BaseException:
            self.close()  # a scan that failed half-way leaves no download folder behind
            raise

    def _remote_manifest(self) -> Manifest:
        url = urllib.parse.urljoin(self.base_url or "", MANIFEST_NAME)
        body = self._get(url, missing_ok=True)
        if body is None:
            return self._scan_index()
        try:
            data = json.loads(body)
        except ValueError:
            return self._scan_index()  # some servers answer any path with a page
        return parse_manifest(data, url)

    def _get(self, url: str, missing_ok: bool = False) -> Optional[bytes]:
        """The body of a page or manifest (at most _PAGE_LIMIT bytes); None for a 404 when `missing_ok`."""
        body = io.BytesIO()
        try:
            _copy(url, body, _PAGE_LIMIT)
        except urllib.error.HTTPError as error:
            if error.code == 404 and missing_ok:
                return None
            raise _unreachable(url, f"HTTP {error.code}") from None
        return body.getvalue()

    def _page(self, url: str) -> bytes:
        return self._get(url) or b""

    def _scan_index(self) -> Manifest:
        """A manifest for a plain PEP 503 index (pypiserver, a static mirror): download and read every wheel."""
        simple = urllib.parse.urljoin(self.base_url or "", "simple/")
        projects = [urllib.parse.urljoin(simple, href) for href in _links(self._page(simple))]
        if not projects:
            raise ArchiveError(f"neither {MANIFEST_NAME} nor a PEP 503 index with projects at {self.base_url}",
                               "point --archive at the root URL of `jetson-mamba serve DIR` or of a pip index")
        records: List[WheelRecord] = []
        for project in projects:
            for href in _links(self._page(project)):
                url, _, fragment = urllib.parse.urljoin(project, href).partition("#")
                if not urllib.parse.unquote(url).endswith(".whl"):
                    continue
                filename = wheel_filename_of(url)
                if filename is None:
                    raise ArchiveError(f"the index page {project} links to {href!r}, which is not a wheel file name",
                                       _BAD_INDEX)
                path = self._download(url, filename)
                facts = read_wheel(path)
                expected = fragment[len("sha256="):].lower() if fragment.startswith("sha256=") else facts["sha256"]
                if not re.fullmatch(r"[0-9a-f]{64}", expected):
                    raise ArchiveError(f"the index page {project} gives {filename} the digest {expected!r}, "
                                       "not a sha256", _BAD_INDEX)
                facts["sha256"] = expected  # the index's digest is what the file must match
                records.append(WheelRecord(**facts, provenance={"source": url, "digest": "index link"}))
        return Manifest(wheels=records)

    def _download(self, url: str, filename: str) -> Path:
        if self._downloads is None:
            self._downloads = Path(tempfile.mkdtemp(prefix="jetson-mamba-download-"))
        path = self._downloads / filename
        if not is_within(path, self._downloads) or path.parent.resolve() != self._downloads.resolve():
            raise ArchiveError(f"refusing to download {url} to {path}: outside the download folder",
                               "the archive names a file with a path in it; use another archive")
        try:
            with open(path, "wb") as out:
                _copy(url, out, _WHEEL_LIMIT)
        except urllib.error.HTTPError as error:
            raise _unreachable(url, f"HTTP {error.code}") from None
        self._files[filename] = path
        return path

    def fetch(self, record: WheelRecord, progress: Optional[Callable[[str], None]] = None) -> Path:
        """A local path of the wheel (downloaded once for a URL archive)."""
        if record.filename in self._files:
            return self._files[record.filename]
        if self.directory is None:
            if progress:
                progress(f"downloading {record.filename} ({record.size / 1e6:.1f} MB)")
            url = urllib.parse.urljoin(self.base_url or "", urllib.parse.quote(record.filename))
            return self._download(url, record.filename)
        path = self.directory / record.filename
        self._files[record.filename] = path
        return path

    def digests(self, records: Sequence[WheelRecord],
                progress: Optional[Callable[[str], None]] = None) -> Dict[str, Optional[str]]:
        """filename -> actual sha256 (None when the file is missing)."""
        found: Dict[str, Optional[str]] = {}
        for record in records:
            path = self.fetch(record, progress)
            found[record.filename] = sha256_of(path) if path.is_file() else None
        return found

    def close(self) -> None:
        if self._downloads is not None:
            shutil.rmtree(self._downloads, ignore_errors=True)
            self._downloads = None
