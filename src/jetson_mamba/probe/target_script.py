"""The one script that gathers facts inside a target interpreter (probe, compat, archive, wheelbuild).

`python_env.target_facts(python, request)` runs this file's own source with `python -c SOURCE REQUEST`,
so the target needs nothing of ours installed: keep this file standard library only, Python 3.8
compatible, and free of jetson_mamba imports (tests/probe/test_target_script.py runs it in a bare venv).
REQUEST is a JSON object naming the sections wanted; the answer is one JSON line with one key per
section. Sections that import torch (`torch`, `extensions` with import, `imports`) come last, so the
cheap facts are gathered before anything that may crash; a section that raises is left out and its
error named under "errors" (the caller treats a missing section as a failed probe).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import platform
import sys
import sysconfig
from typing import Any, Callable, Dict, List, Optional

try:
    import importlib.metadata as _md
except ImportError:  # Python < 3.8 has only the backport, if anything
    try:
        import importlib_metadata as _md  # type: ignore[no-redef]
    except ImportError:
        _md = None  # type: ignore[assignment]


def _error(error: BaseException, first_line: bool = False) -> str:
    text = str(error).splitlines()[0] if first_line and str(error) else str(error)
    return f"{type(error).__name__}: {text}"


def interpreter(_: Any) -> Dict[str, Any]:
    """Which interpreter this is and where it installs (`purelib`, `prefix`)."""
    return {"python": sys.executable, "python_version": platform.python_version(),
            "libc": list(platform.libc_ver()), "purelib": sysconfig.get_paths()["purelib"],
            "prefix": sys.prefix, "machine": platform.machine(), "platform": sysconfig.get_platform()}


def _distribution(name: str) -> Any:
    for candidate in (name, name.replace("-", "_")):
        try:
            return _md.distribution(candidate)
        except Exception:
            pass
    return None


def _package_dir(name: str) -> Optional[str]:
    """Where the import package really is (elsewhere than the dist-info for an editable install)."""
    try:
        spec = importlib.util.find_spec(name.replace("-", "_"))
    except Exception:
        return None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return locations[0] if locations else None


def distributions(request: Dict[str, Any]) -> Dict[str, Any]:
    """{name: {version, location[, package][, files][, requires]}} for the installed ones of request["names"]."""
    out: Dict[str, Any] = {}
    for name in request.get("names", ()) if _md is not None else ():
        dist = _distribution(name)
        if dist is None:
            continue
        entry = {"version": dist.version, "location": str(dist.locate_file(""))}
        if request.get("packages"):
            entry["package"] = _package_dir(name)
        if request.get("files"):
            entry["files"] = [str(dist.locate_file(f)) for f in (dist.files or [])]
        if request.get("requires"):
            entry["requires"] = dist.requires or []
        out[name] = entry
    return out


def torch_headers(_: Any) -> Optional[str]:
    """torch's include directory, found without importing torch."""
    try:
        spec = importlib.util.find_spec("torch")
    except Exception:
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    include = os.path.join(list(spec.submodule_search_locations)[0], "include")
    return include if os.path.isdir(include) else None


def torch_files(_: Any) -> Dict[str, Any]:
    """torch's version and a digest of the names, sizes and mtimes of all its files (no import)."""
    dist = _distribution("torch") if _md is not None else None
    if dist is None:
        return {"version": None, "files": 0, "digest": None}
    digest = hashlib.sha256()
    count = 0
    for item in sorted(str(f) for f in (dist.files or [])):
        try:
            stat = os.stat(str(dist.locate_file(item)))
        except OSError:
            digest.update(f"{item}|missing\n".encode())
            continue
        count += 1
        digest.update(f"{item}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return {"version": dist.version, "files": count, "digest": digest.hexdigest(),
            "location": str(dist.locate_file(""))}


def mamba3(_: Any) -> bool:
    """mamba-ssm with Mamba-3 (main), recognised by its module, not by version."""
    root = _package_dir("mamba_ssm")
    return bool(root) and os.path.isfile(os.path.join(root, "modules", "mamba3.py"))


def torch(request: Dict[str, Any]) -> Dict[str, Any]:
    """Imports torch: its version, CUDA, ABI, first GPU and which torch.distributed APIs are missing."""
    out: Dict[str, Any] = {}
    try:
        import torch as module
        out["version"] = module.__version__
        out["cuda"] = module.version.cuda
        out["cxx11_abi"] = bool(getattr(module._C, "_GLIBCXX_USE_CXX11_ABI", False))
        out["cuda_available"] = bool(module.cuda.is_available())
        if out["cuda_available"]:
            major, minor = module.cuda.get_device_capability(0)
            out["gpu"] = {"name": module.cuda.get_device_name(0), "arch": f"{major}.{minor}",
                          "count": module.cuda.device_count(),
                          "smem_per_block": getattr(module.cuda.get_device_properties(0),
                                                    "shared_memory_per_block_optin", None)}
        dist_ok = bool(getattr(module, "distributed", None) is not None and module.distributed.is_available())
        out["distributed_available"] = dist_ok
        out["distributed_missing"] = [name for name in request.get("distributed_apis", ())
                                      if not dist_ok or not hasattr(module.distributed, name)]
    except Exception as error:
        out["error"] = _error(error)
    return out


def extensions(request: Dict[str, Any]) -> List[Dict[str, Any]]:
    """[{module, path[, importable, error]}] for the compiled extensions that are present."""
    if request.get("import"):
        try:
            import torch  # noqa: F401  (compiled extensions link against libtorch and need it loaded first)
        except Exception:
            pass
    out = []
    for module in request.get("modules", ()):
        try:
            spec = importlib.util.find_spec(module)
        except Exception:
            spec = None
        if spec is None:
            continue
        entry: Dict[str, Any] = {"module": module, "path": spec.origin}
        if request.get("import"):
            try:
                importlib.import_module(module)
                entry["importable"] = True
            except Exception as error:
                entry["importable"] = False
                entry["error"] = _error(error)
        out.append(entry)
    return out


def imports(modules: List[str]) -> Dict[str, Optional[str]]:
    """Module -> None (it imports) or the first line of its error."""
    out: Dict[str, Optional[str]] = {}
    for module in modules:
        try:
            __import__(module)
            out[module] = None
        except BaseException as error:
            out[module] = _error(error, first_line=True)
    return out


# In this order: nothing that imports torch (and may crash) before the cheap facts are gathered.
SECTIONS: Dict[str, Callable[[Any], Any]] = {
    "interpreter": interpreter, "distributions": distributions, "torch_headers": torch_headers,
    "torch_files": torch_files, "mamba3": mamba3, "torch": torch, "extensions": extensions, "imports": imports,
}


def gather(request: Dict[str, Any]) -> Dict[str, Any]:
    """The answer to one request: its sections, in SECTIONS order, and the errors of those that raised."""
    out: Dict[str, Any] = {"errors": {}}
    for name, section in SECTIONS.items():
        if name in request:
            try:
                out[name] = section(request[name])
            except Exception as error:
                out["errors"][name] = _error(error)
    return out


if __name__ == "__main__":
    print(json.dumps(gather(json.loads(sys.argv[1]))))
