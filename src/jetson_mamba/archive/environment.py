"""The target environment seen from outside: its distributions' files, torch's fingerprint, pip.

Everything runs as a small script in the target interpreter (`--python PATH`), so we never
import torch here and always look at the environment that is being changed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from jetson_mamba.archive.wheel import sha256_of
from jetson_mamba.errors import InstallError
from jetson_mamba.probe.python_env import run_script

# Runs in the target interpreter: Python 3.8 compatible, standard library only.
_FILES_SCRIPT = r"""
import json, sys, sysconfig
try:
    import importlib.metadata as md
except ImportError:
    import importlib_metadata as md
out = {"purelib": sysconfig.get_paths()["purelib"], "prefix": sys.prefix, "dists": {}}
for name in NAMES:
    dist = None
    for candidate in (name, name.replace("-", "_")):
        try:
            dist = md.distribution(candidate)
            break
        except Exception:
            pass
    if dist is None:
        continue
    files = [str(dist.locate_file(f)) for f in (dist.files or [])]
    out["dists"][name] = {"version": dist.version, "files": files, "location": str(dist.locate_file(""))}
print(json.dumps(out))
"""

_TORCH_SCRIPT = r"""
import hashlib, json, os
try:
    import importlib.metadata as md
except ImportError:
    import importlib_metadata as md
try:
    dist = md.distribution("torch")
except Exception:
    dist = None
out = {"version": None, "files": 0, "digest": None}
if dist is not None:
    digest = hashlib.sha256()
    count = 0
    for item in sorted(str(f) for f in (dist.files or [])):
        path = str(dist.locate_file(item))
        try:
            stat = os.stat(path)
        except OSError:
            digest.update(("%s|missing\n" % item).encode())
            continue
        count += 1
        digest.update(("%s|%d|%d\n" % (item, stat.st_size, stat.st_mtime_ns)).encode())
    out = {"version": dist.version, "files": count, "digest": digest.hexdigest(), "location": str(dist.locate_file(""))}
print(json.dumps(out))
"""


def _script(python: str, script: str) -> Dict[str, Any]:
    data, failure = run_script(python, script)
    if data is None:
        raise InstallError(f"cannot inspect the environment of {python}: {failure}",
                           "check that --python points at a working interpreter")
    return data


def installed_files(python: str, names: Sequence[str]) -> Dict[str, Any]:
    """{"purelib": dir, "dists": {name: {"version", "files"}}} for the installed ones of `names`."""
    return _script(python, _FILES_SCRIPT.replace("NAMES", repr(list(names))))


def torch_fingerprint(python: str) -> Dict[str, Any]:
    """torch's version and a digest of the names, sizes and mtimes of all its files."""
    return _script(python, _TORCH_SCRIPT)


def pip(python: str, args: Sequence[str], timeout: float = 1800.0) -> subprocess.CompletedProcess:
    """`python -m pip ARGS`, captured; never raises for a non-zero exit."""
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    try:
        return subprocess.run([python, "-m", "pip", *args], capture_output=True, text=True, env=env,
                              timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError) as error:
        return subprocess.CompletedProcess([python, "-m", "pip", *args], 1, "", str(error))


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


@dataclass
class Snapshot:
    """Copies of the files of distributions about to be replaced, to put them back exactly."""

    directory: Path
    python: str
    purelib: str
    dists: Dict[str, Dict[str, Any]]  # name -> {"version", "files": {path: sha256}}
    extra_dirs: Dict[str, bool] = field(default_factory=dict)  # path -> existed (e.g. the patch record)

    def _backup(self, path: str) -> Path:
        return self.directory / "files" / path.lstrip(os.sep)

    @classmethod
    def take(cls, python: str, names: Sequence[str], directory: Path, extra_dirs: Sequence[str] = ()) -> Snapshot:
        """Copy (and hash) every file of the installed `names` and the `extra_dirs` of its site-packages."""
        info = installed_files(python, [])
        snapshot = cls(directory=directory, python=python, purelib=info["purelib"], dists={})
        snapshot.add(names)
        for extra in extra_dirs:
            path = Path(info["purelib"]) / extra
            snapshot.extra_dirs[str(path)] = path.is_dir()
            if path.is_dir():
                shutil.copytree(path, snapshot._backup(str(path)), symlinks=True)
        return snapshot

    def add(self, names: Sequence[str]) -> None:
        """Also save the installed ones of `names` (e.g. what a dependency install will upgrade)."""
        info = installed_files(self.python, [n for n in names if n not in self.dists])
        prefix = os.path.realpath(info["prefix"])
        for name, dist in info["dists"].items():
            if not os.path.realpath(dist["location"]).startswith(prefix + os.sep):
                continue  # outside this environment (a venv's system site): pip does not replace it
            files: Dict[str, str] = {}
            for item in dist["files"]:
                source = Path(item)
                if not source.is_file():
                    continue
                target = self._backup(item)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
                files[item] = sha256_of(target)
            self.dists[name] = {"version": dist["version"], "files": files}

    def versions(self) -> Dict[str, str]:
        return {name: dist["version"] for name, dist in self.dists.items()}

    def restore(self, remove: Sequence[str]) -> Dict[str, Any]:
        """Uninstall `remove`, put every saved file back, and check versions and hashes."""
        problems: List[str] = []
        if remove:
            done = pip(self.python, ["uninstall", "-y", *remove])
            if done.returncode != 0:
                problems.append(f"pip uninstall {' '.join(remove)} failed: {tail(done.stderr, 3)}")
        restored = 0
        for dist in self.dists.values():
            for path in dist["files"]:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(self._backup(path), path)
                restored += 1
        for path, existed in self.extra_dirs.items():
            shutil.rmtree(path, ignore_errors=True)
            if existed:
                shutil.copytree(self._backup(path), path, symlinks=True)
        after = installed_files(self.python, list(self.dists) + list(remove))["dists"]
        for name, dist in self.dists.items():
            now = after.get(name, {}).get("version")
            if now != dist["version"]:
                problems.append(f"{name} is {now} after the rollback, expected {dist['version']}")
            changed = [p for p, digest in dist["files"].items() if not Path(p).is_file() or sha256_of(Path(p)) != digest]
            if changed:
                problems.append(f"{name}: {len(changed)} files differ after the rollback, e.g. {changed[0]}")
        leftover = [name for name in remove if name not in self.dists and name in after]
        if leftover:
            problems.append(f"still installed after the rollback: {', '.join(leftover)}")
        return {"restored": self.versions(), "files_restored": restored, "removed": [n for n in remove
                if n not in self.dists], "problems": problems, "ok": not problems}

    def discard(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def json_or_tail(text: str) -> Any:
    """The JSON document a command printed, else the tail of its output."""
    try:
        return json.loads(text)
    except ValueError:
        return tail(text)


def command_result(argv: Sequence[str], env: Optional[Dict[str, str]] = None, timeout: float = 900.0,
                   shell: bool = False) -> Dict[str, Any]:
    """Run a step's command; {"ok", "exit_code", "command", "output"} (never raises)."""
    try:
        done = subprocess.run(argv if not shell else argv[0], capture_output=True, text=True, env=env,
                              timeout=timeout, check=False, shell=shell)
    except (OSError, subprocess.SubprocessError) as error:
        return {"ok": False, "exit_code": None, "command": list(argv), "output": str(error)}
    output = json_or_tail(done.stdout) if done.stdout.strip() else tail(done.stderr)
    result = {"ok": done.returncode == 0, "exit_code": done.returncode, "command": list(argv), "output": output}
    if done.returncode != 0 and done.stderr.strip():
        result["stderr"] = tail(done.stderr)
    return result
