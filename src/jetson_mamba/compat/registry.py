"""Declarative, reversible patches on installed packages or unpacked source trees.

Why: people fix mamba-ssm / causal-conv1d by overwriting whole files with hand-edited copies,
which loses upstream changes and cannot be undone. Here every fix is a small text transform
that says which file it touches, how it recognises the code it fixes (feature detection on the
source, not version numbers) and how it marks its result, and the engine makes applying it
atomic, idempotent, recorded and exactly reversible.

API (used by `cli/patch.py`, `compat/build_patches.py`, the install and build commands, doctor):

- `Patch(name, distribution, summary, files, transform, modes)`: one fix. `transform(path, text,
  ctx)` returns the patched text, `None` when the file does not contain what the patch fixes
  (not needed), or raises `UnknownContent` when it half-recognises the file. The patched text
  must contain `marker(name)` (a comment); its presence means "applied".
- `Replace(pattern, replacement, count=1, required=True)` + `replacing(name, *edits)`: the
  usual transform, all-or-nothing regex edits that also insert the marker comment.
- `Context(mode, root, distribution, version, upstream_sha256, facts, options)`: what a
  transform may look at. `mode` is `INSTALLED` (root = site-packages) or `TREE` (root = an
  unpacked sdist); `options` carries build options (e.g. archs) for build-time patches.
- `PatchTarget(distribution, version, root, upstream_sha256)`: one distribution to patch.
- `patch_plan(targets, patches, mode, facts=None, options=None) -> PatchPlan`: pure (reads files,
  writes nothing). `PatchPlan.statuses` says, per patch and file, applied / needed / not-needed /
  missing and why; `PatchPlan.changes` holds the new bytes; `PatchPlan.clean` is True when nothing is
  needed. Refuses (PatchError) a file that is neither upstream (its dist-info RECORD hash, or
  in tree mode: no foreign marker) nor what jetson-mamba wrote.
- `apply_plan(plan) -> List[FileChange]`: writes atomically (temp file + rename), after
  checking every directory is writable (PermissionDeniedError with the fix). Backups of the
  original bytes and sha256 hashes go to `<root>/.jetson-mamba-patches/` (`record.json`,
  `backups/<sha256>`), written before any target file, so an interrupted run is recoverable.
- `revert(root) -> List[Reverted]`: restores every recorded file byte-exactly (hash-checked)
  and removes the record; a file changed since (reinstalled upstream) is left alone.
- `locked(roots, files)`: hold the lock of every root around a whole plan + apply_plan (or revert), as
  `jetson-mamba patch` does, so a concurrent patch / revert never sees or leaves a mixed state; removes
  the `*.jm-tmp` files a killed run left.
- `applied_patches(root) -> Dict[str, List[str]]`: recorded file -> patch names (for doctor).
- `installed_hashes(root, distribution)`: the RECORD hashes that define "upstream" when installed.
- `tree_target(root) -> PatchTarget`: an unpacked sdist as a target (name and version from PKG-INFO).
- `unified_diff(change) -> str`: what --dry-run prints.
- `atomic_write(path, data)`: the one way this package rewrites a file.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import difflib
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

from jetson_mamba.errors import PatchError, PermissionDeniedError

INSTALLED = "installed"
TREE = "tree"
MODES = (INSTALLED, TREE)
RECORD_DIR = ".jetson-mamba-patches"
RECORD_FILE = "record.json"
RECORD_SCHEMA = 1
TEMP_SUFFIX = ".jm-tmp"  # atomic_write's temporary files; one left behind is a killed run's
MARKER_PREFIX = "jetson-mamba patch:"

# Status of one (patch, file) pair.
APPLIED = "applied"
NEEDED = "needed"
NOT_NEEDED = "not-needed"
MISSING = "missing"


class UnknownContent(Exception):
    """A transform recognised part of what it fixes but not all: the file is a variant it does not know."""


def marker(name: str) -> str:
    """The comment text whose presence in a file means patch `name` is applied."""
    return f"{MARKER_PREFIX} {name}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def record_hash_to_hex(value: str) -> Optional[str]:
    """A dist-info RECORD hash (`sha256=<urlsafe b64>`) as hex, or None for other algorithms."""
    algorithm, _, digest = value.partition("=")
    if algorithm != "sha256" or not digest:
        return None
    padded = digest + "=" * (-len(digest) % 4)
    try:
        return base64.urlsafe_b64decode(padded).hex()
    except ValueError:
        return None


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them ("Mamba_SSM" -> "mamba-ssm")."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_hashes(root: Path, distribution: str) -> Dict[str, str]:
    """Relative path -> sha256 hex of an installed distribution's files, from its dist-info RECORD.

    This is what "the known upstream content" means for an installed package; {} when none.
    """
    for info in sorted(Path(root).glob("*.dist-info")):
        if normalise(info.name[:-len(".dist-info")].rsplit("-", 1)[0]) != normalise(distribution):
            continue
        try:
            rows = list(csv.reader((info / "RECORD").read_text(encoding="utf-8").splitlines()))
        except OSError:
            return {}
        return {row[0]: digest for row in rows
                if len(row) >= 2 and row[1] and (digest := record_hash_to_hex(row[1])) is not None}
    return {}


@dataclass(frozen=True)
class Context:
    """What a transform may look at besides the file's text."""

    mode: str
    root: Path
    distribution: str
    version: Optional[str]
    facts: Mapping[str, Any] = field(default_factory=dict)  # e.g. versions of other distributions
    options: Mapping[str, Any] = field(default_factory=dict)  # build options (archs, ...)


Transform = Callable[[str, str, Context], Optional[str]]


@dataclass(frozen=True)
class Patch:
    """One fix: where it applies, how it transforms a file, and what it is for."""

    name: str
    distribution: str  # normalised distribution name: "mamba-ssm", "causal-conv1d"
    summary: str  # what it fixes and why, one sentence
    files: Tuple[str, ...]  # paths relative to the root (site-packages or the sdist root)
    transform: Transform
    modes: Tuple[str, ...] = MODES
    not_needed: str = "the file does not contain the code this patch fixes"

    def is_applied(self, text: str) -> bool:
        return marker(self.name) in text


@dataclass(frozen=True)
class Replace:
    """One regex edit (multiline). `count` matches are required; 0 means one or more."""

    pattern: str
    replacement: str
    count: int = 1
    required: bool = True  # False: the edit may match nothing (code only some versions have)


def replacing(name: str, *edits: Replace, note: str = "") -> Transform:
    """All-or-nothing regex edits; the first edit's replacement should carry `marker(name)`.

    No required edit matching means "not needed"; some but not all means UnknownContent.
    """

    def transform(path: str, text: str, ctx: Context) -> Optional[str]:
        found = [len(re.findall(edit.pattern, text, flags=re.M)) for edit in edits]
        required = [(edit, n) for edit, n in zip(edits, found) if edit.required]
        if not any(n for _, n in required):
            return None
        for edit, n in zip(edits, found):
            allowed = (edit.count,) if edit.required else (0, edit.count)
            if (edit.required and n == 0) or (edit.count and n not in allowed):
                raise UnknownContent(
                    f"expected {edit.count or 'at least one'} match(es) of /{edit.pattern}/, found {n}{note}")
        for edit in edits:
            text = re.sub(edit.pattern, edit.replacement, text, flags=re.M)
        if marker(name) not in text:
            raise AssertionError(f"patch {name} does not insert its marker")  # a bug in the patch, not the file
        return text

    return transform


@dataclass(frozen=True)
class PatchTarget:
    """One distribution to patch: where its files are and the hashes it was installed with."""

    distribution: str
    version: Optional[str]
    root: Path
    upstream_sha256: Mapping[str, str] = field(default_factory=dict)  # relative path -> hex (from RECORD)


@dataclass(frozen=True)
class PatchStatus:
    patch: str
    distribution: str
    path: str
    status: str  # APPLIED, NEEDED, NOT_NEEDED, MISSING
    reason: str

    def to_json(self) -> Dict[str, str]:
        return {"patch": self.patch, "distribution": self.distribution, "path": self.path,
                "status": self.status, "reason": self.reason}


@dataclass(frozen=True)
class FileChange:
    """New content for one file; `original` is the upstream bytes (for the backup)."""

    root: Path
    path: str
    distribution: str
    version: Optional[str]
    before: bytes
    after: bytes
    original: bytes
    patches: Tuple[str, ...]  # every patch in `after`, old and new

    @property
    def absolute(self) -> Path:
        return self.root / self.path

    def to_json(self) -> Dict[str, Any]:
        return {"path": str(self.absolute), "distribution": self.distribution, "version": self.version,
                "patches": list(self.patches), "sha256_before": sha256(self.before),
                "sha256_after": sha256(self.after)}


@dataclass(frozen=True)
class PatchPlan:
    mode: str
    statuses: Tuple[PatchStatus, ...]
    changes: Tuple[FileChange, ...]

    @property
    def clean(self) -> bool:
        return not any(s.status == NEEDED for s in self.statuses)

    def to_json(self) -> Dict[str, Any]:
        return {"mode": self.mode, "clean": self.clean,
                "patches": [s.to_json() for s in self.statuses],
                "changes": [c.to_json() for c in self.changes]}


@dataclass(frozen=True)
class Reverted:
    path: Path
    action: str  # "restored", "already-upstream"
    sha256: str

    def to_json(self) -> Dict[str, str]:
        return {"path": str(self.path), "action": self.action, "sha256": self.sha256}


# ---------------------------------------------------------------------------------- records

def _record_path(root: Path) -> Path:
    return root / RECORD_DIR / RECORD_FILE


def read_record(root: Path) -> Dict[str, Dict[str, Any]]:
    """The recorded files under `root` (relative path -> entry); empty when nothing was patched.

    A record that is not what jetson-mamba writes (bad JSON, `[]`, an entry without its hashes) is a
    PatchError with the fix, never a traceback."""
    path = _record_path(root)
    if not path.is_file():
        return {}
    fix = f"restore the packages with pip install --force-reinstall --no-deps, then delete {path.parent}"
    try:
        with path.open("rb") as handle:
            data = json.loads(handle.read(_RECORD_LIMIT + 1)[:_RECORD_LIMIT].decode("utf-8"))
    except (OSError, ValueError) as error:
        raise PatchError(f"the patch record {path} is unreadable ({error})", fix) from None
    if not isinstance(data, dict):
        raise PatchError(f"the patch record {path} is not a JSON object (found {type(data).__name__})", fix)
    if data.get("schema") != RECORD_SCHEMA:
        raise PatchError(f"the patch record {path} has schema {data.get('schema')!r}, expected {RECORD_SCHEMA}",
                         "use the jetson-mamba version that wrote it to revert, or reinstall the packages")
    files = data.get("files", {})
    bad = [name for name, entry in files.items() if not _valid_entry(name, entry)] if isinstance(files, dict) \
        else ["files"]
    if bad:
        raise PatchError(f"the patch record {path} is damaged (entry {str(bad[0])[:80]!r} is not a recorded file)", fix)
    return dict(files)


_RECORD_LIMIT = 16 << 20  # bytes: a real record is a few kB
_ENTRY_KEYS = ("distribution", "original_sha256", "patched_sha256")


def _valid_entry(name: Any, entry: Any) -> bool:
    """A record entry as apply_plan writes it, for a path inside the root."""
    if not (isinstance(entry, dict) and all(isinstance(entry.get(k), str) for k in _ENTRY_KEYS)
            and isinstance(entry.get("patches", []), list)):
        return False
    parts = Path(name).parts
    return bool(parts) and not Path(name).is_absolute() and ".." not in parts


def _write_record(root: Path, files: Mapping[str, Mapping[str, Any]]) -> None:
    path = _record_path(root)
    if not files:
        with contextlib.suppress(OSError):
            path.unlink()
        with contextlib.suppress(OSError):
            (root / RECORD_DIR / "backups").rmdir()
            (root / RECORD_DIR).rmdir()
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps({"schema": RECORD_SCHEMA, "files": dict(sorted(files.items()))},
                                  indent=2).encode("utf-8") + b"\n")


def _backup_path(root: Path, digest: str) -> Path:
    return root / RECORD_DIR / "backups" / digest


def applied_patches(root: Path) -> Dict[str, List[str]]:
    """Recorded file (relative to `root`) -> patch names applied to it, from the record only.

    A pure read for doctor; a file reinstalled since is still listed (patch --check tells).
    """
    try:
        return {path: list(entry.get("patches", [])) for path, entry in read_record(Path(root)).items()}
    except PatchError:
        return {}


# ----------------------------------------------------------------------------------- writes

_held: Dict[str, int] = {}  # root -> depth of this process's lock on it (flock is not reentrant across fds)


@contextlib.contextmanager
def _exclusive(root: Path) -> Iterator[None]:
    """One writer at a time per root (site-packages or source tree): two patch/revert runs at once
    would interleave their record updates. A lock on the directory itself leaves no lock file behind;
    it is reentrant within a process, so `locked()` can hold it around a plan and its apply_plan."""
    key = str(Path(root).resolve())
    try:
        import fcntl
    except ImportError:  # not POSIX: no concurrent-run protection
        yield
        return
    if _held.get(key):
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    fd = os.open(key, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _held[key] = 1
        yield
    finally:
        _held.pop(key, None)
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def locked(roots: Iterable[Path], files: Iterable[Path] = (), clean: bool = True) -> Iterator[List[Path]]:
    """Hold the patch lock of every root (in a fixed order) for a whole plan-and-write or revert, so a
    run beside this one can neither see nor leave a half-patched state; then remove the temporary files
    an interrupted (killed) run left next to `files`, the recorded files and the record. Yields those
    removed (none unless `clean`: a dry run changes nothing)."""
    with contextlib.ExitStack() as stack:
        unique = sorted({Path(r).resolve() for r in roots})
        for root in unique:
            stack.enter_context(_exclusive(root))
        yield _remove_stray(unique, files) if clean else []


def _remove_stray(roots: Sequence[Path], files: Iterable[Path]) -> List[Path]:
    """`*.jm-tmp` files (atomic_write's, only ever half-written by a killed run) in the patch
    directories; called with the locks held, so no live run owns one."""
    directories = {Path(f).parent for f in files}
    for root in roots:
        directories |= {root / RECORD_DIR, root / RECORD_DIR / "backups"}
        with contextlib.suppress(PatchError):
            directories |= {(root / name).parent for name in read_record(root)}
    removed = []
    for directory in sorted(directories):
        for stray in sorted(directory.glob(f".*{TEMP_SUFFIX}")) if directory.is_dir() else []:
            with contextlib.suppress(OSError):
                stray.unlink()
                removed.append(stray)
    return removed


def atomic_write(path: Path, data: bytes, mode: Optional[int] = None) -> None:
    """Replace `path` by `data` via a temporary file in the same directory and a rename.

    A crash leaves either the old or the new file, never a half-written one; the file mode is kept.
    """
    if mode is None:
        mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _check_writable(directories: Iterable[Path]) -> None:
    for directory in sorted(set(directories)):
        probe = directory
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not os.access(str(probe), os.W_OK | os.X_OK):
            raise PermissionDeniedError(
                f"{probe} is not writable by this user, so nothing was patched",
                "run the same command as the owner of that environment (e.g. `sudo -E env PATH=\"$PATH\" "
                "jetson-mamba patch --python <that python>`), or better, install mamba-ssm into a venv you own")


# ----------------------------------------------------------------------------------- planning

def _file_state(target: PatchTarget, path: str, data: bytes, entry: Optional[Mapping[str, Any]],
                mode: str) -> Tuple[bytes, bool]:
    """(upstream bytes, True if the current bytes are jetson-mamba's), or PatchError if unknown."""
    digest = sha256(data)
    if entry is not None and digest == entry.get("patched_sha256"):
        backup = _backup_path(target.root, entry["original_sha256"])
        try:
            original = backup.read_bytes()
        except OSError as error:
            raise PatchError(f"the backup of {target.root / path} is missing ({error})",
                             f"reinstall {target.distribution} with pip install --force-reinstall --no-deps "
                             f"{target.distribution}=={target.version}, then run jetson-mamba patch again") from None
        return original, True
    if entry is not None and digest == entry.get("original_sha256"):
        return data, False  # an interrupted run, or reverted by hand
    upstream = target.upstream_sha256.get(path)
    if upstream is not None and digest == upstream:
        return data, False
    if upstream is None and MARKER_PREFIX not in data.decode("utf-8", "replace"):
        return data, False  # no RECORD hash (a source tree): trust the transforms' own recognition
    raise PatchError(
        f"{target.root / path} is neither the file {target.distribution} {target.version or ''} installed "
        f"(sha256 {upstream or 'unknown'}) nor the version jetson-mamba patched (sha256 {digest} matches "
        "neither): it was edited by hand or by another tool, so jetson-mamba will not guess; nothing was changed",
        f"reinstall it (pip install --force-reinstall --no-deps {target.distribution}=={target.version}) "
        "and run jetson-mamba patch again" if mode == INSTALLED else
        "start again from a freshly unpacked source tree")


def patch_plan(targets: Sequence[PatchTarget], patches: Sequence[Patch], mode: str,
               facts: Optional[Mapping[str, Any]] = None, options: Optional[Mapping[str, Any]] = None) -> PatchPlan:
    """What applying `patches` to `targets` would do. Reads files, writes nothing."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    statuses: List[PatchStatus] = []
    changes: List[FileChange] = []
    records: Dict[Path, Dict[str, Dict[str, Any]]] = {}
    for target in targets:
        record = records.setdefault(target.root, read_record(target.root))
        ctx = Context(mode, target.root, target.distribution, target.version, dict(facts or {}), dict(options or {}))
        chosen = [p for p in patches if p.distribution == target.distribution and mode in p.modes]
        for path in sorted({f for p in chosen for f in p.files}):
            absolute = target.root / path
            users = [p for p in chosen if path in p.files]
            if not absolute.is_file():
                statuses.extend(PatchStatus(p.name, target.distribution, path, MISSING,
                                            f"{absolute} does not exist in this version") for p in users)
                continue
            before = absolute.read_bytes()
            original, ours = _file_state(target, path, before, record.get(path), mode)
            text = before.decode("utf-8")
            # patches in the file: what the record says (other patch sets included) plus what is found now
            present = list(record[path].get("patches", [])) if ours else []
            for patch in users:
                if patch.is_applied(text):  # by us, or baked into the installed wheel
                    present += [] if patch.name in present else [patch.name]
                    statuses.append(PatchStatus(patch.name, target.distribution, path, APPLIED, patch.summary))
                    continue
                try:
                    new = patch.transform(path, text, ctx)
                except UnknownContent as error:
                    raise PatchError(
                        f"{absolute} ({target.distribution} {target.version}) does not look like any version "
                        f"patch {patch.name} knows: {error}; nothing was changed",
                        "report this version to jetson-mamba; until then, pin a tested version "
                        "(jetson-mamba doctor lists them)") from None
                if new is None:
                    statuses.append(PatchStatus(patch.name, target.distribution, path, NOT_NEEDED, patch.not_needed))
                    continue
                text = new
                present += [] if patch.name in present else [patch.name]
                statuses.append(PatchStatus(patch.name, target.distribution, path, NEEDED, patch.summary))
            after = text.encode("utf-8")
            if after != before:
                changes.append(FileChange(target.root, path, target.distribution, target.version, before, after,
                                          original, tuple(present)))
    return PatchPlan(mode, tuple(statuses), tuple(changes))


def apply_plan(plan: PatchPlan) -> List[FileChange]:
    """Write a plan's changes: backups and record first, then each file atomically. Returns the changes
    written (one that a run beside this one made already is left out)."""
    if not plan.changes:
        return []
    _check_writable([c.absolute.parent for c in plan.changes] + [c.root / RECORD_DIR for c in plan.changes])
    by_root: Dict[Path, List[FileChange]] = {}
    for change in plan.changes:
        by_root.setdefault(change.root, []).append(change)
    written: List[FileChange] = []
    for root, changes in by_root.items():
        with _exclusive(root):
            changes = _still_to_write(changes)
            record = read_record(root)
            for change in changes:
                original_digest = sha256(change.original)
                backup = _backup_path(root, original_digest)
                if not backup.is_file():
                    backup.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write(backup, change.original, 0o644)
                record[change.path] = {"distribution": change.distribution, "version": change.version,
                                       "original_sha256": original_digest, "patched_sha256": sha256(change.after),
                                       "patches": list(change.patches)}
            if changes:
                _write_record(root, record)
            for change in changes:
                atomic_write(change.absolute, change.after)
            written.extend(changes)
    return written


def _still_to_write(changes: Sequence[FileChange]) -> List[FileChange]:
    """The planned changes whose files still hold the bytes they were planned from, checked under the
    lock before anything is written. A file already patched the same way (a run beside this one) is
    skipped; any other change since planning refuses the whole root, so nothing is half-patched."""
    todo = []
    for change in changes:
        current = change.absolute.read_bytes() if change.absolute.is_file() else None
        if current == change.after:
            continue
        if current != change.before:
            raise PatchError(f"{change.absolute} changed while jetson-mamba was planning its patch (another "
                             "patch run or a pip install at the same time?); nothing was written here",
                             "run jetson-mamba patch again once the other process has finished")
        todo.append(change)
    return todo


def revert(root: Path, dry_run: bool = False) -> List[Reverted]:
    """Restore every file recorded under `root` to its upstream bytes and drop the record.

    Refuses (PatchError, nothing changed) when a file is neither ours nor upstream.
    """
    with _exclusive(root):  # also for a dry run or no record: the answer must not be read mid-way of a writer
        return _revert(root, dry_run)


def _revert(root: Path, dry_run: bool) -> List[Reverted]:
    record = read_record(root)
    work: List[Tuple[str, Path, Optional[bytes]]] = []
    for path, entry in sorted(record.items()):
        absolute = root / path
        current = absolute.read_bytes() if absolute.is_file() else None
        digest = sha256(current) if current is not None else None
        reinstalled = digest is not None and digest == installed_hashes(root, entry["distribution"]).get(path)
        if digest == entry["original_sha256"] or current is None or reinstalled:
            work.append((path, absolute, None))  # upstream again (e.g. pip reinstalled it): only drop the record
            continue
        if digest != entry["patched_sha256"]:
            raise PatchError(
                f"{absolute} changed after jetson-mamba patched it (sha256 {digest}), so it cannot be "
                "reverted safely; nothing was changed",
                f"reinstall {entry['distribution']} with pip install --force-reinstall --no-deps "
                f"{entry['distribution']}=={entry.get('version')}, then run jetson-mamba patch --revert again")
        original = _backup_path(root, entry["original_sha256"]).read_bytes() if _backup_path(
            root, entry["original_sha256"]).is_file() else b""
        if sha256(original) != entry["original_sha256"]:
            raise PatchError(f"the backup of {absolute} is missing or damaged; nothing was changed",
                             f"reinstall {entry['distribution']} with pip install --force-reinstall --no-deps "
                             f"{entry['distribution']}=={entry.get('version')}")
        work.append((path, absolute, original))
    done = [Reverted(a, "restored" if data is not None else "already-upstream",
                     record[p]["original_sha256"]) for p, a, data in work]
    if dry_run or not work:
        return done
    _check_writable([a.parent for _, a, data in work if data is not None] + [root / RECORD_DIR])
    for path, absolute, data in work:
        if data is not None:
            atomic_write(absolute, data)
        digest = record[path]["original_sha256"]
        record = {k: v for k, v in record.items() if k != path}
        if not any(v["original_sha256"] == digest for v in record.values()):
            with contextlib.suppress(OSError):
                _backup_path(root, digest).unlink()
        _write_record(root, record)
    return done


def tree_target(root: Path) -> PatchTarget:
    """An unpacked source tree as a patch target; its distribution and version come from PKG-INFO."""
    info = Path(root) / "PKG-INFO"
    try:
        text = info.read_text(encoding="utf-8", errors="replace")
    except OSError:
        raise PatchError(f"{root} has no PKG-INFO, so it is not an unpacked sdist jetson-mamba can identify",
                         "unpack the .tar.gz from the package index (or ../shared/sdists) and pass its top folder"
                         ) from None
    fields = dict(re.findall(r"^(Name|Version): *(.+?)\s*$", text, flags=re.M))
    return PatchTarget(normalise(fields.get("Name", "")), fields.get("Version"), Path(root))


def unified_diff(change: FileChange) -> str:
    """The unified diff of one change, as --dry-run prints it."""
    return "".join(difflib.unified_diff(
        change.before.decode("utf-8").splitlines(keepends=True),
        change.after.decode("utf-8").splitlines(keepends=True),
        fromfile=f"a/{change.path}", tofile=f"b/{change.path}"))
