"""The command-line frame: command discovery, --json placement, errors turned into exit codes."""

from __future__ import annotations

import argparse
import json

import pytest

from jetson_mamba import cli
from jetson_mamba.errors import JetsonMambaError, MissingDependencyError, UsageError
from jetson_mamba.results import SCHEMA_VERSION


def test_every_command_module_is_discovered() -> None:
    names = [module.NAME for module in cli._command_modules()]
    assert "doctor" in names and names == sorted(names)
    for module in cli._command_modules():
        assert module.HELP and callable(module.add_arguments) and callable(module.run)


def test_no_command_prints_help(capsys: pytest.CaptureFixture) -> None:
    assert cli.main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--json", "doctor"], ["doctor", "--json"]])
def test_json_before_or_after_the_command(argv, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def fake_run(args: argparse.Namespace) -> int:
        seen["json"] = args.json
        return 0

    monkeypatch.setattr("jetson_mamba.cli.doctor.run", fake_run)
    assert cli.main(argv) == 0
    assert seen == {"json": True}


def _leaf_parsers(parser: argparse.ArgumentParser, path: tuple = ()) -> dict:
    """Every runnable command path and its parser: ('doctor',), ('archive', 'list'), ('yolo', 'train'), ..."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {path: parser}
    return {leaf: found for name, child in subs[0].choices.items()
            for leaf, found in _leaf_parsers(child, path + (name,)).items()}


@pytest.mark.parametrize("flag", ["-v", "-q", "--json"])
def test_every_command_and_sub_command_takes_the_common_flags(flag: str) -> None:
    leaves = _leaf_parsers(cli.build_parser())
    assert ("archive", "list") in leaves and ("yolo", "train") in leaves and ("doctor",) in leaves
    assert [path for path, parser in leaves.items() if flag not in parser._option_string_actions] == []
    args = cli.build_parser().parse_args(["index", "/x", flag])
    assert getattr(args, {"-v": "verbose", "-q": "quiet", "--json": "json"}[flag]) is True


@pytest.mark.parametrize("command", ["verify", "bench", "conformance"])
def test_backend_flag_is_spelt_one_way_on_every_command(command: str) -> None:
    """`--backend NAME`: repeatable and comma-separated on verify, bench and conformance; bench's old
    `--backends a,b` still parses (a hidden alias)."""
    from jetson_mamba.cli._backend_option import backend_names

    parser = _leaf_parsers(cli.build_parser())[(command,)]
    args = parser.parse_args(["--backend", "triton, torch", "--backend", "cuda", "--backends", "torch,mine"])
    assert backend_names(args.backends) == ["triton", "torch", "cuda", "mine"]
    assert backend_names(parser.parse_args([]).backends) == []
    assert "--backends" not in parser.format_help()


def test_quiet_drops_progress_but_not_errors(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from jetson_mamba.cli import output

    def failing_run(args: argparse.Namespace) -> int:
        output.err_console.print("progress line")
        raise UsageError("bad input", "the fix")

    monkeypatch.setattr("jetson_mamba.cli.doctor.run", failing_run)
    monkeypatch.setattr(output.err_console, "quiet", False)
    assert cli.main(["doctor", "-q"]) == UsageError.exit_code
    err = capsys.readouterr().err
    assert "progress line" not in err and "bad input" in err and "the fix" in err
    with pytest.raises(SystemExit) as stop:  # contradictory: a usage error, not a silent pick
        cli.main(["doctor", "-q", "-v"])
    assert stop.value.code == 2


def test_verbose_logs_the_backend_choice_on_stderr(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    import logging

    import torch

    from jetson_mamba.ops import backend

    def choose(args: argparse.Namespace) -> int:
        backend.select_backend("causal_conv1d", "cpu", torch.float32, name="torch")
        return 0

    monkeypatch.setattr("jetson_mamba.cli.doctor.run", choose)
    monkeypatch.setattr(backend, "_reported", set())
    monkeypatch.setattr(backend, "_chosen", {})
    logger = logging.getLogger("jetson_mamba")
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "level", logging.NOTSET)
    assert cli.main(["doctor"]) == 0
    assert "runs on" not in capsys.readouterr().err
    monkeypatch.setattr(backend, "_reported", set())
    monkeypatch.setattr(backend, "_chosen", {})  # dispatch remembers its choice: choose afresh
    assert cli.main(["-v", "doctor"]) == 0 and cli.main(["doctor", "--verbose"]) == 0
    assert capsys.readouterr().err.count("causal_conv1d runs on the torch backend (requested)") == 1
    assert len(logger.handlers) == 1


def test_errors_become_exit_codes_with_the_fix(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    def failing(args: argparse.Namespace) -> int:
        raise UsageError("unknown arch 'sm_99x'", "use one of 8.7, sm_87, 87")

    monkeypatch.setattr("jetson_mamba.cli.doctor.run", failing)
    assert cli.main(["doctor"]) == UsageError.exit_code
    err = capsys.readouterr().err
    assert "unknown arch 'sm_99x'" in err and "fix: use one of 8.7, sm_87, 87" in err
    assert cli.main(["doctor", "--json"]) == UsageError.exit_code
    assert json.loads(capsys.readouterr().out) == {
        "schema_version": SCHEMA_VERSION, "error": "usage", "exit_code": 2, "message": "unknown arch 'sm_99x'", "fix": "use one of 8.7, sm_87, 87"}


@pytest.mark.parametrize("argv, kind", [
    (["doctor", "--python", "/nonexistent/python"], UsageError),
    (["patch", "--python", "/nonexistent/python"], UsageError),
    (["install", "--python", "/nonexistent/python"], UsageError),
    (["build", "--arch", "sm_99x"], UsageError),
    (["verify"], MissingDependencyError),  # torch cannot be imported (below)
    (["bench"], MissingDependencyError),
])
def test_every_json_error_is_a_versioned_document(argv, kind, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    """Real failures of the commands that print JSON errors: one document, versioned like the results."""
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    assert cli.main([*argv, "--json"]) == kind.exit_code
    error = json.loads(capsys.readouterr().out)
    assert list(error) == ["schema_version", "error", "exit_code", "message", "fix"], error
    assert error["schema_version"] == SCHEMA_VERSION and error["error"] == kind.kind
    assert error["exit_code"] == kind.exit_code and error["message"] and error["fix"]


def test_exit_codes_are_distinct() -> None:
    codes = {}
    for kind in JetsonMambaError.__subclasses__():
        assert kind.exit_code not in codes, (kind, codes.get(kind.exit_code))
        codes[kind.exit_code] = kind


def test_an_unexpected_exception_is_one_line_and_exit_70(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    def buggy(args: argparse.Namespace) -> int:
        return {}["missing"]  # a bug: KeyError

    monkeypatch.setattr("jetson_mamba.cli.doctor.run", buggy)
    assert cli.main(["doctor"]) == 70
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 2, err
    assert "`jetson-mamba doctor` failed unexpectedly: KeyError: 'missing' at test_main.py:" in err
    assert "fix: this is a jetson-mamba bug: please report it" in err and "jetson-mamba -v doctor" in err
    assert cli.main(["doctor", "--json"]) == 70
    assert json.loads(capsys.readouterr().out)["error"] == "internal"
    assert cli.main(["-v", "doctor"]) == 70  # -v: the traceback too
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_ctrl_c_is_one_line_and_exit_130() -> None:
    """A real SIGINT to a real, busy command."""
    import os
    import signal
    import subprocess
    import sys
    import time

    process = subprocess.Popen([sys.executable, "-m", "jetson_mamba", "verify", "--backend", "torch"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "COLUMNS": "300"})
    time.sleep(8)
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "error: interrupted: `jetson-mamba verify` stopped (Ctrl-C)"


def test_index_of_a_missing_folder_suggests_no_flag_index_lacks(capsys: pytest.CaptureFixture, tmp_path) -> None:
    assert cli.main(["index", str(tmp_path / "missing")]) != 0
    err = capsys.readouterr().err
    assert "does not exist" in err and "--archive" not in err.split("fix:")[1].split("`")[0]
