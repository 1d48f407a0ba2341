"""The older Jetsons (Xavier sm_72, Nano sm_53): trees from `build --prepare-only` compile with nvcc 11.8.

Upstream stopped compiling for them and CUDA 13 cannot; this compiles one real translation unit of
each package (the mamba-ssm one is bf16, which these GPUs have no instructions for: upstream's
`__CUDA_ARCH__ >= 800` guard falls back to c10::BFloat16's integer conversions) with nvcc 11.8 from
Debian (tests/old_nvcc.py), torch 2.1.2's headers and the exact nvcc flags the prepared tree's
setup.py hands torch (read by running it with `setuptools.setup` replaced), plus torch 2.1's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from jetson_mamba.cli import main
from old_nvcc import OldToolkit, old_toolkit

pytestmark = pytest.mark.slow

SDISTS = {"causal-conv1d": "causal_conv1d-1.7.0.tar.gz", "mamba-ssm": "mamba_ssm-2.3.2.post1.tar.gz"}
SPECS = ["causal-conv1d==1.7.0", "mamba-ssm==2.3.2.post1"]
FORCE = {"causal-conv1d": "CAUSAL_CONV1D_FORCE_BUILD", "mamba-ssm": "MAMBA_FORCE_BUILD"}

# Runs a prepared setup.py with setup() replaced: its extensions' sources, include dirs and nvcc flags.
CAPTURE = """
import json, runpy, sys, setuptools
found = {}
def setup(**kwargs):
    for ext in kwargs.get("ext_modules") or []:
        found[ext.name] = {"sources": list(ext.sources), "include_dirs": [str(d) for d in ext.include_dirs],
                           "nvcc": list(ext.extra_compile_args["nvcc"])}
setuptools.setup = setup
sys.argv = ["setup.py", "bdist_wheel"]
sys.path.insert(0, ".")
runpy.run_path("setup.py", run_name="__main__")
print("CAPTURED" + json.dumps(found))
"""


@pytest.fixture(scope="module")
def toolkit() -> OldToolkit:
    found, why = old_toolkit()
    if found is None:
        pytest.skip(why)
    return found


def _prepare(shared: Path, out: Path, extra: List[str], capsys: pytest.CaptureFixture) -> Dict[str, Path]:
    sources = [arg for name in SDISTS for arg in ("--source", str(shared / "sdists" / SDISTS[name]))]
    status = main(["build", *SPECS, *sources, "--prepare-only", str(out), "--json", *extra])
    report = json.loads(capsys.readouterr().out)
    assert status == 0, report
    assert report["plan"]["cxx_std"] == 17 and report["plan"]["toolchain"]["cuda_version"] in ("11.8", "11.4")
    return {r["name"]: Path(r["tree"]) for r in report["results"]}


def _extension_flags(tree: Path, name: str, toolkit: OldToolkit) -> Dict[str, List[str]]:
    env = {**os.environ, FORCE[name]: "TRUE", "CUDA_HOME": str(toolkit.cuda_home)}
    done = subprocess.run([sys.executable, "-c", CAPTURE], cwd=str(tree), env=env, capture_output=True, text=True,
                          timeout=300)
    marker = [line for line in done.stdout.splitlines() if line.startswith("CAPTURED")]
    assert done.returncode == 0 and marker, done.stderr[-3000:]
    (extension,) = json.loads(marker[0][len("CAPTURED"):]).values()
    return extension


def _nvcc_command(tree: Path, extension: Dict[str, List[str]], unit: str, module: str,
                  toolkit: OldToolkit, obj: Path) -> List[str]:
    """What torch 2.1's BuildExtension runs for one .cu file (its ninja rule), with g++ 11 as host compiler."""
    include = toolkit.torch_include
    root = tree.resolve()
    inside = [(root / d).resolve() for d in extension["include_dirs"]]  # setup.py's own, relative to its folder
    includes = [str(d) for d in inside if root in (d, *d.parents)]
    assert includes, extension["include_dirs"]
    includes += [str(include), str(include / "torch/csrc/api/include"), str(include / "TH"), str(include / "THC")]
    flags = list(extension["nvcc"])
    post = [*toolkit.common_nvcc_flags(), "--compiler-options", "-fPIC", *flags, "-DTORCH_API_INCLUDE_EXTENSION_H",
            f"-DTORCH_EXTENSION_NAME={module}", "-D_GLIBCXX_USE_CXX11_ABI=0"]
    if not any(flag.startswith("-std=") for flag in flags):
        post.append("-std=c++17")  # torch 2.1's append_std17_if_no_std_present
    return [str(toolkit.nvcc), "-ccbin", str(toolkit.ccbin), *[f"-I{d}" for d in includes], "-c", str(tree / unit),
            "-o", str(obj), *post]


def _compile(tree: Path, name: str, unit: str, module: str, sms: List[str], toolkit: OldToolkit,
             tmp_path: Path) -> None:
    extension = _extension_flags(tree, name, toolkit)
    assert unit in extension["sources"]
    gencodes = [extension["nvcc"][i + 1] for i, flag in enumerate(extension["nvcc"]) if flag == "-gencode"]
    assert gencodes == [f"arch=compute_{sm},code=sm_{sm}" for sm in sms]
    obj = tmp_path / (Path(unit).stem + ".o")
    done = subprocess.run(_nvcc_command(tree, extension, unit, module, toolkit, obj), cwd=str(tree),
                          capture_output=True, text=True, timeout=1500)
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert done.returncode == 0, "\n".join(errors[:20]) or done.stderr[-3000:]
    listing = subprocess.run([str(toolkit.cuda_home / "bin/cuobjdump"), "--list-elf", str(obj)],
                             capture_output=True, text=True, timeout=60).stdout
    assert sorted(line.rsplit(".", 2)[-2] for line in listing.split() if line.endswith(".cubin")) == \
        [f"sm_{sm}" for sm in sms], listing


def test_xavier_sm72_trees_compile_with_nvcc_11_8(shared: Path, tmp_path: Path, toolkit: OldToolkit,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    """CUDA_HOME at the older toolkit: its nvcc is probed and the tree is written for C++17."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("CUDA_HOME", str(toolkit.cuda_home))
    trees = _prepare(shared, tmp_path / "sm72", ["--arch", "7.2"], capsys)
    _compile(trees["causal-conv1d"], "causal-conv1d", "csrc/causal_conv1d_update.cu", "causal_conv1d_cuda", ["72"],
             toolkit, tmp_path)
    _compile(trees["mamba-ssm"], "mamba-ssm", "csrc/selective_scan/selective_scan_fwd_bf16.cu", "selective_scan_cuda",
             ["72"], toolkit, tmp_path)


def test_nano_and_tx2_tree_for_cuda_11_4_compiles(shared: Path, tmp_path: Path, toolkit: OldToolkit,
                                               monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """--cuda-version names the board's toolkit (Nano sm_53, TX2 sm_62); no nvcc of this machine is consulted."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "no-toolkit-here"))
    trees = _prepare(shared, tmp_path / "sm53", ["--arch", "5.3,6.2", "--cuda-version", "11.4"], capsys)
    _compile(trees["causal-conv1d"], "causal-conv1d", "csrc/causal_conv1d_update.cu", "causal_conv1d_cuda",
             ["53", "62"], toolkit, tmp_path)
