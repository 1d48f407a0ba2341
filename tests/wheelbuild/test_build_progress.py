"""The executor's schedule and its progress in a log, with real processes of known duration.

Two source trees that jetson-mamba takes for causal-conv1d and mamba-ssm: their setup.py runs a
real ninja (as torch's BuildExtension does) whose units are a "compiler" that sleeps a given time,
then packs a shared library with real sm_87 code (nvcc compiles it once) into a real wheel through
`pip wheel`. So the unit lines, the heartbeat, `.ninja_log`'s times and the overlap of the two
packages are all what a real build produces, in seconds instead of minutes.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict

import pytest
from rich.console import Console

from jetson_mamba.errors import BuildError
from jetson_mamba.probe import probe_machine
from jetson_mamba.wheelbuild.executor import build_all
from jetson_mamba.wheelbuild.plan import BuildPlan, Spec, Toolchain
from jetson_mamba.wheelbuild.progress import CompileProgress

COMPILER = '''
import os, pathlib, sys, time
args = sys.argv[1:]
secs, marker, after = float(args[0]), args[1], args[2]
if marker != "-":  # tell the test this compiler's pid
    pathlib.Path(marker).write_text(str(os.getpid()))
deadline = time.time() + 120
while after != "-" and not pathlib.Path(after).exists() and time.time() < deadline:
    time.sleep(0.1)
time.sleep(abs(secs))
if secs < 0:
    sys.exit("csrc/unit.cu(1): error: this unit does not compile")
pathlib.Path(args[args.index("-o") + 1]).write_text("object")
'''

SETUP = '''
import os, pathlib, shutil, subprocess, sys
from setuptools import setup
here = pathlib.Path(__file__).parent.resolve()
build = here / "build" / "temp.test"
build.mkdir(parents=True, exist_ok=True)
rules = ["rule cc", "  command = {python} {compiler} $secs $marker $after -c $in -o $out"]
for unit, (secs, marker, after) in {units}.items():
    rules += [f"build {{build}}/csrc/{{unit}}.o: cc {{here}}/csrc/{{unit}}.cu", f"  secs = {{secs}}",
              f"  marker = {{marker}}", f"  after = {{after}}"]
(build / "build.ninja").write_text("\\n".join(rules) + "\\n")
subprocess.run(["{ninja}", "-C", str(build), "-j", os.environ["MAX_JOBS"]], check=True)
shutil.copy("{library}", here / "{module}" / "{module}_cuda.so")
setup(name="{name}", version="{version}", packages=["{module}"], package_data={{"{module}": ["*.so"]}})
'''


TOOLCHAIN = Toolchain(python=sys.executable, cuda_home=None, nvcc="nvcc", cuda_version="13.0", nvcc_archs=(),
                      compress_mode=True, torch_version="2.14.1", torch_include="include", torch_cxx_std=20,
                      split_compile=True)
PLAN = BuildPlan(specs=(Spec("causal-conv1d", "1.7.0"), Spec("mamba-ssm", "2.3.2.post1")), archs=("8.7",),
                 jobs=6, jobs_reason="test", label="cu130.torch2.14.sm87", cxx_std=20, toolchain=TOOLCHAIN)


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("no nvcc: the wheels need real GPU code")
    where = tmp_path_factory.mktemp("lib")
    (where / "k.cu").write_text("__global__ void scale(float *x, float a) { x[threadIdx.x] *= a; }\n")
    subprocess.run([nvcc, "-shared", "-Xcompiler", "-fPIC", "-gencode", "arch=compute_87,code=sm_87",
                    str(where / "k.cu"), "-o", str(where / "k.so")], check=True, timeout=600)
    return where / "k.so"


def _tree(root: Path, name: str, module: str, version: str, units: Dict[str, Any], library: Path) -> Path:
    """units: name -> seconds (negative: fails after that long) or (seconds, pid file, file to wait for)."""
    ninja = shutil.which("ninja")
    if ninja is None:
        pytest.skip("no ninja (torch's extension builds need it too)")
    tree = root / name
    (tree / module).mkdir(parents=True)
    (tree / "csrc").mkdir()
    for unit in units:
        (tree / "csrc" / f"{unit}.cu").write_text("// a unit\n")
    (tree / module / "__init__.py").write_text(f'__version__ = "{version}"\n')
    (tree / "compiler.py").write_text(COMPILER)
    sources = ", ".join(f'"csrc/{unit}.cu"' for unit in units)  # what count_units reads
    steps = {unit: spec if isinstance(spec, tuple) else (spec, "-", "-") for unit, spec in units.items()}
    (tree / "setup.py").write_text(f"# sources=[{sources}]\n" + SETUP.format(
        python=sys.executable, compiler=tree / "compiler.py", units=steps, ninja=ninja, library=library,
        module=module, name=name, version=version))
    return tree


def test_packages_compile_at_the_same_time_with_unit_lines_and_heartbeat(
        tmp_path: Path, library: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    conv = _tree(tmp_path / "src", "causal-conv1d", "causal_conv1d", "1.7.0",
                 {"causal_conv1d_bwd": 4.0, "causal_conv1d_fwd": 0.2, "causal_conv1d": 0.2}, library)
    mamba = _tree(tmp_path / "src", "mamba-ssm", "mamba_ssm", "2.3.2.post1",
                  {"selective_scan_fwd": 1.0, "selective_scan_bwd": 1.5}, library)
    log = io.StringIO()  # not a terminal: plain lines, as in CI or `| tee`
    report = build_all(PLAN, probe_machine(), [conv, mamba], tmp_path / "out", None, Console(file=log, width=80),
                       heartbeat_s=1.0)
    text = log.getvalue()

    assert report.schedule.parallel
    shares = {s.name: s for s in report.schedule.shares}
    assert (shares["causal-conv1d"].units, shares["mamba-ssm"].units) == (3, 2)
    assert (shares["causal-conv1d"].jobs, shares["mamba-ssm"].jobs) == (3, 2)  # 5 of 6 jobs: one per unit
    results = {r.name: r for r in report.results}
    assert results["causal-conv1d"].env["MAX_JOBS"] == "3" and results["mamba-ssm"].env["MAX_JOBS"] == "2"
    first, second = results["causal-conv1d"], results["mamba-ssm"]
    assert first.started_s < second.finished_s and second.started_s < first.finished_s, (first, second)
    assert "compiling at the same time: causal-conv1d 1.7.0 (3 units, MAX_JOBS=3" in text

    # one line per finished unit, with ninja's own time for it and k/N
    line = re.search(r"^causal-conv1d 1\.7\.0: causal_conv1d_bwd\.o (\d+\.\d) s \((\d)/3 units\)$", text, re.M)
    assert line and float(line.group(1)) >= 4.0 and line.group(2) == "3", text
    line = re.search(r"^mamba-ssm 2\.3\.2\.post1: selective_scan_bwd\.o (\d+\.\d) s \(\d/2 units\)$", text, re.M)
    assert line and float(line.group(1)) >= 1.5, text
    # while the 4 s unit runs alone, heartbeats name it
    assert re.search(r"^\.\.\. \d+ s: causal-conv1d 1\.7\.0 2/3 units at \d+ s, unfinished: causal_conv1d_bwd\.o(;|$)",
                     text, re.M), text
    assert re.search(r"^built in \d+\.\d s; slowest unit: causal-conv1d causal_conv1d_bwd\.o \d+\.\d s$", text, re.M)
    assert "time not in .ninja_log" not in text

    data = report.to_json()
    assert data["slowest_unit"]["unit"] == "causal_conv1d_bwd.o" and data["slowest_unit"]["package"] == "causal-conv1d"
    assert sorted((u["package"], u["unit"]) for u in data["units"]) == sorted(
        [("causal-conv1d", f"{u}.o") for u in ("causal_conv1d_bwd", "causal_conv1d_fwd", "causal_conv1d")]
        + [("mamba-ssm", f"{u}.o") for u in ("selective_scan_fwd", "selective_scan_bwd")])
    assert [w.name.split("-")[:2] for w in sorted((tmp_path / "out").glob("*.whl"))] == [
        ["causal_conv1d", "1.7.0+cu130.torch2.14.sm87"], ["mamba_ssm", "2.3.2.post1+cu130.torch2.14.sm87"]]


def test_a_quiet_log_gets_a_heartbeat_within_the_interval(tmp_path: Path) -> None:
    """By the clock: while units run and nothing else is printed, a heartbeat line every `heartbeat_s`."""
    now = [0.0]
    log = io.StringIO()
    tree = tmp_path / "tree"
    (tree / "build" / "temp.x").mkdir(parents=True)
    (tree / "build" / "temp.x" / "build.ninja").write_text("build /t/build/temp.x/a.o: cuda_compile /t/a.cu\n"
                                                            "build /t/build/temp.x/b.o: cuda_compile /t/b.cu\n")
    with CompileProgress(Console(file=log, width=80), heartbeat_s=20.0, clock=lambda: now[0]) as progress:
        progress.start("0", "pkg 1.0", tree)
        for step in range(1, 201):  # 100 s in half seconds
            now[0] = step * 0.5
            progress.poll()
        progress.feed("0", "[1/2] /usr/local/cuda/bin/nvcc -c /t/a.cu -o /t/build/temp.x/a.o -O3\n")
        for step in range(201, 301):
            now[0] = step * 0.5
            progress.poll()
    beats = [line for line in log.getvalue().splitlines() if line.startswith("... ")]
    assert beats[:5] == [f"... {t} s: pkg 1.0 0/2 units at {t} s, unfinished: a.o, b.o" for t in (20, 40, 60, 80, 100)]
    assert beats[5:] == ["... 120 s: pkg 1.0 1/2 units at 120 s, unfinished: b.o",
                         "... 140 s: pkg 1.0 1/2 units at 140 s, unfinished: b.o"]


def test_units_whose_time_never_reached_ninja_log_still_count_as_compiled(tmp_path: Path) -> None:
    """A build whose `.ninja_log` is elsewhere (or unreadable) compiled its units all the same: the count
    comes from ninja's [k/N] lines, not from the times (0 would read "every object up to date")."""
    log = io.StringIO()
    with CompileProgress(Console(file=log, width=80)) as progress:
        progress.start("0", "pkg 1.0", tmp_path)
        progress.feed("0", "[1/2] nvcc -c /t/a.cu -o /t/build/temp.x/a.o\n")
        progress.feed("0", "[2/2] nvcc -c /t/b.cu -o /t/build/temp.x/b.o\n")
        assert progress.end("0", 0) == ([], 2)
    assert "pkg 1.0: 2 units compiled, wheel built in" in log.getvalue()


def test_the_first_failure_stops_the_other_package_and_its_compilers(
        tmp_path: Path, library: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    pid_file = tmp_path / "compiler.pid"
    conv = _tree(tmp_path / "src", "causal-conv1d", "causal_conv1d", "1.7.0",
                 {"causal_conv1d_bwd": (300.0, str(pid_file), "-")}, library)
    mamba = _tree(tmp_path / "src", "mamba-ssm", "mamba_ssm", "2.3.2.post1",
                  {"selective_scan_fwd": (-0.5, "-", str(pid_file))}, library)  # fails once conv compiles
    started = time.monotonic()
    with pytest.raises(BuildError) as error:
        build_all(PLAN, probe_machine(), [conv, mamba], tmp_path / "out", None, Console(file=io.StringIO()))
    assert "building mamba-ssm 2.3.2.post1 failed" in error.value.message
    assert time.monotonic() - started < 150  # not the 300 s of the other package's unit
    pid = int(pid_file.read_text())
    for _ in range(50):  # the killed compiler is reaped by init shortly after
        if not _alive(pid):
            break
        time.sleep(0.1)
    assert not _alive(pid), "the other package's compiler still runs"
    assert not list((tmp_path / "out").glob("*.whl"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.is_file() and stat.read_text().split(") ")[-1].startswith("Z"))
