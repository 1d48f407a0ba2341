"""Read upstream files straight out of the sdists in ../shared, for tests that compare against them."""

from __future__ import annotations

import ast
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

from jetson_mamba.conformance.runner import read_member  # the bounded reader, also for the tests

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


def causal_conv1d_ref(sdist: Path) -> Callable[..., Any]:
    """`causal_conv1d_ref` from a causal-conv1d sdist's causal_conv1d_interface.py, the function alone
    (its module imports the compiled extension): exact in float64, differentiable through autograd."""
    import torch
    import torch.nn.functional as F

    source = read_member(sdist, "causal_conv1d/causal_conv1d_interface.py")
    node = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == "causal_conv1d_ref")
    namespace: Dict[str, Any] = {"torch": torch, "F": F}
    exec(compile(ast.get_source_segment(source, node) or "", "causal_conv1d_interface.py", "exec"), namespace)
    return namespace["causal_conv1d_ref"]


def varlen_seq_idx(width: int, L: int, device: str = "cpu") -> Dict[str, Any]:
    """seq_idx (2, L) int32 patterns for seq_idx with initial states: upstream 1.7.0's own (a first fragment
    shorter than the window, one as long as it), and padding (seq_idx < 0) at the start (the initial
    states then belong to no real token) and in the middle."""
    import torch

    def runs(*parts: Tuple[int, int]) -> List[int]:
        row: List[int] = []
        for value, count in parts:
            row += [value] * count
        return (row + [row[-1]] * L)[:L]

    first = max(1, width - 2)
    patterns = {
        "upstream": [runs((3, first), (4, L)), runs((5, width), (6, L))],
        "padding": [runs((-1, 2), (0, 3), (1, L)), runs((2, 3), (-1, 2), (3, L))],
    }
    return {k: torch.tensor(v, dtype=torch.int32, device=device) for k, v in patterns.items()}


def against_ref(fn: Callable[..., Any], ref: Callable[..., Any], x: Any, weight: Any, bias: Any, init: Any,
                seq_idx: Any, activation: Any, dout: Any) -> Dict[str, Tuple[Any, Any]]:
    """{name: (ours, upstream reference in float64)} for out and the gradients of x, weight, bias and
    initial_states, with `fn` (causal_conv1d_fn) and `ref` (causal_conv1d_ref) given the same inputs."""
    import torch

    names = ("x", "weight", "bias", "initial_states")
    ours = [t.detach().clone().requires_grad_() for t in (x, weight, bias, init)]
    exact = [t.detach().double().requires_grad_() for t in (x, weight, bias, init)]
    out = fn(ours[0], ours[1], ours[2], seq_idx=seq_idx, initial_states=ours[3], activation=activation)
    want = ref(exact[0], exact[1], exact[2], initial_states=exact[3], activation=activation, seq_idx=seq_idx)
    torch.autograd.backward(out, dout.to(out.dtype))
    torch.autograd.backward(want, dout.double())
    pairs = {"out": (out, want)}
    pairs.update({f"d{n}": (o.grad, e.grad) for n, o, e in zip(names, ours, exact)})
    return pairs
