"""Run one upstream test file on one backend in its own pytest process, and read back what happened.

The thin layer that touches the system: it unpacks upstream's Python packages and test file from
the sdists (and, for the `cuda` control, the compiled extensions from the wheels) into a work
folder, runs pytest there with jetson_mamba.conformance.plugin, and turns the plugin's JSON lines
into a SuiteResult. A case that kills the process (the Triton interpreter on an out-of-bounds
access) or the CUDA context is reported as failed, and pytest starts again after it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

from jetson_mamba.conformance.suites import Case, Suite, rewrite
from jetson_mamba.errors import UsageError

MAX_MEMBER_BYTES = 64 << 20  # an upstream source file or compiled extension larger than this is not one
MAX_ROUNDS = 60  # pytest restarts after crashes, per suite


@dataclass
class Family:
    """The results of one test function."""

    passed: int = 0
    failed: int = 0
    skipped: int = 0
    not_sampled: int = 0
    not_run: int = 0
    skip_reasons: Counter = field(default_factory=Counter)
    failures: List[Tuple[str, str]] = field(default_factory=list)  # (test id, message)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> Family:
        return cls(data["passed"], data["failed"], data["skipped"], data["not_sampled"], data["not_run"],
                   Counter(data["skip_reasons"]), [(f["id"], f["message"]) for f in data["failures"]])

    def add(self, other: Family) -> None:
        """Add another shard's counts of the same test function."""
        for key in ("passed", "failed", "skipped", "not_sampled", "not_run"):
            setattr(self, key, getattr(self, key) + getattr(other, key))
        self.skip_reasons.update(other.skip_reasons)
        self.failures += other.failures

    def to_dict(self) -> Dict[str, Any]:
        return {"passed": self.passed, "failed": self.failed, "skipped": self.skipped,
                "not_sampled": self.not_sampled, "not_run": self.not_run, "skip_reasons": dict(self.skip_reasons),
                "failures": [{"id": i, "message": m} for i, m in self.failures]}


@dataclass
class SuiteResult:
    """One upstream test file on one backend and device."""

    suite: str
    backend: str
    device: str
    sample: str
    families: Dict[str, Family] = field(default_factory=dict)
    uncovered: List[str] = field(default_factory=list)  # parameter values the sample missed
    seconds: float = 0.0
    restarts: int = 0
    error: Optional[str] = None
    log: str = ""
    shard: str = ""  # "K/N" for one shard; merged shards: "K1,K2,.../N"

    def total(self, key: str) -> int:
        return sum(getattr(f, key) for f in self.families.values())

    @property
    def ok(self) -> bool:
        return self.error is None and self.total("failed") == 0 and self.total("not_run") == 0

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> SuiteResult:
        """Back from to_dict() (the lab script merges the JSON of several runs into one table)."""
        return cls(data["suite"], data["backend"], data["device"], data["sample"],
                   {name: Family.from_dict(f) for name, f in data["families"].items()}, list(data["uncovered"]),
                   data["seconds"], data["restarts"], data["error"], data["log"], data.get("shard", ""))

    def to_dict(self) -> Dict[str, Any]:
        return {"suite": self.suite, "backend": self.backend, "device": self.device, "sample": self.sample,
                "shard": self.shard, "ok": self.ok, "seconds": round(self.seconds, 1), "restarts": self.restarts, "error": self.error,
                "log": self.log, "totals": {k: self.total(k) for k in ("passed", "failed", "skipped", "not_sampled",
                                                                      "not_run")},
                "uncovered": self.uncovered, "families": {n: f.to_dict() for n, f in sorted(self.families.items())}}


def _inside(root: Path, name: str) -> Path:
    """root / name, refused when the name leaves root (an archive member is untrusted input)."""
    target = (root / name).resolve()
    try:
        target.relative_to(root.resolve())
    except ValueError:
        raise UsageError(f"archive member {name!r} points outside {root}",
                         "use the sdists and wheels from ../shared (or a copy of them)") from None
    return target


def _read(archive: Path, member: tarfile.TarInfo, tar: tarfile.TarFile) -> bytes:
    handle = tar.extractfile(member)
    if handle is None or member.size > MAX_MEMBER_BYTES:
        raise UsageError(f"{member.name} in {archive} is not a regular file of a sane size",
                         "use the sdists from ../shared (or a copy of them)")
    return handle.read(MAX_MEMBER_BYTES)


def read_member(archive: Path, suffix: str) -> str:
    """The text of the one file in a tar archive whose path ends with /`suffix`, read bounded."""
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.name.endswith("/" + suffix)]
        if len(members) != 1:
            raise UsageError(f"{archive} has {len(members)} files ending in {suffix}, expected 1",
                             "use the archives from ../shared (or a copy of them)")
        return _read(archive, members[0], tar).decode()


def read_test_file(shared: Path, chosen: Suite) -> str:
    """Upstream's test file, unmodified, straight from its archive."""
    return read_member(_archive(shared, chosen.archive), chosen.member)


def _archive(shared: Path, relative: str) -> Path:
    path = _inside(shared, relative)
    if not path.is_file():
        raise UsageError(f"{path} is missing", f"point --shared at the folder holding {relative} (../shared)")
    return path


def _unpack_package(shared: Path, sdist: str, package: str, lib: Path) -> None:
    """The Python files of `package` from an sdist, into lib/ (skipped when already there)."""
    if (lib / package / "__init__.py").is_file():
        return
    archive = _archive(shared, sdist)
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            parts = member.name.split("/")
            if len(parts) > 2 and parts[1] == package and member.isfile() and member.name.endswith(".py"):
                target = _inside(lib, "/".join(parts[1:]))
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(_read(archive, member, tar))


def _unpack_extension(wheelhouse: Path, name: str, ext: Path) -> None:
    """The compiled module `name` (a top-level .so in one of the wheels) into ext/."""
    if list(ext.glob(f"{name}.*.so")):
        return
    for wheel in sorted(wheelhouse.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            for info in archive.infolist():
                if "/" not in info.filename and info.filename.startswith(name + ".") and info.filename.endswith(".so"):
                    if info.file_size > MAX_MEMBER_BYTES * 8:
                        raise UsageError(f"{info.filename} in {wheel} is implausibly large", "rebuild the wheel")
                    ext.mkdir(parents=True, exist_ok=True)
                    _inside(ext, info.filename).write_bytes(archive.read(info))
                    return
    raise UsageError(f"no wheel in {wheelhouse} has the compiled {name}",
                     "point --wheelhouse at the folder of the built causal_conv1d / mamba_ssm wheels")


def prepare(work: Path, chosen: Suite, shared: Path, device: str, backend: str, wheelhouse: Optional[Path]
            ) -> Tuple[Path, List[Path]]:
    """Lay out the work folder; returns the test file and the folders for PYTHONPATH."""
    paths = []
    for sdist, package in chosen.packages:  # one folder per sdist: two releases of a package never mix
        lib = work / "lib" / Path(sdist).name.replace(".tar.gz", "")
        _unpack_package(shared, sdist, package, lib)
        paths.append(lib)
    if backend == "cuda":
        if wheelhouse is None:
            raise UsageError("backend cuda runs the compiled extensions as the control, and no wheelhouse was given",
                             "pass --wheelhouse FOLDER (the causal_conv1d / mamba_ssm wheels built for this GPU)")
        for name in chosen.extensions:
            _unpack_extension(wheelhouse, name, work / "ext")
        paths.append(work / "ext")
    here = work / f"{chosen.name}-{backend}"
    here.mkdir(parents=True, exist_ok=True)
    (here / "pytest.ini").write_text("[pytest]\n")
    test_file = here / Path(chosen.member).name
    source, edits = rewrite(read_test_file(shared, chosen), device)
    if edits == 0:
        raise UsageError(f"{chosen.member} has no `device = \"cuda\"` line", "the upstream file changed: update suites.py")
    test_file.write_text(source)
    return test_file, paths


def _records(path: Path, offset: int) -> Tuple[List[Dict[str, Any]], int]:
    if not path.exists():
        return [], offset
    with open(path) as handle:
        handle.seek(offset)
        lines = handle.readlines()
        offset = handle.tell()
    return [json.loads(line) for line in lines if line.strip()], offset


def run_suite(chosen: Suite, backend: str, device: str, sample: str, shared: Path, work: Path,
              wheelhouse: Optional[Path] = None, timeout: Optional[float] = None,
              pin_upstream_autotune: bool = False, case_timeout: float = 300.0,
              shard: Optional[Tuple[int, int]] = None) -> SuiteResult:
    """Run one suite on one backend; never raises for a failing or crashing test (they are results).

    `sample`: "ci" (the suite's fixed sample), "full", or N (one case in N, every parameter value once).
    `pin_upstream_autotune`: mamba_ssm's autotuned Triton kernels keep their smallest config only.
    `case_timeout`: a case running longer fails with a timeout (0: no limit).
    `shard`: (K, N) runs and reports only the sample's cases of shard K of N (suites.in_shard).
    """
    result = SuiteResult(chosen.name, backend, device, sample, shard=f"{shard[0]}/{shard[1]}" if shard else "")
    start = time.monotonic()
    test_file, paths = prepare(work, chosen, shared, device, backend, wheelhouse)
    results_path, log = test_file.parent / "results.jsonl", test_file.parent / "pytest.log"
    for stale in (results_path, log):
        stale.unlink() if stale.exists() else None
    result.log = str(log)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(p) for p in paths] + [os.environ.get("PYTHONPATH", "")]))
    if backend != "cuda":
        env["JETSON_MAMBA_BACKEND"] = backend
    if backend == "triton" and device == "cpu":
        env["TRITON_INTERPRET"] = "1"
    cases: Dict[str, Case] = {}
    selected: Set[str] = set()
    outcomes: Dict[str, Tuple[str, str]] = {}
    done: List[str] = []
    offset = 0
    for _ in range(MAX_ROUNDS):
        env["JETSON_MAMBA_CONFORMANCE"] = json.dumps({"suite": chosen.name, "backend": backend, "device": device,
                                                      "sample": sample, "results": str(results_path), "done": done,
                                                      "pin_upstream_autotune": pin_upstream_autotune,
                                                      "case_timeout": case_timeout, "shard": shard})
        left = None if timeout is None else timeout - (time.monotonic() - start)
        if left is not None and left <= 0:
            result.error = f"timed out after {timeout:.0f} s"
            break
        code = _pytest(test_file, env, log, left)
        records, offset = _records(results_path, offset)
        started: Optional[str] = None
        finished = restart = False
        for record in records:
            if "case" in record:
                cases[record["case"]] = Case(record["case"], record["function"], record["params"], 0.0)
                if record["selected"]:
                    selected.add(record["case"])
            elif "start" in record:
                started = record["start"]
            elif "result" in record:
                outcomes[record["result"]] = (record["outcome"], record["message"])
                started = None
            elif "restart" in record:
                restart = True
            elif "finished" in record:
                finished = True
            elif "uncovered" in record:
                result.uncovered = record["uncovered"]
        done = list(outcomes)
        if code is None:
            result.error = f"timed out after {timeout:.0f} s"
            break
        if started is not None:  # the process died inside this case
            outcomes[started] = ("failed", f"crashed the test process (exit code {code})")
            done.append(started)
        elif finished and not restart:
            if code not in (0, 1, 5):
                result.error = f"pytest exited with code {code}{_why(log)} (see {log})"
            break
        elif not records:
            result.error = f"pytest exited with code {code} before collecting{_why(log)} (see {log})"
            break
        result.restarts += 1
    result.seconds = time.monotonic() - start
    _tally(result, cases, selected, outcomes)
    return result


def _why(log: Path) -> str:
    """': <the last ERROR line>' of a pytest log (its last 64 KiB), or ''."""
    with open(log, "rb") as handle:
        handle.seek(max(0, log.stat().st_size - 65536))
        lines = [line for line in handle.read().decode(errors="replace").splitlines() if line.startswith("ERROR")]
    return f": {lines[-1][:300]}" if lines else ""


def _pytest(test_file: Path, env: Dict[str, str], log: Path, timeout: Optional[float]) -> Optional[int]:
    """Exit code of one pytest process (negative: killed by that signal), None when it timed out."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "jetson_mamba.conformance.plugin",
               test_file.name]
    with open(log, "a") as out:
        process = subprocess.Popen(command, cwd=test_file.parent, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:  # on a timeout or an interrupt, pytest and whatever it started go too
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _tally(result: SuiteResult, cases: Dict[str, Case], selected: Set[str], outcomes: Dict[str, Tuple[str, str]]
           ) -> None:
    for nodeid, case in cases.items():
        family = result.families.setdefault(case.function, Family())
        if nodeid not in selected:
            family.not_sampled += 1
            continue
        outcome, message = outcomes.get(nodeid, ("not_run", ""))
        setattr(family, outcome, getattr(family, outcome) + 1)
        if outcome == "skipped":
            family.skip_reasons[message] += 1
        elif outcome == "failed":
            family.failures.append((nodeid, message))
