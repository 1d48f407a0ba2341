"""Facts about a Python environment (torch, triton, packages, compiled extensions).

They are gathered by small scripts run in a subprocess of the target interpreter, so a
broken torch (a segfault, an undefined symbol) cannot take the caller down, the caller
never pays for importing torch, and `--python PATH` probes another environment.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Optional, Tuple

from jetson_mamba.probe import fatbin
from jetson_mamba.probe.model import ExtensionInfo, PackageInfo, PackagesInfo, TorchInfo

DISTRIBUTIONS = (
    "mamba-ssm", "causal-conv1d", "selective-scan", "torch", "triton", "einops", "transformers",
    "ultralytics", "numpy", "ninja", "packaging", "jetson-mamba",
    # Mamba-3's kernels (mamba-ssm main): TileLang MIMO, CuTe-DSL decode step
    "tilelang", "apache-tvm-ffi", "quack-kernels", "nvidia-cutlass-dsl",
)
# What Mamba-3 imports for each kernel, tried one by one in a separate interpreter (an import may crash)
MAMBA3_IMPORTS = ("tilelang", "tvm_ffi", "quack", "cutlass")
EXTENSIONS = ("selective_scan_cuda", "causal_conv1d_cuda", "selective_scan_cuda_core")
DISTRIBUTED_APIS = ("ProcessGroup", "all_gather_into_tensor", "_all_gather_base",
                    "reduce_scatter_tensor", "_reduce_scatter_base")

# Runs in the target interpreter; keep it Python 3.8 compatible and free of our imports.
_TORCH_SCRIPT = r"""
import json, sys, platform
out = {"python_version": platform.python_version(), "libc": list(platform.libc_ver())}
try:
    import torch
    out["version"] = torch.__version__
    out["cuda"] = torch.version.cuda
    out["cxx11_abi"] = bool(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", False))
    out["cuda_available"] = bool(torch.cuda.is_available())
    if out["cuda_available"]:
        major, minor = torch.cuda.get_device_capability(0)
        out["gpu"] = {"name": torch.cuda.get_device_name(0), "arch": "%d.%d" % (major, minor),
                      "count": torch.cuda.device_count(),
                      "smem_per_block": getattr(torch.cuda.get_device_properties(0),
                                                "shared_memory_per_block_optin", None)}
    dist_ok = bool(getattr(torch, "distributed", None) is not None and torch.distributed.is_available())
    out["distributed_available"] = dist_ok
    missing = []
    for name in APIS:
        if not dist_ok or not hasattr(torch.distributed, name):
            missing.append(name)
    out["distributed_missing"] = missing
except Exception as error:
    out["error"] = "%s: %s" % (type(error).__name__, error)
try:
    import importlib.metadata as md
except ImportError:
    md = None
if md is not None:
    try:
        out["triton"] = md.version("triton")
    except Exception:
        out["triton"] = None
print(json.dumps(out))
""".replace("APIS", repr(DISTRIBUTED_APIS))

_PACKAGES_SCRIPT = r"""
import json, importlib, importlib.util, sys
try:
    import importlib.metadata as md
except ImportError:
    md = None
out = {"distributions": {}, "extensions": []}
for name in DISTS:
    try:
        dist = md.distribution(name)
    except Exception:
        continue
    out["distributions"][name] = {"version": dist.version, "location": str(dist.locate_file(""))}
try:
    import torch  # compiled extensions link against libtorch and need it loaded first
except Exception:
    pass
for module in EXTS:
    try:
        spec = importlib.util.find_spec(module)
    except Exception:
        spec = None
    if spec is None:
        continue
    entry = {"module": module, "path": spec.origin}
    try:
        importlib.import_module(module)
        entry["importable"] = True
    except Exception as error:
        entry["importable"] = False
        entry["error"] = "%s: %s" % (type(error).__name__, error)
    out["extensions"].append(entry)
try:  # mamba-ssm with Mamba-3 (main): recognised by its module, not by version
    spec = importlib.util.find_spec("mamba_ssm")
    root = list(spec.submodule_search_locations or [])[0] if spec else None
    out["mamba3"] = bool(root) and __import__("os").path.isfile(__import__("os").path.join(root, "modules", "mamba3.py"))
except Exception:
    out["mamba3"] = False
print(json.dumps(out))
""".replace("DISTS", repr(DISTRIBUTIONS)).replace("EXTS", repr(EXTENSIONS))


_MAMBA3_SCRIPT = r"""
import json
out = {}
for module in MODULES:
    try:
        __import__(module)
        out[module] = None
    except BaseException as error:
        out[module] = "%s: %s" % (type(error).__name__, str(error).splitlines()[0] if str(error) else "")
print(json.dumps(out))
""".replace("MODULES", repr(MAMBA3_IMPORTS))


def mamba3_imports(python: str) -> Dict[str, Optional[str]]:
    """Module -> None (imports) or its error, for Mamba-3's dependencies; {"*": why} if the probe died."""
    data, failure = run_script(python, _MAMBA3_SCRIPT)
    return {"*": failure or "no result"} if data is None else data


def run_script(python: str, script: str, timeout: float = 120.0) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """The JSON a probe script printed, or the reason there is none."""
    try:
        done = subprocess.run([python, "-c", script], capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError) as error:
        return None, f"could not run {python}: {error}"
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return None, f"{python} died while probing (exit {done.returncode}): {tail}"
    try:
        return json.loads(lines[-1]), None
    except ValueError:
        return None, f"{python} printed no probe result"


def torch_info_from(python: str, data: Optional[Dict[str, Any]], failure: Optional[str]) -> TorchInfo:
    if data is None:
        return TorchInfo(python=python, python_version=None, version=None, cuda=None, error=failure)
    version = data.get("version")
    return TorchInfo(
        python=python,
        python_version=data.get("python_version"),
        version=version,
        cuda=data.get("cuda"),
        cuda_available=bool(data.get("cuda_available")),
        cxx11_abi=data.get("cxx11_abi"),
        jetpack_build=bool(version and ".nv" in version),
        distributed_available=data.get("distributed_available"),
        distributed_missing=tuple(data.get("distributed_missing", ())),
        triton=data.get("triton"),
        glibc=_glibc(data.get("libc")),
        error=data.get("error"),
    )


def _glibc(libc: Any) -> Optional[str]:
    """platform.libc_ver() of the probed interpreter -> the glibc version ("2.31"), None for another libc."""
    if isinstance(libc, list) and len(libc) == 2 and libc[0] == "glibc" and libc[1]:
        return str(libc[1])
    return None


def _extension(entry: Dict[str, Any]) -> ExtensionInfo:
    path = entry.get("path")
    archs = None
    if path:
        try:
            archs = fatbin.archs_of_file(path)
        except (OSError, ValueError):
            archs = None
    return ExtensionInfo(module=entry["module"], path=path, importable=bool(entry.get("importable")),
                         error=entry.get("error"), archs=archs)


def packages_info_from(data: Optional[Dict[str, Any]], failure: Optional[str]) -> PackagesInfo:
    if data is None:
        return PackagesInfo(distributions={}, extensions=(), source=f"failed: {failure}")
    distributions = {
        name: PackageInfo(name=name, version=item.get("version"), location=item.get("location"))
        for name, item in data.get("distributions", {}).items()
    }
    return PackagesInfo(distributions=distributions,
                        extensions=tuple(_extension(e) for e in data.get("extensions", ())),
                        mamba3=bool(data.get("mamba3")))


def probe_python(python: Optional[str] = None) -> Tuple[TorchInfo, PackagesInfo, Optional[Dict[str, Any]]]:
    """Torch facts, package facts and torch's view of the GPU (or None) for one interpreter."""
    python = python or sys.executable
    with ThreadPoolExecutor(max_workers=2) as pool:
        torch_job = pool.submit(run_script, python, _TORCH_SCRIPT)
        packages_job = pool.submit(run_script, python, _PACKAGES_SCRIPT)
        torch_data, torch_failure = torch_job.result()
        packages_data, packages_failure = packages_job.result()
    gpu = torch_data.get("gpu") if torch_data else None
    packages = packages_info_from(packages_data, packages_failure)
    if packages.mamba3:
        packages = dataclasses.replace(packages, mamba3_imports=mamba3_imports(python))
    return torch_info_from(python, torch_data, torch_failure), packages, gpu
