"""Fuzzing the device-root parsers (issue 19): any bytes in the L4T and /proc files give facts or None, never raise."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Dict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jetson_mamba.probe.jetson import read_jetson
from jetson_mamba.probe.system import parse_nvcc_version, parse_nvidia_smi, read_memory

FILES = ("etc/nv_tegra_release", "proc/device-tree/model", "proc/device-tree/compatible", "proc/meminfo",
         "var/lib/dpkg/status")
ROOT = Path(tempfile.mkdtemp(prefix="jetson-mamba-fuzz-root-"))
# Real lines mixed into the noise, so the parsers get past their first check.
PIECES = [b"# R36 (release), REVISION: 4.0, GCID: 1, BOARD: generic, EABI: aarch64", b"nvidia,tegra234\0",
          b"MemTotal: 1000 kB\n", b"Package: nvidia-jetpack\nVersion: 6.1+b123\n", b"\xff\xfe", b"[/bold]", b"\0",
          b"\n\n", b"REVISION: .", b"cu", b"Version: "]
contents = st.lists(st.sampled_from(PIECES) | st.binary(max_size=20), max_size=8).map(b"".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(FILES), contents), st.sampled_from([None, "12.6", "13.0", "x"]))
def test_any_device_root_reads_without_raising(files: Dict[str, bytes], cuda: str) -> None:
    for relative in FILES:
        path = ROOT / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if relative in files:
            path.write_bytes(files[relative])
        elif path.exists():
            path.unlink()
    info = read_jetson(ROOT, cuda)
    assert info is None or info.soc is None or info.soc.startswith("tegra")
    memory = read_memory(ROOT)
    assert memory is None or memory.total_mb >= 0


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_tool_output_parsers_never_raise(text: str) -> None:
    parse_nvcc_version(text)
    gpu = parse_nvidia_smi(text)
    assert gpu is None or gpu.count >= 1
