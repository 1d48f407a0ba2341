"""Read upstream files straight out of the sdists in ../shared, for tests that compare against them."""

from __future__ import annotations

import ast
import importlib.util
import sys
import tarfile
import types
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple


def read_member(sdist: Path, suffix: str) -> str:
    """Text of the one file in the sdist whose path ends with `suffix`."""
    with tarfile.open(sdist) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(suffix))
        handle = tar.extractfile(member)
        assert handle is not None, f"{suffix} in {sdist} is not a regular file"
        return handle.read().decode()


NO_DEFAULT = object()


def signatures(source: str) -> Dict[str, List[Tuple[str, Any]]]:
    """{function name: [(parameter, default value or NO_DEFAULT)]} for the module-level defs of a file."""
    result: Dict[str, List[Tuple[str, Any]]] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef):
            args = node.args.args
            values = [eval(ast.get_source_segment(source, d) or "", {}) for d in node.args.defaults]
            defaults = [NO_DEFAULT] * (len(args) - len(values)) + values
            result[node.name] = [(a.arg, d) for a, d in zip(args, defaults)]
    return result


def load(source: str, path: Path) -> Dict[str, Any]:
    """Write an upstream module's source to `path` and import it from there (Triton's @jit needs a real
    file); its own imports must resolve. Returns the module's namespace."""
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"upstream_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return vars(module)


def ssd_minimal(sdist: Path) -> Callable[..., Any]:
    """`ssd_minimal_discrete` (Listing 1 of the SSD paper) from a mamba-ssm sdist.

    Its module imports the Triton mamba_chunk_scan_combined for its own self-test only; that import
    is pointed at jetson_mamba's while the module loads, and sys.modules is restored afterwards.
    """
    from jetson_mamba.ops.ssd import mamba_chunk_scan_combined

    names = ("mamba_ssm", "mamba_ssm.ops", "mamba_ssm.ops.triton", "mamba_ssm.ops.triton.ssd_combined")
    saved = {name: sys.modules.get(name) for name in names}
    stub = types.ModuleType(names[-1])
    stub.mamba_chunk_scan_combined = mamba_chunk_scan_combined  # type: ignore[attr-defined]
    sys.modules.update({name: types.ModuleType(name) for name in names[:-1]})
    sys.modules[names[-1]] = stub
    try:
        namespace: Dict[str, Any] = {}
        exec(compile(read_member(sdist, "mamba_ssm/modules/ssd_minimal.py"), "ssd_minimal.py", "exec"), namespace)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return namespace["ssd_minimal_discrete"]
