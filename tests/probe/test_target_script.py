"""The one target-interpreter script: self-contained (a bare venv without jetson_mamba runs it), every
field its four callers read, and a caller that never raises whatever the target does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jetson_mamba.archive.environment import installed_files, torch_fingerprint
from jetson_mamba.compat.installed import locate
from jetson_mamba.probe import probe_machine, python_env
from jetson_mamba.probe.python_env import PROBE_REQUEST, probe_python, target_facts
from jetson_mamba.untrusted import is_within
from jetson_mamba.wheelbuild.toolchain import probe_toolchain

INTERPRETER_FIELDS = {"python", "python_version", "libc", "purelib", "prefix", "machine", "platform"}
TORCH_FIELDS = {"version", "cuda", "cxx11_abi", "cuda_available", "distributed_available", "distributed_missing"}
EVERYTHING = {**PROBE_REQUEST, "distributions": {"names": ["pip", "no-such-dist"], "files": True, "packages": True,
                                                "requires": True},
              "extensions": {"modules": ["json", "no_such_module_xyz"], "import": True},
              "imports": ["json", "no_such_module_xyz"], "torch_headers": True, "torch_files": True}


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real venv with only pip: no torch, no jetson_mamba."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    assert subprocess.run([python, "-c", "import jetson_mamba"], capture_output=True).returncode != 0
    return python


def test_every_section_in_a_bare_venv(bare_python: str) -> None:
    data, failure = target_facts(bare_python, EVERYTHING)
    assert failure is None and data is not None
    assert set(data["interpreter"]) == INTERPRETER_FIELDS
    assert is_within(data["interpreter"]["purelib"], Path(bare_python).parent.parent)
    pip = data["distributions"]["pip"]
    assert set(data["distributions"]) == {"pip"} and set(pip) == {"version", "location", "package", "files", "requires"}
    assert Path(pip["package"]).name == "pip" and any(f.endswith("pip/__init__.py") for f in pip["files"])
    assert data["torch"]["error"].startswith("ModuleNotFoundError") and "version" not in data["torch"]
    assert data["extensions"] == [{"module": "json", "path": data["extensions"][0]["path"], "importable": True}]
    assert data["imports"]["json"] is None and data["imports"]["no_such_module_xyz"].startswith("ModuleNotFound")
    assert data["torch_headers"] is None and data["mamba3"] is False
    assert data["torch_files"] == {"version": None, "files": 0, "digest": None}


def test_torch_fields_where_torch_is() -> None:
    data, failure = target_facts(sys.executable, EVERYTHING)
    assert failure is None and data is not None
    assert TORCH_FIELDS <= set(data["torch"]) and "error" not in data["torch"]
    assert Path(data["torch_headers"], "torch", "extension.h").is_file()
    assert set(data["torch_files"]) == {"version", "files", "digest", "location"} and data["torch_files"]["files"]


def test_the_callers_read_a_bare_venv(bare_python: str) -> None:
    """probe, compat, archive and wheelbuild each get what they read from the one script."""
    torch, packages, gpu = probe_python(bare_python)
    assert torch.python_version and torch.version is None and "ModuleNotFoundError" in (torch.error or "")
    assert gpu is None and packages.distributions == {} and packages.extensions == ()
    env = locate(bare_python)
    assert env.targets == () and is_within(env.purelib, Path(bare_python).parent.parent)
    assert env.facts["versions"] == {"torch": None, "transformers": None, "triton": None}
    files = installed_files(bare_python, ["pip"])
    assert set(files) == {"purelib", "prefix", "dists"} and files["dists"]["pip"]["files"]
    assert torch_fingerprint(bare_python)["version"] is None
    toolchain = probe_toolchain(probe_machine(python=bare_python), bare_python)
    assert toolchain.torch_version is None and toolchain.machine and toolchain.platform_tag


def test_a_failing_target_is_a_reason_not_an_exception(bare_python: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert target_facts("/nonexistent/python", {"interpreter": True})[1].startswith("could not run")
    assert "printed no probe result" in target_facts("/bin/echo", {"interpreter": True})[1]
    data, failure = target_facts(bare_python, {"distributions": {"names": 5}})
    assert data is None and "could not gather distributions: TypeError" in failure
    monkeypatch.setattr(python_env, "OUTPUT_LIMIT", 1000)
    assert "printed more than 1000 bytes" in target_facts(bare_python, {"distributions": {
        "names": ["pip"], "files": True}})[1]
