"""Hostile device roots and interpreters for `doctor` (issue 19): bounded reads, markup shown as written."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

ROOTS = Path(__file__).parent / "roots"


def _limit_memory() -> None:
    """1 GiB of address space for the child: an unbounded read fails there instead of taking the machine."""
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def test_device_root_reads_are_bounded(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for relative in ("etc/nv_tegra_release", "proc/device-tree/model", "proc/device-tree/compatible",
                     "var/lib/dpkg/status"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).symlink_to("/dev/zero")
    os.mkfifo(root / "proc/meminfo")  # nobody writes: a blocking read never returns
    script = ("import sys\nfrom pathlib import Path\nfrom jetson_mamba.probe.jetson import read_jetson\n"
              "from jetson_mamba.probe.system import read_memory\n"
              "print(read_jetson(Path(sys.argv[1])), read_memory(Path(sys.argv[1])))\n")
    done = subprocess.run([sys.executable, "-c", script, str(root)], capture_output=True, text=True, timeout=60,
                          preexec_fn=_limit_memory)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", "None"]  # nothing readable: no Jetson, no memory facts


def test_doctor_shows_hostile_root_and_interpreter_text_as_written(tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(ROOTS / "orin-agx-jp6", root)
    (root / "proc/device-tree/model").write_bytes(b"Jetson [/bold] [red]Orin\0")
    (root / "proc/meminfo").write_bytes(b"\xff\xfe\x00\x81MemTotal: 1 kB\n\xc3\x28")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    [site] = venv.glob("lib/python*/site-packages")
    (site / "torch").mkdir()
    (site / "torch/__init__.py").write_text("raise ImportError('libcudart.so.13 [/cuda] cannot be opened')\n")
    done = subprocess.run([sys.executable, "-m", "jetson_mamba", "doctor", "--root", str(root), "--python",
                           str(venv / "bin/python")], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "300"})
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    assert done.returncode in (0, 1), done.stderr  # 1: doctor found errors (no torch)
    assert "Jetson [/bold] [red]Orin" in done.stdout
    assert "libcudart.so.13 [/cuda] cannot be opened" in done.stdout


def test_device_root_links_that_leave_the_root_are_not_followed(tmp_path: Path) -> None:
    """A device image whose files link to host files (absolute, or `..` out of it) must not show their contents
    as the board's facts; links that stay inside the image still work."""
    from jetson_mamba.probe import probe_machine

    secret = tmp_path / "host-secret"
    secret.write_text("Jetson SECRET-FROM-THE-HOST\n")
    (tmp_path / "meminfo").write_text("MemTotal: 999999 kB\nMemAvailable: 1 kB\n")
    root = tmp_path / "root"
    shutil.copytree(ROOTS / "orin-agx-jp6", root)
    (root / "proc/device-tree/model").unlink()
    (root / "proc/device-tree/model").symlink_to(secret)
    (root / "proc/meminfo").unlink()
    (root / "proc/meminfo").symlink_to("../../meminfo")
    (root / "etc/nv_tegra_release").rename(root / "etc/release-real")
    (root / "etc/nv_tegra_release").symlink_to("release-real")  # inside the image: followed
    machine = probe_machine(root)
    assert machine.jetson is not None and "SECRET" not in str(machine.jetson)
    assert machine.jetson.l4t and machine.memory is None
