"""`patch` beside `patch --revert` for real: two CLI processes on one installed mamba-ssm / causal-conv1d.

Both take the site-packages lock around everything they read and write, so the end state is always
all patched or none, and the two reports compose to it in one order or the other. Also: a killed
run's temporary files are removed by the next run, and a damaged record is one line, no traceback.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Set, Tuple

import pytest

from jetson_mamba.compat import registry

pytestmark = pytest.mark.slow


def _start(python: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "jetson_mamba", "patch", "--json", "--python", str(python), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen) -> Dict:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0 and "Traceback" not in err, (out, err)
    return json.loads(out)


def _site(python: Path) -> Path:
    return next(python.parent.parent.glob("lib/python*/site-packages"))


def _patched(site: Path) -> Set[str]:
    """Files that carry a jetson-mamba patch marker now."""
    return {str(p) for d in ("mamba_ssm", "causal_conv1d") for p in (site / d).rglob("*.py")
            if registry.MARKER_PREFIX.encode() in p.read_bytes()}


@pytest.fixture(scope="module")
def venv(pair_venv: Callable[..., Path]) -> Tuple[Path, Set[str]]:
    """A venv with mamba-ssm 2.2.4 + causal-conv1d 1.6.0, and every file `patch` writes there."""
    python = pair_venv("2.2.4", "1.6.0", "race")
    everything = set(_finish(_start(python))["written"])
    assert len(everything) >= 5 and _patched(_site(python)) == everything
    return python, everything


def _check_composes(start: Set[str], everything: Set[str], patch: Dict, revert: Dict, end: Set[str]) -> None:
    """The end state is all or nothing, and the two reports say how it came about, in one order."""
    written = set(patch["written"])
    restored = {f["path"] for f in revert["files"] if f["action"] == "restored"}
    patch_then_revert = end == set() and restored == start | written
    revert_then_patch = end == everything and restored == start and written == everything
    assert patch_then_revert or revert_then_patch, (len(start), len(written), len(restored), len(end))


def test_patch_waits_for_the_lock_a_revert_is_queued_on(venv: Tuple[Path, Set[str]]) -> None:
    """Before the fix `patch` planned outside the lock: it answered "nothing to do" while a revert was
    about to run (then 0 files were patched), or patched 1 file planned mid-revert (1 of 9)."""
    python, everything = venv
    site = _site(python)
    if _patched(site) != everything:
        _finish(_start(python))
    holder = os.open(str(site), os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)  # as a third jetson-mamba run in the middle of writing would
    try:
        revert = _start(python, "--revert")
        patch = _start(python)
        time.sleep(4)
        assert patch.poll() is None and revert.poll() is None, "a run went ahead without the lock"
    finally:
        os.close(holder)
    _check_composes(everything, everything, _finish(patch), _finish(revert), _patched(site))


def test_concurrent_patch_and_revert_never_leave_a_mixed_state(venv: Tuple[Path, Set[str]]) -> None:
    python, everything = venv
    site = _site(python)
    for round_ in range(4):
        start = _patched(site)
        first, second = (_start(python), _start(python, "--revert"))
        if round_ % 2:
            first, second = second, first
        reports = {"patch": None, "revert": None}
        for process in (first, second):
            report = _finish(process)
            reports[report.get("action") if report.get("action") == "revert" else "patch"] = report
        _check_composes(start, everything, reports["patch"], reports["revert"], _patched(site))


def test_a_killed_runs_temporary_files_are_removed(venv: Tuple[Path, Set[str]]) -> None:
    python, everything = venv
    site = _site(python)
    _finish(_start(python, "--revert"))
    target = Path(sorted(everything)[0])
    # what atomic_write leaves when killed between mkstemp and the rename
    strays = [target.parent / f".{target.name}.k9x2m1{registry.TEMP_SUFFIX}"]
    (site / registry.RECORD_DIR / "backups").mkdir(parents=True, exist_ok=True)
    strays.append(site / registry.RECORD_DIR / f".{registry.RECORD_FILE}.q7w3e{registry.TEMP_SUFFIX}")
    for stray in strays:
        stray.write_bytes(b"half written")
    dry = _finish(_start(python, "--dry-run"))
    assert dry["stray_removed"] == [] and all(s.exists() for s in strays)  # a dry run changes nothing
    report = _finish(_start(python))
    assert sorted(report["stray_removed"]) == sorted(map(str, strays)) and not any(s.exists() for s in strays)
    assert _patched(site) == everything


@pytest.mark.parametrize("record", ["[]", '{"schema": 1, "files": {"mamba_ssm/x.py": 1}}', '{"schema": 1, "files": []}',
                                    '{"schema": 1, "files": {"../../../etc/passwd": {"distribution": "x", '
                                    '"original_sha256": "0", "patched_sha256": "1"}}}', "\xff not json"])
def test_a_damaged_record_is_one_line_with_the_fix(venv: Tuple[Path, Set[str]], record: str) -> None:
    python, _ = venv
    site = _site(python)
    _finish(_start(python, "--revert"))
    path = site / registry.RECORD_DIR / registry.RECORD_FILE
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(record.encode("latin-1"))
    try:
        done = subprocess.run([sys.executable, "-m", "jetson_mamba", "patch", "--revert", "--python", str(python)],
                              capture_output=True, text=True, env={**os.environ, "COLUMNS": "400"})
        assert done.returncode == 4 and "Traceback" not in done.stderr, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 2 and "patch record" in lines[0] and lines[1].startswith("fix: "), lines
    finally:
        path.unlink()
