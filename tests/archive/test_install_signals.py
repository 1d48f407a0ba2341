"""`install` against signals and clumsy targets, for real: real venvs, real pip, real processes and signals.

SIGTERM / SIGHUP / SIGINT at the worst moment (new wheels installed and patched, not yet verified) roll
back to the exact previous state; a run killed with SIGKILL is rolled back by `install --recover` (and
by the next install); a target without rich is verified all the same.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict

import pytest
from archive_helpers import cli, cli_json, dist_state

ROLLBACK_DIR = ".jetson-mamba-rollback"  # jetson_mamba.archive.environment.ROLLBACK_DIR

pytestmark = pytest.mark.slow
VenvFactory = Callable[..., Path]


def _working_pair(venv_factory: VenvFactory, pure_wheels: Dict[str, Path], name: str) -> Path:
    """A venv with mamba-ssm 2.2.4 + causal-conv1d 1.6.0 installed and patched: the working setup."""
    python = venv_factory(name)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    str(pure_wheels["mamba_ssm-2.2.4"]), str(pure_wheels["causal_conv1d-1.6.0"])], check=True)
    assert cli("patch", "--python", str(python)).returncode == 0
    return python


def _rollback_dirs(python: Path) -> list:
    return list(python.parent.parent.glob(f"lib/python*/site-packages/{ROLLBACK_DIR}"))


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_signal_before_the_verification_rolls_back_exactly(venv_factory: VenvFactory, pure_archive: Path,
                                                              pure_wheels: Dict[str, Path], signame: str) -> None:
    """Before the fix SIGTERM left the new, unverified wheels installed and the rollback folder orphaned."""
    python = _working_pair(venv_factory, pure_wheels, f"signal-{signame}")
    before = dist_state(python)
    # the verification step signals jetson-mamba itself (its parent): wheels installed and patched, not verified
    stop = {"JETSON_MAMBA_VERIFY_COMMAND": f"kill -{signame[3:]} $PPID; sleep 30"}
    # SIGINT as from a terminal: a background job of a non-interactive shell inherits it ignored
    done = subprocess.run([sys.executable, "-m", "jetson_mamba", "install", "--archive", str(pure_archive),
                           "--python", str(python)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **stop}, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert done.returncode == 9 and "Traceback" not in done.stderr, done.stderr
    assert "rolled back to causal-conv1d 1.6.0, mamba-ssm 2.2.4" in done.stderr, done.stderr
    assert dist_state(python) == before and _rollback_dirs(python) == []


def test_sigterm_from_outside_at_any_moment_leaves_old_or_new(venv_factory: VenvFactory, pure_archive: Path,
                                                               pure_wheels: Dict[str, Path]) -> None:
    """`timeout`-style SIGTERMs at several moments (pip running, patching, verifying): before or after, never between."""
    python = _working_pair(venv_factory, pure_wheels, "signal-outside")
    before = dist_state(python)
    check = {"JETSON_MAMBA_VERIFY_COMMAND": '"$JETSON_MAMBA_PYTHON" -c "import mamba_ssm, causal_conv1d"'}
    for delay in (4, 7, 10):
        done = subprocess.run(["timeout", "-s", "TERM", str(delay), sys.executable, "-m", "jetson_mamba", "install",
                               "--archive", str(pure_archive), "--python", str(python), "--json"],
                              capture_output=True, text=True, env={**os.environ, **check}, timeout=300)
        state = dist_state(python)
        assert "Traceback" not in done.stderr and _rollback_dirs(python) == [], done.stderr
        if done.returncode == 0:  # finished before the signal: the new versions, verified
            assert state["mamba_ssm"]["version"] == "2.2.5" and json.loads(done.stdout)["verification"]["ok"]
            break
        if state["mamba_ssm"]["version"] == "2.2.5":  # the signal came after the commit, while the report printed
            break
        assert state == before, (delay, done.returncode, done.stdout[-2000:])


# Sends SIGTERM to this process at one named moment of the install (argv[1]), then runs the CLI (argv[2:]).
AT_A_MOMENT = """
import os, signal, sys
from jetson_mamba.archive import environment
moment, args = sys.argv[1], sys.argv[2:]
owner, name = {"fingerprint": (environment.TargetEnvironment, "torch_fingerprint"),
               "claim": (environment.fcntl, "flock"), "commit": (environment.Snapshot, "discard")}[moment]
real = getattr(owner, name)

def signalled(*a, **k):
    os.kill(os.getpid(), signal.SIGTERM)
    return real(*a, **k)

setattr(owner, name, signalled)  # on a class it binds as the method it replaces
from jetson_mamba.cli import main
raise SystemExit(main(args))
"""


@pytest.mark.parametrize("moment, installed", [("fingerprint", False), ("claim", False), ("commit", True)])
def test_sigterm_outside_the_steps_leaves_old_or_new_and_no_rollback_folder(
        venv_factory: VenvFactory, pure_archive: Path, pure_wheels: Dict[str, Path], moment: str, installed: bool) -> None:
    """CI caught it once with `timeout`: SIGTERM while torch's files were fingerprinted, before the steps
    (default handler: killed, the rollback folder orphaned). Now the claim defers it, the steps and what
    comes before them roll back, and the commit finishes."""
    python = _working_pair(venv_factory, pure_wheels, f"signal-at-{moment}")
    before = dist_state(python)
    check = {"JETSON_MAMBA_VERIFY_COMMAND": '"$JETSON_MAMBA_PYTHON" -c "import mamba_ssm, causal_conv1d"'}
    done = subprocess.run([sys.executable, "-c", AT_A_MOMENT, moment, "install", "--archive", str(pure_archive),
                           "--python", str(python)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **check})
    assert "Traceback" not in done.stderr and _rollback_dirs(python) == [], (done.returncode, done.stderr)
    if installed:
        assert done.returncode == 0 and dist_state(python)["mamba_ssm"]["version"] == "2.2.5", done.stderr
    else:
        assert done.returncode == 9 and "stopped by SIGTERM" in done.stderr, done.stderr
        assert dist_state(python) == before


def test_a_killed_install_is_recovered(venv_factory: VenvFactory, pure_archive: Path,
                                       pure_wheels: Dict[str, Path]) -> None:
    python = _working_pair(venv_factory, pure_wheels, "signal-kill9")
    before = dist_state(python)
    kill = {"JETSON_MAMBA_VERIFY_COMMAND": "kill -KILL $PPID; sleep 30"}
    done = cli("install", "--archive", str(pure_archive), "--python", str(python), env=kill, timeout=300)
    assert done.returncode == -signal.SIGKILL
    assert dist_state(python)["mamba_ssm"]["version"] == "2.2.5" and _rollback_dirs(python)  # half-installed
    code, report = cli_json("install", "--recover", "--python", str(python))
    assert code == 0 and report["recovered"]["restored"] == {"causal-conv1d": "1.6.0", "mamba-ssm": "2.2.4"}, report
    assert dist_state(python) == before and _rollback_dirs(python) == []
    code, report = cli_json("install", "--recover", "--python", str(python))
    assert code == 0 and report["recovered"] is None and report["schema_version"] == 1


def test_a_killed_install_is_rolled_back_by_the_next_install(venv_factory: VenvFactory, pure_archive: Path,
                                                             pure_wheels: Dict[str, Path]) -> None:
    python = _working_pair(venv_factory, pure_wheels, "signal-kill9-next")
    kill = {"JETSON_MAMBA_VERIFY_COMMAND": "kill -KILL $PPID; sleep 30"}
    cli("install", "--archive", str(pure_archive), "--python", str(python), env=kill, timeout=300)
    check = {"JETSON_MAMBA_VERIFY_COMMAND": '"$JETSON_MAMBA_PYTHON" -c "import mamba_ssm, causal_conv1d"'}
    code, report = cli_json("install", "--archive", str(pure_archive), "--python", str(python), env=check)
    assert code == 0 and report["recovered"]["restored"] == {"causal-conv1d": "1.6.0", "mamba-ssm": "2.2.4"}, report
    assert report["replaced"] == {"causal-conv1d": "1.6.0", "mamba-ssm": "2.2.4"}  # replaced the recovered pair
    assert dist_state(python)["mamba_ssm"]["version"] == "2.2.5" and _rollback_dirs(python) == []


def test_install_into_a_venv_without_rich_verifies(venv_factory: VenvFactory, pure_archive: Path) -> None:
    """Before the fix the quick verify ran our CLI in the target: ModuleNotFoundError: rich, always."""
    python = venv_factory("install-no-rich")
    site = next(python.parent.parent.glob("lib/python*/site-packages"))
    # rich reaches the test venv through several site directories: block it in this venv at start-up
    (site / "zz_no_rich.pth").write_text("import sys; sys.modules['rich'] = None\n")
    assert subprocess.run([str(python), "-c", "import rich"], capture_output=True).returncode != 0
    code, report = cli_json("install", "--archive", str(pure_archive), "--python", str(python))
    assert code == 0, report
    assert report["verification"]["ok"] and report["verification"]["via"] == "jetson-mamba verify --quick"
    assert report["verification"]["output"]["summary"]["passed"] > 0


def test_a_target_without_torch_is_told_to_install_torch(tmp_path: Path, pure_archive: Path) -> None:
    """Before the fix it advised `jetson-mamba build`, which needs torch too."""
    venv = tmp_path / "no-torch"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)  # nothing inherited: no torch
    python = venv / "bin" / "python"
    code, error = cli_json("install", "--archive", str(pure_archive), "--python", str(python))
    assert code == 3 and "install torch into that environment first" in error["fix"], error
    assert "jetson-mamba build" not in error["fix"] and "torch is not installed" in error["message"]
    assert dist_state(python)["mamba_ssm"] is None  # nothing installed


@pytest.mark.parametrize("command", ["install", "patch", "doctor"])
def test_a_missing_interpreter_is_a_usage_error(command: str) -> None:
    """Before the fix `doctor --python /nonexistent` exited 0 and advised `pip install torch`."""
    done = cli(command, "--python", "/nonexistent/bin/python")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.splitlines()[0] == "error: --python /nonexistent/bin/python: no such interpreter"
    assert "pip install torch" not in done.stderr and done.stderr.splitlines()[1].startswith("fix: pass the path")
