"""Find the sources of one package version and turn them into a patched work tree.

Sources: `--source` paths (an sdist, a directory of sdists, an unpacked sdist or a git
checkout), else the sdist alone downloaded with pip (no dependencies, never torch, no
wheels). Work trees are keyed by the source digest and the build options, so rebuilding
unchanged sources finds the previous tree and ninja reuses its finished objects.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from jetson_mamba.compat.build_patches import BuildOptions, apply_build_patches
from jetson_mamba.errors import BuildError, UsageError
from jetson_mamba.wheelbuild.plan import PACKAGES, BuildPlan, Spec

STAMP = ".jetson-mamba-build.json"
_SDIST = re.compile(r"^(?P<name>[A-Za-z0-9_.\-]+?)-(?P<version>\d[^-]*)\.(?:tar\.gz|zip)$")
_COPY_IGNORE = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", "*.so")


@dataclass(frozen=True)
class Source:
    name: str
    version: str
    path: Path  # an sdist file or a source directory
    digest: str  # sha256 of the sdist, or of the tree's file names, sizes and contents
    origin: str  # "downloaded" or the --source path


def _sdist_identity(path: Path) -> Optional[Tuple[str, str]]:
    match = _SDIST.match(path.name)
    return (canonicalize_name(match.group("name")), match.group("version")) if match else None


def _dir_identity(path: Path) -> Optional[Tuple[str, str]]:
    """(name, version) of an unpacked sdist or checkout: the known package whose __init__ has __version__."""
    for kind in PACKAGES.values():
        init = path / kind.module / "__init__.py"
        if (path / "setup.py").is_file() and init.is_file():
            match = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", init.read_text(), re.MULTILINE)
            if match:
                return kind.name, match.group(1)
    return None


def _candidates(paths: Sequence[Path]) -> Iterator[Tuple[str, str, Path]]:
    for path in paths:
        if path.is_file():
            identity = _sdist_identity(path)
            if identity is None:
                raise UsageError(f"--source {path} is not an sdist (name-version.tar.gz)",
                                 "pass an sdist, a directory of sdists, an unpacked sdist or a git checkout")
            yield identity[0], identity[1], path
        elif path.is_dir() and (path / "setup.py").is_file():
            identity = _dir_identity(path)
            if identity is None:
                raise UsageError(f"--source {path} is not a mamba-ssm or causal-conv1d source tree",
                                 "point --source at the directory holding setup.py of one of them")
            yield identity[0], identity[1], path
        elif path.is_dir():
            for sdist in sorted(path.iterdir()):
                identity = _sdist_identity(sdist)
                if identity is not None:
                    yield identity[0], identity[1], sdist
        else:
            raise UsageError(f"--source {path} does not exist", "check the path")


def _version_key(version: str) -> Version:
    try:
        return Version(version)
    except InvalidVersion:
        return Version("0")


def digest_of(path: Path) -> str:
    """Content hash of an sdist file or a source tree (names, sizes and bytes; .git and build/ excluded)."""
    digest = hashlib.sha256()
    if path.is_file():
        digest.update(path.read_bytes())
        return digest.hexdigest()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        relative = file.relative_to(path)
        if relative.parts[0] in (".git", "build", "dist") or relative.suffix == ".so":
            continue
        digest.update(str(relative).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def find_local(spec: Spec, paths: Sequence[Path]) -> Optional[Source]:
    """The --source match for a spec (its exact version, or the newest when unpinned)."""
    matches = [(v, p) for n, v, p in _candidates(paths) if n == spec.name
               and (spec.version is None or _version_key(v) == _version_key(spec.version))]
    if not matches:
        return None
    version, path = max(matches, key=lambda item: _version_key(item[0]))
    return Source(spec.name, version, path, digest_of(path), str(path))


def download_sdist(spec: Spec, python: str, into: Path) -> Source:
    """The sdist alone, via pip (no dependencies, no wheels, no build isolation: torch is never fetched)."""
    into.mkdir(parents=True, exist_ok=True)
    command = [python, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--no-build-isolation",
               "-d", str(into), str(spec)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise BuildError(f"could not download the sdist of {spec}: {tail}",
                         "check the network and the version, or pass a local sdist or checkout with --source PATH")
    found = find_local(spec, [into])
    if found is None:
        raise BuildError(f"pip downloaded no sdist for {spec} into {into}",
                         "pass a local sdist or checkout with --source PATH")
    return Source(found.name, found.version, found.path, found.digest, "downloaded")


def obtain(spec: Spec, paths: Sequence[Path], python: str, download_dir: Path) -> Source:
    if paths:
        found = find_local(spec, paths)
        if found is None:
            raise UsageError(f"none of the --source paths holds {spec}",
                             f"add its sdist or checkout to --source, or leave --source out to download {spec}")
        return found
    return download_sdist(spec, python, download_dir)


def _unpack(source: Source, into: Path) -> Path:
    """The source tree of `source` copied/extracted under `into` (safe against ../ members)."""
    if source.path.is_dir():
        target = into / source.path.name
        shutil.copytree(source.path, target, ignore=_COPY_IGNORE)
        return target
    try:
        _extract(source.path, into)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError, NotImplementedError) as error:
        raise BuildError(f"{source.path} is not a readable sdist ({type(error).__name__}: {error})",
                         "download the sdist again (or leave --source out to let pip fetch it), "
                         "or pass an unpacked source tree with --source") from None
    tops = [p for p in into.iterdir() if p.is_dir()]
    if len(tops) != 1:
        raise BuildError(f"{source.path} does not unpack to one directory", "pass an unpacked tree with --source")
    return tops[0]


def _extract(path: Path, into: Path) -> None:
    """Unpack an sdist (.zip or .tar.*) under `into`, refusing members outside it."""
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            _check_members(path, names, into)
            archive.extractall(into)
        return
    with tarfile.open(path) as archive:
        members = [m for m in archive.getmembers() if m.isfile() or m.isdir()]
        _check_members(path, [m.name for m in members], into)
        for member in members:  # the unpacked tree belongs to whoever builds, not to the sdist's uid
            member.uid, member.gid, member.uname, member.gname = os.getuid(), os.getgid(), "", ""
        # Python >= 3.12 checks members itself ("data" filter); ours above covers older ones.
        extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        archive.extractall(into, members=members, **extra)


def _check_members(archive: Path, names: List[str], into: Path) -> None:
    root = into.resolve()
    for name in names:
        if root not in (into / name).resolve().parents and (into / name).resolve() != root:
            raise BuildError(f"{archive} has a member outside its directory ({name})", "use a trustworthy sdist")


def tree_key(source: Source, plan: BuildPlan, options: BuildOptions) -> str:
    payload = json.dumps([source.digest, list(options.archs), options.compress_mode, options.cxx_std, plan.label])
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def prepare_tree(source: Source, plan: BuildPlan, options: BuildOptions, target: Path) -> Tuple[Path, List[str], bool]:
    """(tree, patches applied, reused): a patched copy of the sources at `target`.

    An existing tree with a stamp for the same key is reused untouched, so ninja finds its
    objects up to date. A new tree is built in a temporary sibling and renamed into place,
    so a failed patch never leaves a half-patched tree behind.
    """
    key = tree_key(source, plan, options)
    stamp = target / STAMP
    if stamp.is_file():
        recorded = json.loads(stamp.read_text())
        if recorded.get("key") == key:
            return target, list(recorded.get("patches", [])), True
        raise UsageError(f"{target} already holds a different build ({recorded.get('source')})",
                         "choose another directory or remove it")
    if target.exists():
        raise UsageError(f"{target} exists and is not a jetson-mamba build tree", "choose an empty directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".jm-unpack-", dir=target.parent) as tmp:
        tree = _unpack(source, Path(tmp))
        kind = PACKAGES[source.name]
        if not (tree / kind.cuda_source_dir).is_dir():
            raise UsageError(
                f"the {source.name} {source.version} source at {source.path} has no CUDA sources "
                f"({kind.cuda_source_dir}/ is missing, as in the sdists of mamba-ssm 2.2.4 and causal-conv1d 1.4.0/1.5.0.post8)",
                f"build from a git checkout of that version: git clone --branch v{source.version} "
                f"<upstream repository> src && jetson-mamba build {source.name}=={source.version} --source src")
        patches = apply_build_patches(tree, source.name, source.version, options)
        (tree / STAMP).write_text(json.dumps({"key": key, "source": source.origin, "name": source.name,
                                              "version": source.version, "patches": patches}, indent=2))
        tree.rename(target)
    return target, patches, False
