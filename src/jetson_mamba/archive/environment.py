"""The target environment seen from outside: its distributions' files, torch's fingerprint, pip.

Everything runs as `probe/target_script.py` in the target interpreter (`--python PATH`), so we never
import torch here and always look at the environment that is being changed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from packaging.utils import canonicalize_name

import jetson_mamba
from jetson_mamba.archive import signals
from jetson_mamba.archive.wheel import sha256_of
from jetson_mamba.compat.registry import RECORD_DIR, atomic_write
from jetson_mamba.errors import InstallError
from jetson_mamba.probe import probe_machine
from jetson_mamba.probe.model import MachineInfo
from jetson_mamba.probe.python_env import target_facts
from jetson_mamba.untrusted import is_within

VERIFY_ENV = "JETSON_MAMBA_VERIFY_COMMAND"


def gather_facts(python: str, request: Dict[str, Any]) -> Dict[str, Any]:
    """`target_facts` for install and its extras: no answer is an InstallError."""
    data, failure = target_facts(python, request)
    if data is None:
        raise InstallError(f"cannot inspect the environment of {python}: {failure}",
                           "check that --python points at a working interpreter")
    return data


def installed_files(python: str, names: Sequence[str]) -> Dict[str, Any]:
    """{"purelib", "prefix", "dists": {name: {"version", "files", "location"}}} for the installed ones of `names`."""
    data = gather_facts(python, {"interpreter": True, "distributions": {"names": list(names), "files": True}})
    return {"purelib": data["interpreter"]["purelib"], "prefix": data["interpreter"]["prefix"],
            "dists": data["distributions"]}


def torch_fingerprint(python: str) -> Dict[str, Any]:
    """torch's version and a digest of the names, sizes and mtimes of all its files."""
    return gather_facts(python, {"torch_files": True})["torch_files"]


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


def planned(report: Path) -> List[Tuple[str, str]]:
    """(name, version) of everything a successful `pip install --dry-run --report` would install.

    An unreadable report is an InstallError: whatever checks the plan must not pass an empty one."""
    try:
        data = json.loads(report.read_text())
        return [(canonicalize_name(item["metadata"]["name"]), item["metadata"]["version"])
                for item in data.get("install", [])]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise InstallError(f"cannot read pip's installation report {report}: {error}",
                           "upgrade pip in the target environment (22.2 or newer writes --report), then rerun") from None


ROLLBACK_DIR = ".jetson-mamba-rollback"  # in the target's site-packages: found again after a kill -9
JOURNAL = "journal.json"


@dataclass
class Snapshot:
    """Copies of the files of distributions about to be replaced, to put them back exactly.

    It lives in `<site-packages>/.jetson-mamba-rollback/` with a journal (`journal.json`) that is
    rewritten before every change (what was saved, what a rollback must uninstall), so a run killed
    with SIGKILL or a power cut leaves everything the next `install` needs to roll it back.
    """

    directory: Path
    python: str
    purelib: str
    dists: Dict[str, Dict[str, Any]]  # name -> {"version", "files": {path: sha256}}
    extra_dirs: Dict[str, bool] = field(default_factory=dict)  # path -> existed (e.g. the patch record)
    remove: List[str] = field(default_factory=list)  # what a rollback uninstalls (installed by this run)
    pid: int = field(default_factory=os.getpid)
    problems: List[str] = field(default_factory=list)  # of this rollback so far
    files_restored: int = 0

    def _backup(self, path: str) -> Path:
        return self.directory / "files" / path.lstrip(os.sep)

    def _journal(self) -> None:
        data = {"pid": self.pid, "python": self.python, "purelib": self.purelib, "dists": self.dists,
                "extra_dirs": self.extra_dirs, "remove": self.remove}
        atomic_write(self.directory / JOURNAL, json.dumps(data, indent=1).encode("utf-8"))

    @classmethod
    def load(cls, directory: Path) -> Optional[Snapshot]:
        """The snapshot a killed run left in `directory`, or None (no journal: nothing was changed yet)."""
        try:
            data = json.loads((directory / JOURNAL).read_text(encoding="utf-8"))
            return cls(directory, data["python"], data["purelib"], dict(data["dists"]), dict(data["extra_dirs"]),
                       list(data["remove"]), int(data["pid"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @classmethod
    def take(cls, python: str, names: Sequence[str], directory: Path, extra_dirs: Sequence[str] = ()) -> Snapshot:
        """Copy (and hash) every file of the installed `names` and the `extra_dirs` of its site-packages."""
        info = installed_files(python, [])
        directory.mkdir(parents=True, exist_ok=True)
        snapshot = cls(directory=directory, python=python, purelib=info["purelib"], dists={})
        for extra in extra_dirs:
            path = Path(info["purelib"]) / extra
            snapshot.extra_dirs[str(path)] = path.is_dir()
            if path.is_dir():
                shutil.copytree(path, snapshot._backup(str(path)), symlinks=True)
        snapshot.add(names)
        return snapshot

    def add(self, names: Sequence[str]) -> None:
        """Also save the installed ones of `names` (e.g. what a dependency install will upgrade)."""
        info = installed_files(self.python, [n for n in names if n not in self.dists])
        for name, dist in info["dists"].items():
            if not is_within(dist["location"], info["prefix"]):
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
        self._journal()

    def will_install(self, names: Sequence[str]) -> None:
        """Journal that `names` are about to be installed (a rollback uninstalls them), before pip runs."""
        self.remove = sorted(set(self.remove) | set(names))
        self._journal()

    def versions(self) -> Dict[str, str]:
        return {name: dist["version"] for name, dist in self.dists.items()}

    def restore(self) -> Dict[str, Any]:
        """Uninstall what this run installed, put every saved file back, and check versions and hashes."""
        self.uninstall(self.remove)
        self.put_back()
        return self.check()

    def uninstall(self, names: Sequence[str]) -> None:
        """`pip uninstall` what this run installed of `names` (its files come back with put_back)."""
        names = [n for n in names if n]
        if names:
            done = pip(self.python, ["uninstall", "-y", *names])
            if done.returncode != 0:
                self.problems.append(f"pip uninstall {' '.join(names)} failed: {tail(done.stderr, 3)}")

    def put_back(self) -> None:
        """Copy every saved file back (dist files and the extra directories, e.g. the patch record)."""
        for dist in self.dists.values():
            for path in dist["files"]:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(self._backup(path), path)
                self.files_restored += 1
        for path, existed in self.extra_dirs.items():
            shutil.rmtree(path, ignore_errors=True)
            if existed:
                shutil.copytree(self._backup(path), path, symlinks=True)

    def check(self) -> Dict[str, Any]:
        """After a rollback: every saved version and file hash is back, nothing this run added is left."""
        problems = list(self.problems)
        after = installed_files(self.python, list(self.dists) + list(self.remove))["dists"]
        for name, dist in self.dists.items():
            now = after.get(name, {}).get("version")
            if now != dist["version"]:
                problems.append(f"{name} is {now} after the rollback, expected {dist['version']}")
            changed = [p for p, digest in dist["files"].items() if not Path(p).is_file() or sha256_of(Path(p)) != digest]
            if changed:
                problems.append(f"{name}: {len(changed)} files differ after the rollback, e.g. {changed[0]}")
        leftover = [name for name in self.remove if name not in self.dists and name in after]
        if leftover:
            problems.append(f"still installed after the rollback: {', '.join(leftover)}")
        return {"restored": self.versions(), "files_restored": self.files_restored,
                "removed": [n for n in self.remove if n not in self.dists], "problems": problems, "ok": not problems}

    def discard(self) -> None:
        """Drop the saved files and the journal (the directory goes when its claim ends)."""
        shutil.rmtree(self.directory / "files", ignore_errors=True)
        with contextlib.suppress(OSError):
            (self.directory / JOURNAL).unlink()


@contextlib.contextmanager
def rollback_area(purelib: Path) -> Iterator[Tuple[Path, Optional[Snapshot]]]:
    """Claim `<purelib>/.jetson-mamba-rollback` for this run: (the directory, the snapshot a killed run
    left there or None). Another install into the same environment holding it is an InstallError."""
    directory = Path(purelib) / ROLLBACK_DIR
    for _attempt in range(3):
        fd: Optional[int] = None
        try:
            with signals.deferred():  # one arriving between the mkdir and the lock would orphan the directory
                fd = _claim(directory)
            if fd is None:  # removed by the run that held it, after our mkdir: again
                continue
            yield directory, Snapshot.load(directory)
            return
        finally:
            if fd is not None:
                with signals.held():
                    if not (directory / JOURNAL).exists():  # nothing left to roll back: no trace of this run
                        shutil.rmtree(directory, ignore_errors=True)
                    os.close(fd)
    raise InstallError(f"could not claim {directory}", "rerun")


def _claim(directory: Path) -> Optional[int]:
    """Make and lock `directory`: the locked descriptor, or None if it went away meanwhile."""
    directory.mkdir(exist_ok=True)
    fd = os.open(str(directory), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        stale = Snapshot.load(directory)
        raise InstallError(f"another jetson-mamba install into this environment is running"
                           f"{f' (pid {stale.pid})' if stale else ''}",
                           "wait for it to finish, then rerun") from None
    if not _same_directory(fd, directory):
        os.close(fd)
        return None
    return fd


def _same_directory(fd: int, directory: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(str(directory)).st_ino
    except OSError:
        return False


class TargetEnvironment:
    """The environment being installed into, seen only through its own interpreter: its facts, its pip,
    snapshots of its files, `jetson-mamba patch` on it, and the quick verification run by it.

    As pypa/installer keeps the wheel source apart from the destination, install's steps only touch
    the target through this object.
    """

    def __init__(self, python: str) -> None:
        self.python = python

    def facts(self) -> MachineInfo:
        return probe_machine(python=self.python)

    def purelib(self) -> Path:
        return Path(installed_files(self.python, [])["purelib"])

    def pip(self, args: Sequence[str]) -> subprocess.CompletedProcess:
        return pip(self.python, args)

    def torch_fingerprint(self) -> Dict[str, Any]:
        return torch_fingerprint(self.python)

    def snapshot(self, names: Sequence[str], directory: Path) -> Snapshot:
        """Save `names` and the patch record before anything changes (the journal makes it recoverable)."""
        return Snapshot.take(self.python, names, directory, extra_dirs=[RECORD_DIR])

    def patch(self) -> Dict[str, Any]:
        """`jetson-mamba patch --json --python PATH`, run by this interpreter (it has rich), not the target."""
        result = command_result([sys.executable, "-m", "jetson_mamba", "patch", "--json", "--python", self.python],
                                env=_package_env())
        output = result["output"] if isinstance(result["output"], dict) else {}
        written = {name for change in output.get("changes", []) for name in change.get("patches", [])}
        already = {s["patch"] for s in output.get("patches", []) if s.get("status") == "applied"}
        result["applied"] = sorted(written | already)  # by this run, or already in place
        return result

    def quick_verify(self) -> Dict[str, Any]:
        """`python -m jetson_mamba.verify --quick` in the target, or $JETSON_MAMBA_VERIFY_COMMAND.

        The entry point prints plain JSON and imports no rich: the target needs nothing of ours
        beyond jetson_mamba itself (on PYTHONPATH) and, if it lacks one, our `packaging` (appended
        to its sys.path, so its own wins)."""
        override = os.environ.get(VERIFY_ENV)
        if override:
            result = command_result([override], env=dict(os.environ, JETSON_MAMBA_PYTHON=self.python), shell=True)
            return dict(result, via=VERIFY_ENV)
        import packaging

        with tempfile.TemporaryDirectory(prefix="jetson-mamba-deps-") as fallback:
            os.symlink(Path(packaging.__file__).resolve().parent, Path(fallback) / "packaging")
            env = dict(_package_env(), JETSON_MAMBA_FALLBACK_PATH=fallback)
            result = command_result([self.python, "-m", "jetson_mamba.verify", "--quick"], env=env)
        return dict(result, via="jetson-mamba verify --quick")


def _package_env() -> Dict[str, str]:
    """Environment that lets another interpreter import this jetson_mamba (and only that, from us)."""
    root = str(Path(jetson_mamba.__file__).resolve().parent.parent)
    paths = [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths))


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
