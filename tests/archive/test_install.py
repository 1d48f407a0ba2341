"""`jetson-mamba install` for real: pip into real sub-venvs, patch, verify, roll back; and a fleet index."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable, Dict, Iterator, Tuple

import pytest
from archive_helpers import CLEAN_PIP, cli, cli_json, dist_state, free_port

from jetson_mamba.archive.manifest import MANIFEST_NAME

VenvFactory = Callable[[str], Path]


def test_dry_run_explains_why_the_h200_wheels_do_not_fit_here(wheelhouse: Path) -> None:
    code, report = cli_json("install", "--archive", str(wheelhouse), "--dry-run", "--explain")
    assert code == 8 and report["error"] == "no-matching-wheel" and "jetson-mamba build" in report["fix"]
    assert report["schema_version"] == 1 and report["dry_run"] is True  # the partial report rides on the error
    rejected = report["selection"]["rejected"]
    assert sorted(r["filename"] for r in rejected) == ["causal_conv1d-1.6.0-cp312-cp312-linux_x86_64.whl",
                                                       "mamba_ssm-2.2.5-cp312-cp312-linux_x86_64.whl"]
    here = f"cp{sys.version_info.major}{sys.version_info.minor}"
    for rejection in rejected:  # the python tag is checked first: one reason per wheel
        if here != "cp312":
            assert (rejection["check"], rejection["actual"]) == ("python", "cp312-cp312")
            assert rejection["expected"].startswith(here)
        else:
            assert rejection["check"] in ("cuda", "gpu-arch")
    assert len(report["explain"]) == 4 and report["selection"]["chosen"] == []


def test_install_from_directory_patches_and_verifies(venv_factory: VenvFactory, pure_archive: Path) -> None:
    python = venv_factory("archive-install-dir")
    code, report = cli_json("install", "--archive", str(pure_archive), "--python", str(python))
    assert code == 0, report
    assert report["installed"] == ["causal-conv1d==1.6.0", "mamba-ssm==2.2.5"] and report["replaced"] == {}
    assert report["dependencies_missing"] == [] and report["dependencies_added"] == []  # inherited from the test venv
    assert report["torch_unchanged"] is True and report["torch"]["files"] > 1000
    assert report["patches"]["ok"] and "transformers5-generation-output" in report["patches"]["applied"]
    assert report["verification"]["ok"] and report["verification"]["via"] == "jetson-mamba verify --quick"
    assert report["rolled_back"] is False and report["schema_version"] == 1
    state = dist_state(python)
    assert state["mamba_ssm"]["version"] == "2.2.5" and state["causal_conv1d"]["version"] == "1.6.0"
    imported = subprocess.run([str(python), "-c", "import mamba_ssm; print(mamba_ssm.__version__)"],
                              capture_output=True, text=True)
    assert imported.stdout.strip() == "2.2.5", imported.stderr  # transformers 5 fix applied


def test_install_adds_a_missing_runtime_dependency_with_pip(venv_factory: Callable[..., Path],
                                                             pure_archive: Path) -> None:
    """A target without einops (mamba-ssm needs it): pip adds it, torch pinned, and the report says so."""
    python = venv_factory("archive-install-no-einops", hide=("einops",))
    assert subprocess.run([str(python), "-c", "import einops"], capture_output=True).returncode != 0
    torch_before = dist_state(python, ("torch",))["torch"]
    code, report = cli_json("install", "--archive", str(pure_archive), "--python", str(python))
    assert code == 0, report
    assert report["dependencies_missing"] == ["einops"]
    assert [a.split("==")[0] for a in report["dependencies_added"]] == ["einops"], report["dependencies_added"]
    assert report["torch_unchanged"] is True and dist_state(python, ("torch",))["torch"] == torch_before
    assert report["verification"]["ok"]
    version = subprocess.run([str(python), "-c", "import einops; print(einops.__version__)"],
                             capture_output=True, text=True)
    assert version.returncode == 0 and report["dependencies_added"] == [f"einops=={version.stdout.strip()}"]


def test_a_runtime_dependency_that_would_change_numpy_is_refused(venv_factory: Callable[..., Path], tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """numpy is protected like torch: a dependency whose resolution would replace it installs nothing
    (`needs-old-numpy` stands for a runtime dependency such as transformers)."""
    from archive_helpers import make_wheel

    from jetson_mamba.archive.environment import TargetEnvironment
    from jetson_mamba.archive.install import _install_dependencies
    from jetson_mamba.errors import InstallError

    python = venv_factory("archive-install-numpy-guard")
    links = tmp_path / "links"
    links.mkdir()
    make_wheel(links, name="needs_old_numpy", version="1.0", metadata=b"Metadata-Version: 2.1\nName: needs-old-numpy\n"
               b"Version: 1.0\nRequires-Dist: numpy==0.0.1\n")
    make_wheel(links, name="numpy", version="0.0.1")
    for key, value in {**CLEAN_PIP, "PIP_NO_INDEX": "1"}.items():
        monkeypatch.setenv(key, value)
    numpy_before = dist_state(python, ("numpy",))["numpy"]
    env = TargetEnvironment(str(python))
    with pytest.raises(InstallError):
        _install_dependencies(env, ["needs-old-numpy"], links, env.snapshot([], tmp_path / "rollback"), [], lambda _: None)
    assert dist_state(python, ("numpy", "needs-old-numpy")) == {"numpy": numpy_before, "needs-old-numpy": None,
                                                                "patch-record": []}


def test_fleet_index_serves_pip_and_install(venv_factory: VenvFactory, pure_archive: Path,
                                            serve: Callable[[Path], Tuple[str, Path]]) -> None:
    url, log = serve(pure_archive)
    plain = venv_factory("archive-fleet-pip")
    # --no-deps: a fleet device keeps its own torch (resolving mamba-ssm's `torch` requirement could replace it).
    done = subprocess.run([str(plain), "-m", "pip", "install", "--no-deps", "--index-url", url, "mamba-ssm==2.2.5",
                           "causal-conv1d"],
                          capture_output=True, text=True, env={**CLEAN_PIP, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert {k: v["version"] for k, v in dist_state(plain).items() if v and k != "patch-record"} == {
        "mamba_ssm": "2.2.5", "causal_conv1d": "1.6.0"}
    assert "GET /mamba_ssm-2.2.5-py3-none-any.whl" in log.read_text()
    assert dist_state(plain, ("torch",))["torch"]["version"].startswith("2.14.1")  # torch left alone

    python = venv_factory("archive-fleet-url")
    check = {"JETSON_MAMBA_VERIFY_COMMAND": '"$JETSON_MAMBA_PYTHON" -c "import mamba_ssm, causal_conv1d"'}
    code, report = cli_json("install", "--archive", url, "--python", str(python), env=check)
    assert code == 0, report
    assert report["installed"] == ["causal-conv1d==1.6.0", "mamba-ssm==2.2.5"] and report["torch_unchanged"]
    assert report["verification"]["via"] == "JETSON_MAMBA_VERIFY_COMMAND" and report["verification"]["ok"]
    requests = log.read_text()
    assert f"GET /{MANIFEST_NAME}" in requests and requests.count("GET /causal_conv1d-1.6.0-py3-none-any.whl") == 2


def test_failed_verification_rolls_back_versions_files_and_patches(venv_factory: VenvFactory, pure_archive: Path,
                                                                  pure_wheels: Dict[str, Path]) -> None:
    python = venv_factory("archive-rollback")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    str(pure_wheels["mamba_ssm-2.2.4"]), str(pure_wheels["causal_conv1d-1.6.0"])], check=True)
    assert cli("patch", "--python", str(python)).returncode == 0  # the previous install was patched too
    before = dist_state(python)
    assert before["mamba_ssm"]["version"] == "2.2.4" and before["patch-record"]
    failing = {"JETSON_MAMBA_VERIFY_COMMAND": "echo injected verification failure >&2; exit 3"}
    code, error = cli_json("install", "--archive", str(pure_archive), "--python", str(python), env=failing)
    assert code == 9 and error["error"] == "install", error
    assert "injected verification failure" in error["message"]
    assert "rolled back to causal-conv1d 1.6.0, mamba-ssm 2.2.4" in error["message"]
    assert dist_state(python) == before  # same versions, same bytes in every file, same patch record


@pytest.fixture
def bare_python(venv_factory: VenvFactory) -> Path:
    python = venv_factory("archive-bad-input")
    assert dist_state(python)["mamba_ssm"] is None
    return python


def _installs_nothing(python: Path, *args: str, code: int, needle: str) -> None:
    got, error = cli_json("install", *args, "--python", str(python))
    assert got == code and needle in error["message"] and error["fix"], error
    state = dist_state(python)
    assert state["mamba_ssm"] is None and state["causal_conv1d"] is None


def test_hash_mismatch_installs_nothing(bare_python: Path, pure_archive: Path, pure_wheels: Dict[str, Path],
                                        tmp_path: Path) -> None:
    archive = tmp_path / "tampered"
    shutil.copytree(pure_archive, archive)
    (archive / "mamba_ssm-2.2.5-py3-none-any.whl").write_bytes(pure_wheels["mamba_ssm-2.2.4"].read_bytes())
    _installs_nothing(bare_python, "--archive", str(archive), code=8, needle="mamba_ssm-2.2.5-py3-none-any.whl: hash")


def test_bad_archives_install_nothing(bare_python: Path, pure_archive: Path, pure_wheels: Dict[str, Path],
                                      tmp_path: Path) -> None:
    _installs_nothing(bare_python, "--archive", f"http://127.0.0.1:{free_port()}/simple/", code=7,
                      needle="cannot reach the archive")
    future = tmp_path / "future"
    shutil.copytree(pure_archive, future)
    manifest = json.loads((future / MANIFEST_NAME).read_text())
    (future / MANIFEST_NAME).write_text(json.dumps(dict(manifest, schema_version=2)))
    _installs_nothing(bare_python, "--archive", str(future), code=7, needle="schema_version 2")
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    wheel = pure_wheels["mamba_ssm-2.2.5"]
    (truncated / wheel.name).write_bytes(wheel.read_bytes()[:-2000])
    _installs_nothing(bare_python, "--archive", str(truncated), code=7, needle="corrupted or truncated")


def test_read_only_archive_served_and_selected_over_http(wheelhouse: Path,
                                                        serve: Callable[[Path], Tuple[str, Path]]) -> None:
    url, log = serve(wheelhouse)  # read-only: indexed (and its manifest scanned) in a temporary directory
    accept = {"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"}
    with urllib.request.urlopen(urllib.request.Request(url + "mamba-ssm/", headers=accept)) as response:
        assert response.headers["Content-Type"] == "application/vnd.pypi.simple.v1+json"
        files = json.loads(response.read())["files"]
    sums = dict(reversed(line.split()) for line in (wheelhouse / "SHA256SUMS").read_text().splitlines())
    assert [(f["filename"], f["hashes"]["sha256"]) for f in files] == [
        ("mamba_ssm-2.2.5-cp312-cp312-linux_x86_64.whl", sums["mamba_ssm-2.2.5-cp312-cp312-linux_x86_64.whl"])]
    with urllib.request.urlopen(url + "mamba-ssm/") as response:
        assert response.headers["Content-Type"].startswith("text/html")
    code, report = cli_json("install", "--archive", url, "--dry-run", "--explain")
    assert code == 8 and len(report["selection"]["rejected"]) == 2
    assert ".whl" not in log.read_text()  # nothing fits, so no wheel was downloaded


@pytest.fixture
def pypiserver(pure_archive: Path) -> Iterator[str]:
    """pypiserver (a plain PEP 503 index, no manifest) serving the pure archive on a free port."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "pypiserver", "run", "-p", str(port), "-i", "127.0.0.1",
                               str(pure_archive)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/simple/"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                assert server.poll() is None, "pypiserver exited"
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_any_pep503_index_works_without_a_manifest(pypiserver: str, pure_archive: Path) -> None:
    code, report = cli_json("install", "--archive", pypiserver, "--dry-run", "--explain")
    assert code == 0, report
    recorded = {w["filename"]: w["sha256"] for w in json.loads((pure_archive / MANIFEST_NAME).read_text())["wheels"]}
    assert {c["filename"]: c["sha256"] for c in report["selection"]["chosen"]} == recorded
