"""Log diagnosis on the real failures of ../shared/measurements/build-breakages.md and real nvcc/gcc wordings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict

import pytest

from jetson_mamba.wheelbuild.diagnose import diagnose, progress_of, unit_times

# Verbatim compiler/ninja/pip output of the failure kinds (nvcc 13.0, gcc 12, torch 2.14.1, pip 24).
LOGS = {
    "oom": "[3/11] /usr/local/cuda/bin/nvcc --generate-dependencies-with-compile -c selective_scan_bwd_fp16_real.cu\n"
           "FAILED: build/temp.linux-aarch64-cpython-310/csrc/selective_scan/selective_scan_bwd_fp16_real.o\n"
           "nvcc error   : 'cicc' died due to signal 9 (Kill signal)\n"
           "ninja: build stopped: subcommand failed.\n"
           "RuntimeError: Error compiling objects for extension\n",
    "oom-gcc": "c++: fatal error: Killed signal terminated program cc1plus\ncompilation terminated.\n",
    "arch": "nvcc fatal   : Unsupported gpu architecture 'compute_53'\nninja: build stopped: subcommand failed.\n",
    "cuda-missing": "OSError: CUDA_HOME environment variable is not set. Please set it to your CUDA install root.\n",
    "torch-abi": "ImportError: /venv/lib/python3.10/site-packages/selective_scan_cuda.cpython-310-aarch64-linux-gnu.so: "
                 "undefined symbol: _ZN3c104cuda9SetDeviceEi\n",
    "torch-missing": "ModuleNotFoundError: No module named 'torch'\n",
    "disk": "OSError: [Errno 28] No space left on device\n",
}


@pytest.mark.parametrize("name", sorted(LOGS))
def test_known_failures(name: str) -> None:
    found = diagnose(LOGS[name], jobs=4)
    assert found.kind == name.split("-gcc")[0]
    assert found.fix and found.evidence and found.evidence in LOGS[name]


def test_oom_fix_halves_the_jobs_and_mentions_swap() -> None:
    found = diagnose(LOGS["oom"], jobs=6)
    assert "--jobs 3" in found.fix and "swapon" in found.fix
    assert "signal 9" in found.evidence


def _breakage_symptoms(shared: Path) -> Dict[int, str]:
    """Row number -> the verbatim symptom column of the measured breakages table."""
    rows: Dict[int, str] = {}
    for line in (shared / "measurements" / "build-breakages.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].isdigit():
            rows[int(cells[0])] = " ".join(re.findall(r"`([^`]*)`", cells[2]))
    return rows


@pytest.mark.parametrize("row,kind", [(1, "cub-cuda13"), (3, "cxx20"), (4, "network")])
def test_measured_breakages(shared: Path, row: int, kind: str) -> None:
    symptom = _breakage_symptoms(shared)[row]
    assert symptom, f"row {row} of build-breakages.md has no verbatim symptom"
    log = f"running build_ext\n{symptom}\nerror: command '/usr/bin/ninja' failed with exit code 1\n"
    assert diagnose(log).kind == kind


def test_unknown_failure_points_at_the_first_error() -> None:
    found = diagnose("building...\nfoo.cu(12): error: identifier \"bar\" is undefined\nerror: later noise\n")
    assert found.kind == "unknown" and found.evidence == 'foo.cu(12): error: identifier "bar" is undefined'


def test_ninja_progress_lines() -> None:
    assert progress_of("[3/11] /usr/local/cuda/bin/nvcc -c x.cu") == (3, 11)
    assert progress_of("  [10/10] c++ -shared") == (10, 10)
    assert progress_of("building 'selective_scan_cuda' extension") is None


def test_unit_times_from_a_ninja_log_keep_the_latest_run() -> None:
    log = ("# ninja log v5\n"
           "0\t90000\t0\t/t/build/temp/csrc/a.o\tabc\n"
           "5\t12000\t0\t/t/build/temp/csrc/b.o\tdef\n"
           "0\t30000\t0\t/t/build/temp/csrc/a.o\tabc\n")
    assert unit_times(log) == [("a.o", 30.0), ("b.o", 11.995)]
