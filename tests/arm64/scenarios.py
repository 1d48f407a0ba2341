"""Scenarios that scripts/arm64-proxy.sh runs inside an arm64 root (aarch64 Python, the root's glibc).

    python scenarios.py doctor|select|patch|verify

Prints one JSON document: the root's facts and what each jetson-mamba command returned; the tests in
tests/arm64/test_arm64_proxy.py check it on the host. Standard library, jetson_mamba (installed in the root's
venv) and torch where the scenario needs it, Python 3.8 syntax; a command's failure is recorded, not raised, so one report shows everything.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

REPO = Path(os.environ.get("JETSON_MAMBA_REPO", Path(__file__).resolve().parents[2]))
SHARED = Path(os.environ.get("JETSON_MAMBA_SHARED", REPO.parent / "shared"))
# mamba-ssm/causal-conv1d wheels that arm64-proxy.sh built on the host from ../shared's sources without
# compiling, one folder per source (building them here, under emulation, took ~3.5 min a pair)
WHEELS = Path(os.environ.get("JETSON_MAMBA_ARM64_WHEELS", "/mnt/jetson-mamba/wheels"))
# (mamba-ssm, causal-conv1d): each version asked for at least once; "main" is the upstream snapshot.
PAIRS = (("2.2.4", "1.6.0"), ("2.3.2.post1", "1.7.0"), ("main", "1.7.0"))


def facts() -> Dict[str, Any]:
    """What this root is: CPU, Python, glibc, torch."""
    try:
        import torch

        torch_version: Optional[str] = torch.__version__
    except ImportError:
        torch_version = None
    return {"machine": platform.machine(), "python": platform.python_version(),
            "glibc": os.confstr("CS_GNU_LIBC_VERSION"), "torch": torch_version}


def command(argv: Sequence[str], env: Optional[Dict[str, str]] = None, timeout: float = 900) -> Dict[str, Any]:
    """Run one command; rc, seconds, its JSON (or stdout tail) and stderr tail."""
    start = time.monotonic()
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        return {"rc": None, "seconds": round(time.monotonic() - start, 1), "error": f"timed out after {timeout} s"}
    try:
        output: Any = json.loads(done.stdout)
    except ValueError:
        output = done.stdout[-2000:]
    return {"rc": done.returncode, "seconds": round(time.monotonic() - start, 1), "output": output,
            "stderr": done.stderr[-2000:]}


def jetson_mamba(*args: str, env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    return command([sys.executable, "-m", "jetson_mamba", *args], env=env)


# --- doctor -----------------------------------------------------------------------------------------------
def scenario_doctor() -> Dict[str, Any]:
    """`doctor --json --root R` for every Jetson fixture root, and plain `doctor --json` on the root itself."""
    roots = REPO / "tests" / "probe" / "roots"
    results = {root.name: jetson_mamba("doctor", "--json", "--root", str(root)) for root in sorted(roots.iterdir())}
    return {"roots": results, "plain": jetson_mamba("doctor", "--json")}


# --- select -----------------------------------------------------------------------------------------------
def make_wheel(folder: Path, name: str, version: str, tag: str, library: Optional[bytes] = None,
               requires_python: Optional[str] = None) -> Path:
    """A small valid wheel (METADATA, WHEEL, RECORD with hashes) named and tagged as given.

    `library`: bytes of a real shared library stored as `<name>/_C.so` (its DT_NEEDED entries are what
    the archive reads to decide whether the wheel links torch).
    """
    from jetson_mamba.archive.wheel import record_hash

    package = name.replace("-", "_")
    dist_info = f"{package}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    if requires_python:
        metadata += f"Requires-Python: {requires_python}\n"
    members = {f"{package}/__init__.py": b"",
               f"{dist_info}/METADATA": metadata.encode(),
               f"{dist_info}/WHEEL": (f"Wheel-Version: 1.0\nGenerator: jetson-mamba-tests\nRoot-Is-Purelib: "
                                      f"{'true' if tag.endswith('-any') else 'false'}\nTag: {tag}\n").encode()}
    if library is not None:
        members[f"{package}/_C.so"] = library
    record = "".join(f"{member},{record_hash(data)},{len(data)}\n" for member, data in members.items())
    members[f"{dist_info}/RECORD"] = (record + f"{dist_info}/RECORD,,\n").encode()
    path = folder / f"{package}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for member, data in members.items():
            wheel.writestr(member, data)
    return path


def _torch_library() -> Tuple[Optional[bytes], Optional[str]]:
    """A real aarch64 library that links libtorch (torch's own _C extension), and torch's major.minor."""
    try:
        import torch
    except ImportError:
        return None, None
    extension = Path(torch._C.__file__)
    return extension.read_bytes(), ".".join(torch.__version__.split("+")[0].split(".")[:2])


def wheel_cases(folder: Path) -> List[Dict[str, Any]]:
    """Wheels named like the aarch64 wheels on PyPI and like Jetson builds, each its own distribution."""
    library, torch_minor = _torch_library()
    cases: List[Tuple[str, str, str, Optional[bytes], Optional[str]]] = [
        ("cp39-ml217", "1.0", "cp39-cp39-manylinux_2_17_aarch64", None, None),
        ("cp311-ml217", "1.0", "cp311-cp311-manylinux_2_17_aarch64", None, None),
        ("ml228", "1.0", "py3-none-manylinux_2_28_aarch64", None, None),
        ("ml234", "1.0", "py3-none-manylinux_2_34_aarch64", None, None),  # like tilelang 0.1.8's aarch64 wheels
        ("x86-ml217", "1.0", "py3-none-manylinux_2_17_x86_64", None, None),
        ("cp38-jetpack5", "1.0", "cp38-cp38-linux_aarch64", None, None),  # what a JetPack 5 build is tagged
        ("needs-py310", "1.0", "py3-none-any", None, ">=3.10"),
        # JetPack-style local labels, as `jetson-mamba build` writes them on a Jetson
        ("label-cuda", "1.0+cu126.torch2.5.sm87", "py3-none-linux_aarch64", None, None),
    ]
    if library is not None:
        cases += [("label-old-torch", "1.0+torch2.5.sm87", "py3-none-linux_aarch64", library, None),
                  ("label-this-torch", f"1.0+torch{torch_minor}", "py3-none-linux_aarch64", library, None)]
    made = []
    for name, version, tag, lib, requires in cases:
        path = make_wheel(folder, name, version, tag, lib, requires)
        made.append({"name": name, "filename": path.name})
    return made


def scenario_select() -> Dict[str, Any]:
    """`archive add` the wheels, then `install --dry-run` over all of them and over one that fits."""
    from packaging.tags import platform_tags

    with tempfile.TemporaryDirectory() as temporary:
        wheels, archive = Path(temporary) / "wheels", Path(temporary) / "archive"
        wheels.mkdir()
        cases = wheel_cases(wheels)
        added = jetson_mamba("archive", "add", "--archive", str(archive), "--json",
                             *(str(wheels / c["filename"]) for c in cases))
        everything = jetson_mamba("install", "--archive", str(archive), "--dry-run", "--explain", "--json")
        one = jetson_mamba("install", "--archive", str(archive), "--dry-run", "--json", "ml228")
    return {"cases": cases, "platform_tags": list(platform_tags())[:3], "added": added,
            "dry_run_all": everything, "dry_run_one": one}


# --- patch ------------------------------------------------------------------------------------------------
def _site(python: Path) -> Path:
    return Path(next(python.parent.parent.glob("lib/python*/site-packages")))


def _snapshot(site: Path) -> Dict[str, str]:
    """sha256 of every file of both packages and of the patch record (bytecode caches aside)."""
    files = [p for d in ("mamba_ssm", "causal_conv1d", ".jetson-mamba-patches") for p in (site / d).rglob("*")
             if p.is_file() and "__pycache__" not in p.parts]
    return {str(p.relative_to(site)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(files)}


def _digest(snapshot: Dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(snapshot, sort_keys=True).encode()).hexdigest()


def _pair_venv(folder: Path) -> Path:
    """A venv seeing this run's packages (jetson_mamba, and through it the cached torch venv)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=600)
    python = folder / "bin" / "python"
    here = [p for p in sys.path if p.endswith("site-packages")]
    (_site(python) / "_jetson_mamba_parent.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in here))
    return python


def _wheel(project: str, version: str) -> Path:
    source = "mamba-main-e9594ce" if version == "main" else f"{project}-{version}"
    return next((WHEELS / source).glob("*.whl"))


def check_pair(mamba: str, conv: str, folder: Path) -> Dict[str, Any]:
    """Install (wheels of the sources), patch --check, patch, import, Mamba/Mamba2, revert byte-exact."""
    python = _pair_venv(folder)
    steps: Dict[str, Any] = {}
    steps["install"] = command([str(python), "-m", "pip", "install", "-q", "--no-deps",
                                "--no-index", str(_wheel("causal_conv1d", conv)), str(_wheel("mamba_ssm", mamba))],
                               timeout=1200)
    if steps["install"]["rc"] != 0:
        return steps
    site = _site(python)
    upstream = _snapshot(site)
    steps["check_before"] = jetson_mamba("patch", "--check", "--json", "--python", str(python))
    steps["patch"] = jetson_mamba("patch", "--json", "--python", str(python))
    steps["check_after"] = jetson_mamba("patch", "--check", "--json", "--python", str(python))
    patched = _snapshot(site)
    steps["modules"] = command([str(python), str(REPO / "tests" / "compat" / "mamba_checks.py"), "import", "modules"],
                               env={"JETSON_MAMBA_BACKEND": "torch"})
    steps["revert"] = jetson_mamba("patch", "--revert", "--json", "--python", str(python))
    reverted = _snapshot(site)
    steps["sha256"] = {"upstream": _digest(upstream), "patched": _digest(patched), "reverted": _digest(reverted),
                       "files": len(upstream),
                       "differing_after_revert": sorted(k for k in set(upstream) | set(reverted)
                                                        if upstream.get(k) != reverted.get(k))[:10]}
    return steps


def scenario_patch() -> Dict[str, Any]:
    results = {}
    with tempfile.TemporaryDirectory() as temporary:
        for mamba, conv in PAIRS:
            start = time.monotonic()
            results[f"{mamba}+{conv}"] = check_pair(mamba, conv, Path(temporary) / f"{mamba}-{conv}")
            results[f"{mamba}+{conv}"]["seconds"] = round(time.monotonic() - start, 1)
    return {"pairs": results}


# --- verify -----------------------------------------------------------------------------------------------
def _yolo_forward() -> Dict[str, Any]:
    import torch

    from jetson_mamba.models.mamba_yolo.standalone import build_detector

    torch.manual_seed(0)
    start = time.monotonic()
    model = build_detector("t").eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 64, 64))
    return {"shapes": [list(o.shape) for o in outputs], "finite": all(bool(o.isfinite().all()) for o in outputs),
            "parameters": sum(p.numel() for p in model.parameters()), "seconds": round(time.monotonic() - start, 1)}


def scenario_verify() -> Dict[str, Any]:
    """`verify --quick` on the torch backend, and a Mamba-YOLO-T forward at 64x64."""
    verify = jetson_mamba("verify", "--quick", "--json", env={"JETSON_MAMBA_BACKEND": "torch"})
    if isinstance(verify.get("output"), dict):  # keep the report short: failures and the summary
        report = verify["output"]
        report["checks"] = [c for c in report.get("checks", []) if c.get("status") != "passed"]
    try:
        from jetson_mamba.ops import use_backend

        with use_backend("torch"):
            yolo: Dict[str, Any] = _yolo_forward()
    except Exception as error:  # the scenario's result
        yolo = {"error": f"{type(error).__name__}: {error}"}
    return {"verify": verify, "yolo": yolo}


SCENARIOS: Dict[str, Callable[[], Dict[str, Any]]] = {
    "doctor": scenario_doctor, "select": scenario_select, "patch": scenario_patch, "verify": scenario_verify}


def main(argv: List[str]) -> int:
    if len(argv) != 1 or argv[0] not in SCENARIOS:
        print(f"usage: scenarios.py {'|'.join(SCENARIOS)}", file=sys.stderr)
        return 2
    start = time.monotonic()
    result = {"scenario": argv[0], "facts": facts(), **SCENARIOS[argv[0]]()}
    result["seconds"] = round(time.monotonic() - start, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
