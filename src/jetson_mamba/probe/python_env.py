"""Facts about a Python environment (torch, triton, packages, compiled extensions).

They are gathered by `target_script` run in a subprocess of the target interpreter (`target_facts`,
also used by compat, archive and wheelbuild), so a broken torch (a segfault, an undefined symbol)
cannot take the caller down, the caller never pays for importing torch, and `--python PATH` probes
another environment.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from jetson_mamba.probe import fatbin, target_script
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

# The most a probe may print (torch's file list is about 2 MB); more is refused, not read.
OUTPUT_LIMIT = 64 << 20


@functools.lru_cache(maxsize=None)
def _script_source() -> str:
    return Path(target_script.__file__).read_text(encoding="utf-8")


def target_facts(python: str, request: Dict[str, Any], timeout: float = 120.0
                 ) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """What `target_script` gathers in `python` for `request` (one run), or the reason there is none.

    Never raises. Output is read up to OUTPUT_LIMIT; a requested section that failed in the target
    makes the whole answer a failure, as an uncaught error in the script would.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            done = subprocess.run([python, "-c", _script_source(), json.dumps(request)], stdout=out, stderr=err,
                                  timeout=timeout, check=False)
        except (OSError, subprocess.SubprocessError) as error:
            return None, f"could not run {python}: {error}"
        out.seek(0)
        printed = out.read(OUTPUT_LIMIT + 1)
        err.seek(max(0, err.seek(0, os.SEEK_END) - 4096))
        stderr = err.read().decode(errors="replace")
    lines = printed.decode(errors="replace").strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return None, f"{python} died while probing (exit {done.returncode}): {tail}"
    if len(printed) > OUTPUT_LIMIT:
        return None, f"{python} printed more than {OUTPUT_LIMIT} bytes while probing"
    try:
        data = json.loads(lines[-1])
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("errors"), dict):
        return None, f"{python} printed no probe result"
    failed = [f"{name}: {why}" for name, why in data["errors"].items()]
    missing = [name for name in request if name not in data]
    if failed or missing:
        return None, f"{python} could not gather {', '.join(failed or missing)}"
    return data, None


def mamba3_imports(python: str) -> Dict[str, Optional[str]]:
    """Module -> None (imports) or its error, for Mamba-3's dependencies; {"*": why} if the probe died.

    A run of its own: one of these imports may crash the interpreter."""
    data, failure = target_facts(python, {"imports": list(MAMBA3_IMPORTS)})
    return {"*": failure or "no result"} if data is None else data["imports"]


def torch_info_from(python: str, data: Optional[Dict[str, Any]], failure: Optional[str]) -> TorchInfo:
    """TorchInfo from a PROBE_REQUEST answer (or the reason there is none)."""
    if data is None:
        return TorchInfo(python=python, python_version=None, version=None, cuda=None, error=failure)
    torch, triton = data["torch"], data["distributions"].get("triton", {})
    version = torch.get("version")
    return TorchInfo(
        python=python,
        python_version=data["interpreter"]["python_version"],
        version=version,
        cuda=torch.get("cuda"),
        cuda_available=bool(torch.get("cuda_available")),
        cxx11_abi=torch.get("cxx11_abi"),
        jetpack_build=bool(version and ".nv" in version),
        distributed_available=torch.get("distributed_available"),
        distributed_missing=tuple(torch.get("distributed_missing", ())),
        triton=triton.get("version"),
        glibc=_glibc(data["interpreter"]["libc"]),
        error=torch.get("error"),
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
    """PackagesInfo from a PROBE_REQUEST answer (or the reason there is none)."""
    if data is None:
        return PackagesInfo(distributions={}, extensions=(), source=f"failed: {failure}")
    distributions = {
        name: PackageInfo(name=name, version=item.get("version"), location=item.get("location"))
        for name, item in data["distributions"].items()
    }
    return PackagesInfo(distributions=distributions, extensions=tuple(_extension(e) for e in data["extensions"]),
                        mamba3=bool(data["mamba3"]))


# What probe_python asks the target interpreter (one run: both halves import torch anyway).
PROBE_REQUEST: Dict[str, Any] = {
    "interpreter": True, "distributions": {"names": list(DISTRIBUTIONS)}, "mamba3": True,
    "torch": {"distributed_apis": list(DISTRIBUTED_APIS)}, "extensions": {"modules": list(EXTENSIONS), "import": True},
}


def probe_python(python: Optional[str] = None) -> Tuple[TorchInfo, PackagesInfo, Optional[Dict[str, Any]]]:
    """Torch facts, package facts and torch's view of the GPU (or None) for one interpreter."""
    python = python or sys.executable
    data, failure = target_facts(python, PROBE_REQUEST)
    gpu = data["torch"].get("gpu") if data else None
    packages = packages_info_from(data, failure)
    if packages.mamba3:
        packages = dataclasses.replace(packages, mamba3_imports=mamba3_imports(python))
    return torch_info_from(python, data, failure), packages, gpu
