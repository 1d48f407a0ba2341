"""Kernel backend dispatch: compiled extension -> Triton -> torch, decided per op, device and dtype.

Every op (`selective_scan`, `causal_conv1d`, `ssd`) has backend modules `jetson_mamba.ops.<op>.<name>`;
what such a module must and may define is declared per op in `CONTRACTS` (see `Backend`). Modules are
imported lazily, so a missing or broken one (e.g. no triton) only makes that backend unavailable; one that
lacks a required function is refused (at `register_backend` for a module object, at its first import
for a dotted path).

Which backend runs, in the order it is asked:
1. `select_backend(..., name=)`: one backend, for callers that hold a name (verify, bench);
2. `with use_backend("triton"):` / `use_backend(["triton", "torch"])`: a context (a `ContextVar`:
   nestable, local to a thread or asyncio task, restored on exit). What runs later, perhaps on another
   thread (a backward: autograd runs a CUDA backward in threads of its own), runs under the choice its
   forward saved (`choice_in_effect()` into the autograd context, then `use_backend(saved)`);
3. `JETSON_MAMBA_BACKEND=cuda|triton|torch` or a comma list, read once per process (the user's default);
4. otherwise automatic: the highest-priority backend that can run the tensors at hand.
One name forces that backend (an error where it cannot run); a list is an order of preference, the
first that can run the tensors wins (ultralytics builds a model with a CPU forward pass before moving
it to the GPU, so `triton,torch` trains on Triton). Tests and `verify` can register extra backends
(including deliberately wrong ones) to prove a bad kernel is caught.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from types import ModuleType
from typing import (
    TYPE_CHECKING,
    Callable,
    ContextManager,
    Dict,
    FrozenSet,
    Iterator,
    List,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

from jetson_mamba.errors import BackendContractError, BackendUnavailableError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger("jetson_mamba.ops")

ENV_VAR = "JETSON_MAMBA_BACKEND"
BUILTIN_BACKENDS: Tuple[Tuple[str, int], ...] = (("cuda", 300), ("triton", 200), ("torch", 100))
KNOWN_OPS: Tuple[str, ...] = ("selective_scan", "causal_conv1d", "ssd")


@dataclass(frozen=True)
class Contract:
    """What a backend module of one op must define (`required`) and may define (`optional`).

    Every backend defines `is_available(device, dtype) -> Optional[str]` (None when usable, else why not).
    Optional, for selective_scan: `selective_scan_forward_x` (the forward with the compiled kernels'
    chunk states from the same pass) and `selective_scan_backward_out_z` (the backward that also writes
    out * silu(z)); for causal_conv1d: `causal_conv1d_update` (the decode step). `WRITES_INTO_BUFFERS =
    True` says the functions take the caller's output buffers (causal_conv1d: out=, dx=, fp32 dweight=/
    dbias= that the backward adds into; selective_scan's backward: dz=)."""

    required: Tuple[str, ...]
    optional: Tuple[str, ...] = ()


CONTRACTS: Dict[str, Contract] = {
    "selective_scan": Contract(("is_available", "selective_scan_forward", "selective_scan_backward"),
                               ("selective_scan_forward_x", "selective_scan_backward_out_z")),
    "causal_conv1d": Contract(("is_available", "causal_conv1d_forward", "causal_conv1d_backward"),
                              ("causal_conv1d_update",)),
    "ssd": Contract(("is_available", "chunk_scan", "varlen_states")),
}
_ANY_OP = Contract(("is_available",))  # an op registered by a plugin: only the common part is known


@dataclass(frozen=True)
class Backend:
    """One usable backend of one op: its module and the optional capabilities it offers.

    Unpacks and indexes as `(name, module)`, the pair `select_backend` returned before it."""

    op: str
    name: str
    module: ModuleType
    offers: FrozenSet[str]  # the optional functions of CONTRACTS[op] that the module defines
    writes_into_buffers: bool

    def __iter__(self) -> Iterator[object]:
        return iter((self.name, self.module))

    def __getitem__(self, index: int) -> object:
        return (self.name, self.module)[index]

    def has(self, capability: str) -> bool:
        """Whether the module offers optional `capability` (a name CONTRACTS declares, else ValueError)."""
        if capability not in CONTRACTS.get(self.op, _ANY_OP).optional:
            raise ValueError(f"{capability!r} is not an optional capability of {self.op} backends")
        return capability in self.offers


def check_contract(op: str, name: str, module: object) -> Optional[str]:
    """Why `module` cannot be a backend of `op` (the required functions it lacks), or None."""
    missing = [attr for attr in CONTRACTS.get(op, _ANY_OP).required if not callable(getattr(module, attr, None))]
    if missing:
        return f"backend {name!r} of {op} lacks {', '.join(missing)} (required of every {op} backend)"
    return None


def _backend_of(op: str, name: str, module: ModuleType) -> Backend:
    offers = frozenset(attr for attr in CONTRACTS.get(op, _ANY_OP).optional if callable(getattr(module, attr, None)))
    return Backend(op, name, module, offers, getattr(module, "WRITES_INTO_BUFFERS", False) is True)


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


Choice = Tuple[str, ...]  # () automatic, one name forced, several an order of preference

_extra: Dict[str, Dict[str, _Entry]] = {}
_removed: Dict[str, Set[str]] = {}
_reported: Set[Tuple[str, str]] = set()
_import_failures: Dict[str, str] = {}  # a failed import is not retried on every call
# (op, device, dtype, name, choice, TRITON_INTERPRET for CPU tensors) -> the backend: every kernel call asks, and deciding
# afresh (imports, each candidate's is_available) cost ~10 us of host time per call on the CPU this was
# measured on. Registering or removing a backend forgets every choice.
_chosen: Dict[Tuple[object, ...], Backend] = {}
_loaded: Dict[Tuple[str, str, int], Backend] = {}  # (op, name, id(module)) -> its checked description

_context: contextvars.ContextVar[Optional[Choice]] = contextvars.ContextVar("jetson_mamba_backend", default=None)
_env_choice: Optional[Choice] = None  # JETSON_MAMBA_BACKEND, read at the first question


def _parse(names: Union[str, Sequence[str]]) -> Choice:
    if isinstance(names, str):
        return _parse_str(names)
    return tuple(n.strip().lower() for name in names for n in name.split(",") if n.strip())


@functools.lru_cache(maxsize=64)
def _parse_str(names: str) -> Choice:
    """A comma list parsed once: every backward parses the choice its forward saved (~2 us each time)."""
    return tuple(n.strip().lower() for n in names.split(",") if n.strip())


def env_choice() -> Choice:
    """JETSON_MAMBA_BACKEND as read the first time it is needed; later changes of os.environ are ignored."""
    global _env_choice
    if _env_choice is None:
        _env_choice = _parse(os.environ.get(ENV_VAR, ""))
    return _env_choice


def use_backend(names: Union[str, Sequence[str], None]) -> ContextManager[None]:
    """Run the enclosed kernel calls on backend `names`: "triton" forces one, "triton,torch" or
    ["triton", "torch"] is an order of preference, "" or [] is the automatic choice (JETSON_MAMBA_BACKEND
    set or not); None leaves the current choice. Nestable; local to the thread or asyncio
    task; restored on exit. A backward runs under the choice its forward saved (`choice_in_effect`)."""
    return _Using(None if names is None else _parse(names))


class _Using:
    """use_backend's context (a class, not a generator: every backward enters one; ~1 us instead of ~7)."""

    __slots__ = ("_choice", "_token")

    def __init__(self, choice: Optional[Choice]) -> None:
        self._choice = choice
        self._token: Optional[contextvars.Token] = None

    def __enter__(self) -> None:
        if self._choice is not None:
            self._token = _context.set(self._choice)

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _context.reset(self._token)


def _context_value() -> Optional[Choice]:
    return _context.get()


def _for_graphs(read: Callable[[], Optional[Choice]]) -> Callable[[], Optional[Choice]]:
    """`read` as torch.compile may call it. Dynamo traces ContextVar.get from torch 2.14 and guards it (a
    graph traced under one use_backend is traced again under another); older dynamo refuses it, and
    fullgraph=True through our ops failed ("ContextVar.get": torch 2.11 on the lab GPU, 2.13 here). There
    the choice is read once while tracing and kept as a constant (assume_constant_result): a compiled
    graph keeps the backend it was traced under, until torch._dynamo.reset()."""
    try:
        import torch
        from packaging.version import Version
    except ImportError:
        return read
    assume = getattr(getattr(torch, "compiler", None), "assume_constant_result", None)
    if assume is None or Version(torch.__version__).release[:2] >= (2, 14):  # JetPack's versions parse too
        return read
    return assume(read)


_read_context = _for_graphs(_context_value)


def chosen_here() -> bool:
    """Whether a use_backend of this thread or task is in effect (not the process default)."""
    return _read_context() is not None


def choice_in_effect() -> str:
    """The choice in effect here, in the form use_backend takes ("" automatic): what a forward saves
    with its autograd context, so that its backward, whenever and on whichever thread autograd runs it,
    runs under `use_backend(saved)` on the forward's backend."""
    return ",".join(_current_choice()[0])


def _current_choice() -> Tuple[Choice, str]:
    """The choice in effect here and where it comes from (for the log line and the errors)."""
    choice = _read_context()
    if choice is not None:
        return choice, "use_backend"
    return env_choice(), ENV_VAR


def _builtin_module(op: str, name: str) -> str:
    return f"jetson_mamba.ops.{op}.{name}"


def _entries(op: str) -> Dict[str, _Entry]:
    entries = {name: _Entry(_builtin_module(op, name), prio)
               for name, prio in BUILTIN_BACKENDS if name not in _removed.get(op, set())}
    entries.update(_extra.get(op, {}))
    return entries


def register_backend(op: str, name: str, module: Union[str, ModuleType], priority: int) -> None:
    """Add (or replace) backend `name` of `op`: a module object or a dotted module path (imported when
    first needed). A module object lacking a function CONTRACTS[op] requires raises BackendContractError."""
    if isinstance(module, ModuleType):
        why = check_contract(op, name, module)
        if why is not None:
            raise BackendContractError(why, f"define {', '.join(CONTRACTS.get(op, _ANY_OP).required)} in "
                                            f"{module.__name__} (see jetson_mamba.ops.backend.CONTRACTS)")
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
    """Back to the built-in backends only, and JETSON_MAMBA_BACKEND read afresh at the next question
    (for tests: a process reads it once)."""
    global _env_choice
    _extra.clear()
    _removed.clear()
    _reported.clear()
    _import_failures.clear()
    _chosen.clear()
    _loaded.clear()
    _env_choice = None


def _load(op: str, name: str, entry: _Entry) -> Tuple[Optional[Backend], Optional[str]]:
    if isinstance(entry.module, ModuleType):
        module = entry.module
    elif entry.module in _import_failures:
        return None, _import_failures[entry.module]
    else:
        try:
            module = importlib.import_module(entry.module)
        except ImportError as exc:  # absent module or a missing dependency (triton, the extension)
            if isinstance(exc, ModuleNotFoundError) and exc.name == entry.module == _builtin_module(op, name):
                _import_failures[entry.module] = f"jetson-mamba has no {name} kernel for {op}"
            else:
                _import_failures[entry.module] = f"cannot import {entry.module}: {exc}"
            return None, _import_failures[entry.module]
    key = (op, name, id(module))
    if key not in _loaded:
        why = check_contract(op, name, module)
        if why is not None:  # a dotted path is checked here, at its first import
            return None, why
        _loaded[key] = _backend_of(op, name, module)
    return _loaded[key], None


def _device_kind(device: torch.device) -> str:
    return device.type if hasattr(device, "type") else str(device).split(":")[0]


def _why_not(op: str, name: str, entry: _Entry, device: torch.device, dtype: torch.dtype,
             forced: bool) -> Tuple[Optional[Backend], Optional[str]]:
    backend, reason = _load(op, name, entry)
    if backend is None:
        return None, reason
    if name == "triton" and _device_kind(device) == "cpu":
        if not forced:
            return backend, ("CPU tensors use the torch backend unless the triton backend is chosen "
                             f"(use_backend or {ENV_VAR}=triton) and TRITON_INTERPRET=1 is set")
        if os.environ.get("TRITON_INTERPRET", "") != "1":
            return backend, "CPU tensors need TRITON_INTERPRET=1 (the Triton interpreter)"
    try:
        reason = backend.module.is_available(device, dtype)
    except Exception as exc:  # a broken backend must never break dispatch itself
        reason = f"{name}.is_available raised {type(exc).__name__}: {exc}"
    return backend, reason


def requested_backend() -> Optional[str]:
    """The backend asked for here (use_backend, else JETSON_MAMBA_BACKEND; the first of a preference
    list), or None when dispatch is automatic."""
    names = preferred_backends()
    return names[0] if names else None


def preferred_backends() -> List[str]:
    """The choice in effect as a list: empty (automatic), one name (forced) or an order of preference."""
    return list(_current_choice()[0])


def list_backends(op: Optional[str] = None, device: Union[str, torch.device] = "cpu",
                  dtype: Optional[torch.dtype] = None) -> List[BackendInfo]:
    """Every backend of `op` (or of all known ops), best first, with why it can or cannot run."""
    import torch

    dev = torch.device(device)
    dt = dtype if dtype is not None else torch.float32
    ops = [op] if op else sorted(set(KNOWN_OPS) | set(_extra))
    wanted = preferred_backends()
    infos: List[BackendInfo] = []
    for one in ops:
        entries = sorted(_entries(one).items(), key=lambda kv: -kv[1].priority)
        for name, entry in entries:
            _, reason = _why_not(one, name, entry, dev, dt, forced=name in wanted)
            infos.append(BackendInfo(one, name, entry.priority, reason is None, reason))
    return infos


def _report(op: str, name: str, why: str) -> None:
    if (op, name) not in _reported:
        _reported.add((op, name))
        logger.info("jetson-mamba: %s runs on the %s backend (%s)", op, name, why)


def select_backend(op: str, device: Union[str, torch.device], dtype: torch.dtype,
                   name: Optional[str] = None) -> Backend:
    """The backend to use for `op` on tensors of `device`/`dtype` (unpacks as (name, module)).

    `name` forces one, else the choice in effect (use_backend, then JETSON_MAMBA_BACKEND); it raises
    BackendUnavailableError with the reason and the fix when a forced backend cannot run these tensors.
    A choice is remembered (errors are not): the same question again costs one dict lookup.
    """
    choice, source = _current_choice()
    # TRITON_INTERPRET decides only for CPU tensors (_why_not); reading os.environ cost ~1 us a call
    interpret = os.environ.get("TRITON_INTERPRET") if _device_kind(device) == "cpu" else None
    key = (op, device, dtype, name, choice, interpret)
    chosen = _chosen.get(key)
    if chosen is None:
        chosen = _chosen[key] = _select(op, device, dtype, [name] if name else list(choice),
                                        "the backend= argument" if name else source)
    return chosen


def _select(op: str, device: Union[str, torch.device], dtype: torch.dtype, wanted: List[str],
            source: str) -> Backend:
    import torch

    dev = torch.device(device)
    entries = _entries(op)
    unknown = [w for w in wanted if w not in entries]
    if unknown:
        raise BackendUnavailableError(
            f"unknown backend {unknown[0]!r} for {op} (from {source}); known: {', '.join(sorted(entries))}",
            f"choose one of {', '.join(sorted(entries))} (or a comma list of them) in {source}, or drop it")
    rejected: List[str] = []
    for cand in wanted:
        backend, reason = _why_not(op, cand, entries[cand], dev, dtype, forced=True)
        if backend is not None and reason is None:
            _report(op, cand, "requested" if source.startswith("the backend=") else f"forced by {source}"
                    if len(wanted) == 1 else f"first usable of {source}={','.join(wanted)}")
            return backend
        rejected.append(f"{cand}: {reason}")
    if len(wanted) == 1:
        raise BackendUnavailableError(f"backend {wanted[0]!r} cannot run {op} on {dev} {dtype}: {reason}",
                                      _fix_for(wanted[0], dev, source))
    if wanted:
        raise BackendUnavailableError(
            f"none of {source}={','.join(wanted)} can run {op} on {dev} {dtype}: {'; '.join(rejected)}",
            f"add a backend that runs on {dev} to {source} (torch runs everywhere), or drop it")
    for cand, entry in sorted(entries.items(), key=lambda kv: -kv[1].priority):
        backend, reason = _why_not(op, cand, entry, dev, dtype, forced=False)
        if backend is not None and reason is None:
            why = "best available" + (f"; skipped {'; '.join(rejected)}" if rejected else "")
            _report(op, cand, why)
            return backend
        rejected.append(f"{cand}: {reason}")
    raise BackendUnavailableError(
        f"no backend can run {op} on {dev} {dtype}: {'; '.join(rejected)}",
        "use float32/float16/bfloat16 tensors, or run `jetson-mamba doctor` to see what is missing")


def _fix_for(name: str, device: torch.device, source: str) -> str:
    drop = f"or drop {name!r} from {source}"
    if name == "cuda":
        if _device_kind(device) != "cuda":
            return f"move the tensors to a CUDA device, {drop} to use the torch backend"
        return f"install the compiled mamba-ssm / causal-conv1d wheels (`jetson-mamba install`), {drop}"
    if name == "triton":
        if _device_kind(device) == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
            return f"set TRITON_INTERPRET=1 to run Triton kernels on CPU tensors, {drop}"
        if importlib.util.find_spec("triton") is None:
            return f"install triton (`pip install triton`, or the JetPack build), {drop}"
        return f"give a fallback, {name},torch, in {source} (torch runs everywhere), {drop}"
    return f"{drop} to let jetson-mamba choose a backend"
