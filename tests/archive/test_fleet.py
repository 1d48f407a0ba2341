"""Fleet devices with plain pip (issue 20, item 2): commands that work from another host, one index per GPU arch.

A real `jetson-mamba serve` on 127.0.0.1, real pip downloading from it with only our index configured.
"""

from __future__ import annotations

import configparser
import os
import shlex
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
from archive_helpers import CLEAN_PIP, make_wheel

from jetson_mamba.archive.fleet import fleet_hosts
from jetson_mamba.archive.index import write_index
from jetson_mamba.archive.serve import ArchiveServer

SM87 = "mamba_ssm-2.2.5+cu126.torch2.5.sm87-py3-none-any.whl"
SM90 = "mamba_ssm-2.2.5+cu126.torch2.5.sm90-py3-none-any.whl"
LAST_LINE = "or let jetson-mamba pick arch, torch and CUDA: "


@pytest.fixture
def mixed_archive(tmp_path: Path) -> Path:
    """One version built for sm_87 and for sm_90 (labels as `build` writes them), and a wheel without GPU code."""
    archive = tmp_path / "mixed"
    archive.mkdir()
    for label in ("sm87", "sm90"):
        make_wheel(archive, name="mamba_ssm", version=f"2.2.5+cu126.torch2.5.{label}")
    make_wheel(archive, name="einops_demo", version="0.8")
    return archive


@pytest.fixture
def served(mixed_archive: Path) -> Iterator[List[str]]:
    """`jetson-mamba serve` (default host, free port): the lines it prints for the fleet."""
    process = subprocess.Popen([sys.executable, "-m", "jetson_mamba", "serve", str(mixed_archive), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(60, process.kill)  # a serve that never prints fails the test instead of hanging
    watchdog.start()
    lines: List[str] = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith(LAST_LINE):
            break
    watchdog.cancel()
    try:
        assert lines and lines[-1].startswith(LAST_LINE), (lines, process.poll())
        yield lines
    finally:
        process.terminate()
        process.wait(timeout=30)


def _pip_env(**extra: str) -> Dict[str, str]:
    """pip with no configuration but ours: no PIP_* of this machine, no mirrors."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("PIP_")}, **CLEAN_PIP, **extra}


def _download(args: List[str], into: Path, env: Dict[str, str]) -> List[str]:
    """`pip download ARGS` into an empty folder: the wheel file names pip chose."""
    into.mkdir()
    done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(into), *args],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return sorted(p.name for p in into.iterdir())


def _command(lines: List[str], label: str) -> List[str]:
    """The arguments of the printed `pip install` line for `label` ("sm_87 (Jetson Orin)", "every wheel")."""
    line = next(line for line in lines if line.startswith(f"  {label}: pip install "))
    return shlex.split(line.split(": pip install ", 1)[1])


def test_each_arch_index_makes_plain_pip_take_that_arch(served: List[str], tmp_path: Path) -> None:
    orin, hopper = _command(served, "sm_87 (Jetson Orin)"), _command(served, "sm_90")
    for args in (orin, hopper):
        assert args[:2] == ["--no-deps", "--index-url"] and args[3:5] == ["--trusted-host", "127.0.0.1"], args
        assert args[5:] == ["einops-demo==0.8", "mamba-ssm==2.2.5"]  # pinned to the archive's newest
    assert orin[2].endswith("/sm87/simple/") and hopper[2].endswith("/sm90/simple/")
    assert _download(orin, tmp_path / "orin", _pip_env()) == ["einops_demo-0.8-py3-none-any.whl", SM87]
    assert _download(hopper, tmp_path / "hopper", _pip_env()) == ["einops_demo-0.8-py3-none-any.whl", SM90]
    # /simple/ still lists every wheel: there plain pip takes the highest label, which is why the arch indexes exist
    assert _download(_command(served, "every wheel"), tmp_path / "every", _pip_env())[-1] == SM90
    extra = next(line for line in served if line.startswith("keeping the device's other index: "))
    assert "--extra-index-url" in extra and "--no-deps" in extra and "--trusted-host 127.0.0.1" in extra


def test_printed_pip_conf_parses_and_points_pip_at_the_arch(served: List[str], tmp_path: Path) -> None:
    start = next(i for i, line in enumerate(served) if line.startswith("or in the device's pip.conf"))
    assert "sm_87" in served[start]
    snippet = "\n".join(line[2:] for line in served[start + 1:start + 4])
    parsed = configparser.ConfigParser()
    parsed.read_string(snippet)
    assert parsed["global"]["trusted-host"] == "127.0.0.1"
    assert parsed["global"]["index-url"].endswith("/sm87/simple/")
    conf = tmp_path / "pip.conf"
    conf.write_text(snippet + "\n")
    assert _download(["mamba-ssm"], tmp_path / "conf", _pip_env(PIP_CONFIG_FILE=str(conf))) == [SM87]


def test_every_interface_gives_other_hosts_a_reachable_trusted_address(mixed_archive: Path) -> None:
    with ArchiveServer(mixed_archive, "0.0.0.0", 0) as server:
        found = server.describe()["fleet"]
    assert found["hosts"] and not found["loopback_only"]
    assert not any(host.startswith("127.") or host in ("localhost", "0.0.0.0") for host in found["hosts"])
    for index in found["indexes"]:
        host = found["hosts"][0]
        assert index["url"].startswith(f"http://{host}:") and index["trusted_host"] == host
        assert f"--trusted-host {host} " in index["pip"] and f"trusted-host = {host}\n" in index["pip_conf"]
        assert index["pip_extra_index"].startswith("pip install --no-deps --extra-index-url ")
    assert [index["arch"] for index in found["indexes"]] == ["8.7", "9.0", None]


def test_fleet_hosts_skip_loopback_and_link_local() -> None:
    addresses = ["127.0.1.1", "192.168.1.20", "fe80::1%eth0", "2001:db8::5", "192.168.1.20", "::1"]
    assert fleet_hosts("0.0.0.0", addresses, "orin-lab") == ["192.168.1.20", "orin-lab"]
    assert fleet_hosts("::", addresses, "orin-lab") == ["192.168.1.20", "2001:db8::5", "orin-lab"]
    assert fleet_hosts("0.0.0.0", ["127.0.0.1"], "orin-lab") == ["orin-lab"]
    assert fleet_hosts("10.0.0.7", addresses, "orin-lab") == ["10.0.0.7"]


def test_arch_trees_follow_the_fatbins_of_the_real_sm90_wheels(wheelhouse: Path, tmp_path: Path) -> None:
    """The lab wheels hold sm_90 code only (no label): listed for sm_90, and no sm_87 tree claims them."""
    written = write_index(wheelhouse, tmp_path / "index")
    assert list(written["archs"]) == ["9.0"] and written["archs"]["9.0"]["projects"] == written["projects"]
    page = (tmp_path / "index/sm90/simple/mamba-ssm/index.html").read_text()
    assert 'href="../../../mamba_ssm-2.2.5-cp312-cp312-linux_x86_64.whl#sha256=' in page
    assert not (tmp_path / "index/sm87").exists()


def test_rewriting_the_index_drops_archs_no_longer_in_the_archive(mixed_archive: Path) -> None:
    write_index(mixed_archive)
    assert (mixed_archive / "sm87/simple/mamba-ssm/index.html").is_file()
    (mixed_archive / SM87).unlink()
    (mixed_archive / "manifest.json").unlink(missing_ok=True)
    written = write_index(mixed_archive)
    assert list(written["archs"]) == ["9.0"] and not (mixed_archive / "sm87").exists()


def test_reindexing_never_follows_an_arch_folder_link_out_of_the_archive(mixed_archive: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "simple").mkdir(parents=True)
    (outside / "simple/keep.txt").write_text("not ours")
    (mixed_archive / "sm75").symlink_to(outside)
    write_index(mixed_archive)
    assert (outside / "simple/keep.txt").read_text() == "not ours"
