"""Kernel backend dispatch: compiled extension -> Triton -> torch, decided per op, device and dtype.

Every op (`selective_scan`, `causal_conv1d`, `ssd`, ...) has backend modules
`jetson_mamba.ops.<op>.<name>` that expose `is_available(device, dtype) -> Optional[str]`
(None when usable, else why not) plus the op's low-level functions. Optional, for the stand-in
modules: a selective_scan backend may offer `selective_scan_forward_x` (the forward with the compiled
kernels' chunk states, from the same pass instead of a second scan) and `selective_scan_backward_out_z`
(the backward that also writes out * silu(z)); a backend whose functions take the caller's output
buffers (causal_conv1d: out=, dx=, and fp32 dweight=/dbias= that the backward adds into;
selective_scan's backward: dz=) says so with
`WRITES_INTO_BUFFERS = True`. Modules are imported lazily, so a missing or broken one (e.g. no
triton) only makes that backend unavailable.
`JETSON_MAMBA_BACKEND=cuda|triton|torch` forces one backend (an error where it cannot run);
a comma list such as `triton,torch` is an order of preference: the first that can run the
tensors at hand wins (ultralytics builds a model with a CPU forward pass before moving it
to the GPU, so `triton,torch` trains on Triton). Tests and `verify` can
register extra backends (including deliberately wrong ones) to prove a bad kernel is caught.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Dict, List, Optional, Set, Tuple, Union

from jetson_mamba.errors import BackendUnavailableError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger("jetson_mamba.ops")

ENV_VAR = "JETSON_MAMBA_BACKEND"
BUILTIN_BACKENDS: Tuple[Tuple[str, int], ...] = (("cuda", 300), ("triton", 200), ("torch", 100))
KNOWN_OPS: Tuple[str, ...] = ("selective_scan", "causal_conv1d", "ssd")


@dataclass
class _Entry:
    module: Union[str, ModuleType]
    priority: int


@dataclass(frozen=True)
class BackendInfo:
    """One backend of one op, as `list_backends` reports it."""

    op: str
    name: str
    priority: int
    available: bool
    reason: Optional[str]  # why it cannot run (None when available)

    def to_json(self) -> Dict[str, object]:
        return {"op": self.op, "backend": self.name, "priority": self.priority,
                "available": self.available, "reason": self.reason}


_extra: Dict[str, Dict[str, _Entry]] = {}
_removed: Dict[str, Set[str]] = {}
_reported: Set[Tuple[str, str]] = set()
_import_failures: Dict[str, str] = {}  # a failed import is not retried on every call
# (op, device, dtype, name, JETSON_MAMBA_BACKEND, TRITON_INTERPRET) -> the choice: every kernel call
# asks, and deciding afresh (imports, each candidate's is_available) cost ~10 us of host time per call
# on the CPU this was measured on. Registering or removing a backend forgets every choice.
_chosen: Dict[Tuple[object, ...], Tuple[str, ModuleType]] = {}


def _builtin_module(op: str, name: str) -> str:
    return f"jetson_mamba.ops.{op}.{name}"


def _entries(op: str) -> Dict[str, _Entry]:
    entries = {name: _Entry(_builtin_module(op, name), prio)
               for name, prio in BUILTIN_BACKENDS if name not in _removed.get(op, set())}
    entries.update(_extra.get(op, {}))
    return entries


def register_backend(op: str, name: str, module: Union[str, ModuleType], priority: int) -> None:
    """Add (or replace) backend `name` of `op`: a module object or a dotted module path."""
    _extra.setdefault(op, {})[name] = _Entry(module, priority)
    _removed.get(op, set()).discard(name)
    _chosen.clear()


def unregister_backend(op: str, name: str) -> None:
    """Remove backend `name` of `op` (registered or built in) until it is registered again."""
    if name in _extra.get(op, {}):
        del _extra[op][name]
    else:
        _removed.setdefault(op, set()).add(name)
    _chosen.clear()


def reset_backends() -> None:
    """Back to the built-in backends only (for tests)."""
    _extra.clear()
    _removed.clear()
    _reported.clear()
    _import_failures.clear()
    _chosen.clear()


def _load(op: str, name: str, entry: _Entry) -> Tuple[Optional[ModuleType], Optional[str]]:
    if isinstance(entry.module, ModuleType):
        return entry.module, None
    if entry.module in _import_failures:
        return None, _import_failures[entry.module]
    try:
        return importlib.import_module(entry.module), None
    except ImportError as exc:  # absent module or a missing dependency (triton, the extension)
        if isinstance(exc, ModuleNotFoundError) and exc.name == entry.module == _builtin_module(op, name):
            _import_failures[entry.module] = f"jetson-mamba has no {name} kernel for {op}"
        else:
            _import_failures[entry.module] = f"cannot import {entry.module}: {exc}"
        return None, _import_failures[entry.module]


def _device_kind(device: torch.device) -> str:
    return device.type if hasattr(device, "type") else str(device).split(":")[0]


def _why_not(op: str, name: str, entry: _Entry, device: torch.device, dtype: torch.dtype,
             forced: bool) -> Tuple[Optional[ModuleType], Optional[str]]:
    module, reason = _load(op, name, entry)
    if module is None:
        return None, reason
    if name == "triton" and _device_kind(device) == "cpu":
        if not forced:
            return module, (f"CPU tensors use the torch backend unless {ENV_VAR}=triton "
                            "and TRITON_INTERPRET=1 are set")
        if os.environ.get("TRITON_INTERPRET", "") != "1":
            return module, "CPU tensors need TRITON_INTERPRET=1 (the Triton interpreter)"
    try:
        reason = module.is_available(device, dtype)
    except Exception as exc:  # a broken backend must never break dispatch itself
        reason = f"{name}.is_available raised {type(exc).__name__}: {exc}"
    return module, reason


def forced_backend() -> Optional[str]:
    """The backend named by JETSON_MAMBA_BACKEND (the first of a preference list), or None when
    dispatch is automatic."""
    names = preferred_backends()
    return names[0] if names else None


def preferred_backends() -> List[str]:
    """JETSON_MAMBA_BACKEND as a list: empty (automatic), one name (forced) or an order of preference."""
    return [n.strip() for n in os.environ.get(ENV_VAR, "").lower().split(",") if n.strip()]


def list_backends(op: Optional[str] = None, device: Union[str, torch.device] = "cpu",
                  dtype: Optional[torch.dtype] = None) -> List[BackendInfo]:
    """Every backend of `op` (or of all known ops), best first, with why it can or cannot run."""
    import torch

    dev = torch.device(device)
    dt = dtype if dtype is not None else torch.float32
    ops = [op] if op else sorted(set(KNOWN_OPS) | set(_extra))
    infos: List[BackendInfo] = []
    for one in ops:
        entries = sorted(_entries(one).items(), key=lambda kv: -kv[1].priority)
        for name, entry in entries:
            _, reason = _why_not(one, name, entry, dev, dt, forced=name in preferred_backends())
            infos.append(BackendInfo(one, name, entry.priority, reason is None, reason))
    return infos


def _report(op: str, name: str, why: str) -> None:
    if (op, name) not in _reported:
        _reported.add((op, name))
        logger.info("jetson-mamba: %s runs on the %s backend (%s)", op, name, why)


def select_backend(op: str, device: Union[str, torch.device], dtype: torch.dtype,
                   name: Optional[str] = None) -> Tuple[str, ModuleType]:
    """The backend module to use for `op` on tensors of `device`/`dtype`: (name, module).

    `name` (or JETSON_MAMBA_BACKEND) forces one; it raises BackendUnavailableError with the
    reason and the fix when that backend cannot run these tensors. A choice is remembered (errors
    are not): the same question again costs one dict lookup.
    """
    key = (op, device, dtype, name, os.environ.get(ENV_VAR), os.environ.get("TRITON_INTERPRET"))
    chosen = _chosen.get(key)
    if chosen is None:
        chosen = _chosen[key] = _select(op, device, dtype, name)
    return chosen


def _select(op: str, device: Union[str, torch.device], dtype: torch.dtype,
            name: Optional[str]) -> Tuple[str, ModuleType]:
    import torch

    dev = torch.device(device)
    entries = _entries(op)
    wanted = [name] if name else preferred_backends()
    unknown = [w for w in wanted if w not in entries]
    if unknown:
        raise BackendUnavailableError(
            f"unknown backend {unknown[0]!r} for {op}; known: {', '.join(sorted(entries))}",
            f"set {ENV_VAR} to one of {', '.join(sorted(entries))} (or a comma list of them), or unset it")
    rejected: List[str] = []
    for cand in wanted:
        module, reason = _why_not(op, cand, entries[cand], dev, dtype, forced=True)
        if module is not None and reason is None:
            _report(op, cand, "requested" if name else f"forced by {ENV_VAR}" if len(wanted) == 1
                    else f"first usable of {ENV_VAR}={','.join(wanted)}")
            return cand, module
        rejected.append(f"{cand}: {reason}")
    if len(wanted) == 1:
        raise BackendUnavailableError(f"backend {wanted[0]!r} cannot run {op} on {dev} {dtype}: {reason}",
                                      _fix_for(wanted[0], dev))
    if wanted:
        raise BackendUnavailableError(
            f"none of {ENV_VAR}={','.join(wanted)} can run {op} on {dev} {dtype}: {'; '.join(rejected)}",
            f"add a backend that runs on {dev} to {ENV_VAR} (torch runs everywhere), or unset it")
    for cand, entry in sorted(entries.items(), key=lambda kv: -kv[1].priority):
        module, reason = _why_not(op, cand, entry, dev, dtype, forced=False)
        if module is not None and reason is None:
            why = "best available" + (f"; skipped {'; '.join(rejected)}" if rejected else "")
            _report(op, cand, why)
            return cand, module
        rejected.append(f"{cand}: {reason}")
    raise BackendUnavailableError(
        f"no backend can run {op} on {dev} {dtype}: {'; '.join(rejected)}",
        "use float32/float16/bfloat16 tensors, or run `jetson-mamba doctor` to see what is missing")


def _fix_for(name: str, device: torch.device) -> str:
    if name == "cuda":
        if _device_kind(device) != "cuda":
            return f"move the tensors to a CUDA device, or unset {ENV_VAR} to use the torch backend"
        return (f"install the compiled mamba-ssm / causal-conv1d wheels (`jetson-mamba install`), "
                f"or unset {ENV_VAR}")
    if name == "triton":
        if _device_kind(device) == "cpu":
            return f"set TRITON_INTERPRET=1 to run Triton kernels on CPU tensors, or unset {ENV_VAR}"
        return f"install triton (`pip install triton`, or the JetPack build), or unset {ENV_VAR}"
    return f"unset {ENV_VAR} to let jetson-mamba choose a backend"
