"""`jetson-mamba archive add|list|verify` and `index` through the real command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict

from archive_helpers import cli, cli_json

from jetson_mamba.archive.manifest import MANIFEST_NAME


def test_add_list_verify_real_wheels(wheelhouse: Path, pure_wheels: Dict[str, Path], tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    cuda_wheel = wheelhouse / "mamba_ssm-2.2.5-cp312-cp312-linux_x86_64.whl"
    code, added = cli_json("archive", "add", "--archive", str(archive), str(cuda_wheel),
                           str(pure_wheels["causal_conv1d-1.6.0"]))
    assert code == 0 and [w["filename"] for w in added["added"]] == [cuda_wheel.name, "causal_conv1d-1.6.0-py3-none-any.whl"]
    code, listed = cli_json("archive", "list", "--archive", str(archive))
    assert code == 0 and listed["schema_version"] == 1
    by_name = {w["name"]: w for w in listed["wheels"]}
    assert by_name["mamba-ssm"]["gpu_archs"]["sass"] == ["9.0"] and by_name["causal-conv1d"]["gpu_archs"] is None
    assert Path(by_name["mamba-ssm"]["provenance"]["source"]).resolve() == cuda_wheel.resolve()
    text = cli("archive", "list", "--archive", str(archive))
    assert text.returncode == 0 and "sm_90" in text.stdout
    assert cli_json("archive", "verify", "--archive", str(archive)) == (0, {"archive": str(archive), "ok": True,
                                                                           "problems": []})


def test_verify_reports_every_problem(pure_wheels: Dict[str, Path], tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    names = ("causal_conv1d-1.6.0", "mamba_ssm-2.2.5", "mamba_ssm-2.2.4")
    assert cli("archive", "add", "--archive", str(archive), *(str(pure_wheels[n]) for n in names)).returncode == 0
    conv, new, old = (archive / pure_wheels[n].name for n in names)
    conv.write_bytes(conv.read_bytes()[:-100])  # truncated
    new.unlink()  # missing
    shutil.copy(pure_wheels["causal_conv1d-1.6.0"], archive / "causal_conv1d-1.6.0-py2.py3-none-any.whl")  # extra
    manifest = json.loads((archive / MANIFEST_NAME).read_text())
    [entry] = [w for w in manifest["wheels"] if w["filename"] == old.name]
    entry["version"] = "2.2.3"  # disagrees with the file name (mamba_ssm-2.2.4)
    (archive / MANIFEST_NAME).write_text(json.dumps(manifest))
    code, report = cli_json("archive", "verify", "--archive", str(archive))
    assert code == 7 and report["ok"] is False
    problems = "\n".join(report["problems"])
    assert len(report["problems"]) == 5, problems
    assert f"{conv.name}: size" in problems and f"{conv.name}: sha256" in problems
    assert f"{new.name}: recorded but missing" in problems
    assert "causal_conv1d-1.6.0-py2.py3-none-any.whl: not recorded" in problems
    assert f"entry {old.name}: the file name disagrees" in problems
    text = cli("archive", "verify", "--archive", str(archive))
    assert text.returncode == 7 and "fix:" in text.stdout


def test_add_refuses_a_bad_wheel_and_keeps_the_archive(pure_wheels: Dict[str, Path], tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    assert cli("archive", "add", "--archive", str(archive), str(pure_wheels["causal_conv1d-1.6.0"])).returncode == 0
    before = (archive / MANIFEST_NAME).read_bytes()
    bad = tmp_path / "mamba_ssm-2.2.5-py3-none-any.whl"
    bad.write_bytes(pure_wheels["mamba_ssm-2.2.5"].read_bytes()[:5000])
    done = cli("archive", "add", "--archive", str(archive), str(bad))
    assert done.returncode == 7 and "corrupted or truncated" in done.stderr and "fix:" in done.stderr
    assert (archive / MANIFEST_NAME).read_bytes() == before and not (archive / bad.name).exists()


def test_unknown_schema_version_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"schema_version": 2, "wheels": []}))
    code, error = cli_json("archive", "list", "--archive", str(tmp_path))
    assert code == 7 and "schema_version 2" in error["message"] and error["fix"]
    assert cli_json("archive", "verify", "--archive", str(tmp_path))[1]["problems"] == [
        f"{tmp_path / MANIFEST_NAME}: schema_version 2, this jetson-mamba reads 1"]


def test_index_writes_pep503_and_pep691(pure_archive: Path, tmp_path: Path) -> None:
    code, written = cli_json("index", str(pure_archive), "--out", str(tmp_path))
    assert code == 0 and set(written["projects"]) == {"causal-conv1d", "mamba-ssm"}
    root = (tmp_path / "simple" / "index.html").read_text()
    assert '<a href="mamba-ssm/">mamba-ssm</a>' in root
    page = (tmp_path / "simple" / "mamba-ssm" / "index.html").read_text()
    record = json.loads((pure_archive / MANIFEST_NAME).read_text())["wheels"][1]
    assert f'href="../../{record["filename"]}#sha256={record["sha256"]}"' in page
    assert 'data-requires-python="&gt;=3.9"' in page
    data = json.loads((tmp_path / "simple" / "mamba-ssm" / "index.json").read_text())
    assert data["meta"] == {"api-version": "1.0"} and data["files"][0]["hashes"] == {"sha256": record["sha256"]}
    assert not written["manifest_written"]  # the archive has its own manifest
