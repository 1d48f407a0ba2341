"""The archive manifest: `manifest.json` next to the wheels, one record per wheel.

Schema (schema_version 1)::

    {"schema_version": 1, "generator": "jetson-mamba 0.1.0",
     "wheels": [{"filename", "sha256", "size", "name", "version", "tags", "requires_python",
                 "requires_dist", "torch": {"linked", "version", "cxx11_abi", "source"},
                 "cuda": {"version", "source"}, "gpu_archs": {"sass", "ptx", "binaries"} | null,
                 "built_on": {...} | null, "provenance": {...}, "added_at": ISO-8601 UTC}]}

Writes are atomic (temporary file + rename) under an exclusive lock, so two builds adding to
one archive at the same time both land.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Iterator, List, Optional, Union

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from jetson_mamba import __version__
from jetson_mamba.errors import ArchiveError
from jetson_mamba.untrusted import read_bounded

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
_LOCK_NAME = ".manifest.lock"
MANIFEST_LIMIT = 64 << 20  # bytes; the largest real one is a few hundred KB
_REQUIRED = ("filename", "sha256", "size", "name", "version", "tags", "torch", "cuda", "gpu_archs")
_OPTIONAL_STR = (str, type(None))
# field -> the JSON types it may have (a manifest comes from outside: an archive, an HTTP server).
_TYPES: Dict[str, tuple] = {
    "filename": (str,), "sha256": (str,), "size": (int,), "name": (str,), "version": (str,), "tags": (list,),
    "torch": (dict,), "cuda": (dict,), "gpu_archs": (dict, type(None)), "requires_python": _OPTIONAL_STR,
    "requires_dist": (list,), "built_on": (dict, type(None)), "provenance": (dict,), "added_at": _OPTIONAL_STR,
}
_NESTED: Dict[str, Dict[str, tuple]] = {
    "torch": {"linked": (bool, type(None)), "version": _OPTIONAL_STR, "cxx11_abi": (bool, type(None)),
              "source": _OPTIONAL_STR},
    "cuda": {"version": _OPTIONAL_STR, "source": _OPTIONAL_STR},
    "gpu_archs": {"sass": (list, type(None)), "ptx": (list, type(None)), "binaries": (dict, type(None))},
}
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _type_problem(data: Dict[str, Any]) -> Optional[str]:
    """Why an entry's fields have the wrong JSON types or values (None when they are fine)."""
    for key, types in _TYPES.items():
        value = data.get(key)
        if key in data and (not isinstance(value, types) or isinstance(value, bool)):
            return f"`{key}` is {json.dumps(value)[:60]}, not {' or '.join(_JSON_NAMES[t] for t in types)}"
    for key in ("tags", "requires_dist"):
        if not all(isinstance(item, str) for item in data.get(key) or []):
            return f"`{key}` holds something other than strings"
    for key, fields in _NESTED.items():
        for inner, types in fields.items():
            value = (data.get(key) or {}).get(inner)
            if not isinstance(value, types):
                return f"`{key}.{inner}` is {json.dumps(value)[:60]}, not {' or '.join(_JSON_NAMES[t] for t in types)}"
    for inner in ("sass", "ptx"):
        if not all(isinstance(arch, str) for arch in (data.get("gpu_archs") or {}).get(inner) or []):
            return f"`gpu_archs.{inner}` holds something other than strings"
    if data["size"] < 0:
        return f"`size` is negative ({data['size']})"
    if not _SHA256.fullmatch(data["sha256"]):
        return "`sha256` is not 64 lowercase hex digits"
    filename = data["filename"]
    if filename != PurePosixPath(filename).name or "\\" in filename or filename in (".", ".."):
        return f"`filename` {filename!r} is a path, not a file name"
    try:
        Version(data["version"])
    except InvalidVersion:
        return f"`version` {data['version']!r} is not a version"
    return None


_JSON_NAMES = {str: "a string", int: "an integer", list: "a list", dict: "an object", bool: "true/false",
               type(None): "null"}


@dataclass(frozen=True)
class WheelRecord:
    """What the archive knows about one wheel (see the module docstring for the fields)."""

    filename: str
    sha256: str
    size: int
    name: str  # canonical distribution name, "mamba-ssm"
    version: str
    tags: List[str]
    torch: Dict[str, Any]
    cuda: Dict[str, Any]
    gpu_archs: Optional[Dict[str, Any]]
    requires_python: Optional[str] = None
    requires_dist: List[str] = field(default_factory=list)
    built_on: Optional[Dict[str, Any]] = None
    provenance: Dict[str, Any] = field(default_factory=dict)
    added_at: Optional[str] = None

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any, where: str = "manifest") -> WheelRecord:
        """A record after checking it is well formed and its file name agrees with its fields."""
        if not isinstance(data, dict):
            raise ArchiveError(f"{where}: a wheel entry is {type(data).__name__}, not an object",
                               "rebuild the manifest: `jetson-mamba archive add --archive DIR DIR/*.whl`")
        missing = [key for key in _REQUIRED if key not in data]
        label = data.get("filename", "?")
        if missing:
            raise ArchiveError(f"{where}: entry {label} lacks {', '.join(missing)}",
                               f"re-add the wheel: `jetson-mamba archive add --archive DIR DIR/{label}`")
        problem = _type_problem(data)
        if problem:
            raise ArchiveError(f"{where}: entry {label if isinstance(label, str) else '?'}: {problem}",
                               "rebuild the manifest: move it away and run "
                               "`jetson-mamba archive add --archive DIR DIR/*.whl`")
        known = {f for f in cls.__dataclass_fields__}
        record = cls(**{k: v for k, v in data.items() if k in known})
        record.check_name()
        return record

    def check_name(self) -> None:
        """ArchiveError when the file name disagrees with the recorded name, version or tags."""
        fix = f"re-add the wheel: `jetson-mamba archive add --archive DIR DIR/{self.filename}`"
        try:
            name, version, _build, tags = parse_wheel_filename(self.filename)
        except InvalidWheelFilename as error:
            raise ArchiveError(f"entry {self.filename}: invalid wheel file name ({error})", fix) from None
        if name != canonicalize_name(self.name) or version != Version(self.version) or \
                sorted(str(t) for t in tags) != sorted(self.tags):
            raise ArchiveError(
                f"entry {self.filename}: the file name disagrees with the recorded "
                f"{self.name} {self.version} {','.join(self.tags)}", fix)


@dataclass(frozen=True)
class Manifest:
    wheels: List[WheelRecord]
    schema_version: int = SCHEMA_VERSION
    generator: str = f"jetson-mamba {__version__}"

    def to_json(self) -> Dict[str, Any]:
        return {"schema_version": self.schema_version, "generator": self.generator,
                "wheels": [w.to_json() for w in self.wheels]}

    def record(self, filename: str) -> Optional[WheelRecord]:
        return next((w for w in self.wheels if w.filename == filename), None)


def parse_manifest(data: Any, where: str = MANIFEST_NAME) -> Manifest:
    """A Manifest from decoded JSON; ArchiveError for an unknown schema or a malformed entry."""
    if not isinstance(data, dict) or "schema_version" not in data:
        raise ArchiveError(f"{where} is not a jetson-mamba manifest (no schema_version)",
                           "rebuild it: `jetson-mamba archive add --archive DIR DIR/*.whl`")
    if data["schema_version"] != SCHEMA_VERSION:
        raise ArchiveError(
            f"{where} has schema_version {data['schema_version']!r}; this jetson-mamba ({__version__}) "
            f"reads schema_version {SCHEMA_VERSION}",
            "upgrade jetson-mamba to the version that wrote the archive, or rebuild the manifest with "
            "`jetson-mamba archive add --archive DIR DIR/*.whl` after moving the old manifest.json away")
    wheels = data.get("wheels")
    if not isinstance(wheels, list):
        raise ArchiveError(f"{where}: `wheels` is not a list", "rebuild the manifest with `jetson-mamba archive add`")
    return Manifest(wheels=[WheelRecord.from_json(item, where) for item in wheels],
                    generator=str(data.get("generator", "")))


def read_json(path: Path) -> Any:
    """A manifest's JSON, read bounded; ValueError when it is not a regular file, too large, or not JSON."""
    data = read_bounded(path, MANIFEST_LIMIT + 1)
    if data is None:
        raise ValueError("not a readable regular file")
    if len(data) > MANIFEST_LIMIT:
        raise ValueError(f"larger than {MANIFEST_LIMIT >> 20} MiB")
    return json.loads(data)


def load_manifest(archive: Union[str, Path]) -> Optional[Manifest]:
    """The manifest of an archive directory, or None when it has none."""
    path = Path(archive) / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        data = read_json(path)
    except ValueError as error:
        raise ArchiveError(f"cannot read {path}: {error}",
                           f"restore it, or move it away and re-add the wheels: `jetson-mamba archive add "
                           f"--archive {archive} {archive}/*.whl`") from None
    return parse_manifest(data, str(path))


@contextlib.contextmanager
def atomic_file(target: Path) -> Iterator[str]:
    """A temporary path next to `target` that replaces it (mode 0644) only if the block succeeds."""
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=str(target.parent))
    os.close(handle)
    try:
        yield temporary
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def write_manifest(archive: Union[str, Path], manifest: Manifest) -> Path:
    """Write atomically: a reader never sees a half-written manifest."""
    path = Path(archive) / MANIFEST_NAME
    with atomic_file(path) as temporary, open(temporary, "w") as out:
        json.dump(manifest.to_json(), out, indent=2)
        out.write("\n")
    return path


@contextlib.contextmanager
def locked(archive: Union[str, Path]) -> Iterator[None]:
    """Hold the archive's lock (several builds may add wheels at once)."""
    with open(Path(archive) / _LOCK_NAME, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
