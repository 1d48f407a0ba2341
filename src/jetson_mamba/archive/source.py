"""Where an archive lives: a local directory or an http(s) URL served by `jetson-mamba serve`.

Both give the manifest and the chosen wheels as local files with their actual sha256, so the
selection can check hashes of exactly the wheels it is about to install.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

from jetson_mamba.archive.manifest import MANIFEST_NAME, Manifest, WheelRecord, parse_manifest
from jetson_mamba.archive.store import open_directory
from jetson_mamba.archive.wheel import sha256_of
from jetson_mamba.errors import ArchiveError

_TIMEOUT = 30.0


def _is_url(location: str) -> bool:
    return urllib.parse.urlparse(location).scheme in ("http", "https")


def _unreachable(url: str, error: Exception) -> ArchiveError:
    return ArchiveError(f"cannot reach the archive at {url}: {error}",
                        "check the URL and that `jetson-mamba serve DIR --host 0.0.0.0` runs on that host "
                        "(and the port is open), or pass a local directory to --archive")


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
            self.manifest = self._remote_manifest()
        else:
            self.base_url = None
            self.directory = Path(location)
            self.manifest = open_directory(self.directory)

    def _remote_manifest(self) -> Manifest:
        url = urllib.parse.urljoin(self.base_url or "", MANIFEST_NAME)
        try:
            with urllib.request.urlopen(url, timeout=_TIMEOUT) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            raise ArchiveError(f"the archive at {self.base_url} has no {MANIFEST_NAME} (HTTP {error.code})",
                               "serve an archive directory with `jetson-mamba serve DIR` (it publishes "
                               f"{MANIFEST_NAME}), or add its wheels first: `jetson-mamba archive add --archive DIR "
                               "WHEEL...`") from None
        except (urllib.error.URLError, OSError) as error:
            raise _unreachable(url, getattr(error, "reason", error)) from None
        try:
            data = json.loads(body)
        except ValueError as error:
            raise ArchiveError(f"{url} is not JSON ({error})", "point --archive at the server's root URL") from None
        return parse_manifest(data, url)

    def fetch(self, record: WheelRecord, progress: Optional[Callable[[str], None]] = None) -> Path:
        """A local path of the wheel (downloaded once for a URL archive)."""
        if record.filename in self._files:
            return self._files[record.filename]
        if self.directory is not None:
            path = self.directory / record.filename
        else:
            if self._downloads is None:
                self._downloads = Path(tempfile.mkdtemp(prefix="jetson-mamba-download-"))
            path = self._downloads / record.filename
            url = urllib.parse.urljoin(self.base_url or "", urllib.parse.quote(record.filename))
            if progress:
                progress(f"downloading {record.filename} ({record.size / 1e6:.1f} MB)")
            try:
                with urllib.request.urlopen(url, timeout=_TIMEOUT) as response, open(path, "wb") as out:
                    shutil.copyfileobj(response, out)
            except (urllib.error.URLError, OSError) as error:
                raise _unreachable(url, getattr(error, "reason", error)) from None
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
