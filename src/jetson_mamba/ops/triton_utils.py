"""Shared pieces of the Triton backends: availability, autotune settings and small device helpers.

Triton decides at decoration time whether `@triton.jit` functions run compiled or interpreted
(`TRITON_INTERPRET=1`), so the mode is fixed when this module is first imported; `is_available`
reports a CPU tensor as usable only when the kernels were built for the interpreter.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

try:
    import triton
    import triton.language as tl
    from triton.runtime.autotuner import Autotuner, Heuristics

    TRITON_IMPORT_ERROR: Optional[str] = None
except ImportError as exc:  # pragma: no cover - depends on the environment
    triton = None  # type: ignore[assignment]
    tl = None  # type: ignore[assignment]
    TRITON_IMPORT_ERROR = f"triton is not importable ({exc})"

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# Inline PTX for the hardware log2: NVIDIA GPUs only (not the interpreter, not ROCm's Triton); a
# constexpr, so the kernels compile only the branch taken.
_HW_LOG2 = tl.constexpr(not INTERPRET and torch.version.hip is None) if triton is not None else None
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
LOG2E = 1.4426950408889634


def is_available(device: torch.device, dtype: torch.dtype) -> Optional[str]:
    """None when the Triton kernels can run on `device` with `dtype`, else the reason why not."""
    if TRITON_IMPORT_ERROR is not None:
        return TRITON_IMPORT_ERROR + "; install it with `pip install triton` (never reinstalls torch)"
    if dtype not in SUPPORTED_DTYPES:
        return f"the Triton kernels take float32, float16 or bfloat16 inputs, not {dtype}"
    if not isinstance(device, torch.device):  # a tensor's device already is one (this runs on every launch)
        device = torch.device(device)
    if device.type == "cpu":
        if INTERPRET:
            return None
        return "Triton runs CPU tensors only under TRITON_INTERPRET=1 (set before triton is imported)"
    if device.type != "cuda":
        return f"Triton kernels need a CUDA device, not {device.type}"
    if INTERPRET:
        return "TRITON_INTERPRET=1 is set: the kernels were built for the CPU interpreter, not the GPU"
    index = device.index
    if index is None:  # a bare "cuda" (a tensor's device always has an index)
        if not torch.cuda.is_available():
            return "torch sees no CUDA device"
        index = torch.cuda.current_device()
    return _capability_reason(index, dtype is torch.bfloat16)


@functools.lru_cache(maxsize=None)
def _capability_reason(index: int, bf16: bool) -> Optional[str]:
    """is_available's answer for a GPU, asked once per device: reading the capability on every kernel
    call cost ~10 us of the ~85 us host time of a conv launch (profiled on the lab H200), and asking
    torch.cuda.is_available() ~3 us more."""
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    major, _minor = torch.cuda.get_device_capability(index)
    if major < 7:
        return f"Triton needs compute capability 7.0 or newer (this GPU is {major}.x)"
    if bf16 and major < 8:
        return "bfloat16 needs compute capability 8.0 or newer"
    return None


def autotune_configs(configs: List[Any], interpret_config: Any) -> List[Any]:
    """All configs on a GPU; one on the interpreter, where benchmarking them would only cost time.

    JETSON_MAMBA_TRITON_AUTOTUNE=0 keeps only the first (the best one measured on the lab GPU):
    no tuning runs at all, for the fastest possible first call.
    """
    if INTERPRET:
        return [interpret_config]
    if os.environ.get("JETSON_MAMBA_TRITON_AUTOTUNE", "1") == "0":
        return configs[:1]
    return configs


# The interpreter's launch plan (TRITON_INTERPRET=1 only). The interpreter runs the programs one after the
# other in Python; numpy does a whole tile per operation, and each operation and @triton.jit helper call
# costs tens of microseconds of Python whatever the tile's size, so the fewest, widest programs are fastest. Up to INTERPRET_WIDE_ABOVE channels (our
# own kernel tests' shapes) the kernels keep small interpreter tiles: partial channel blocks and several
# tiles a program, which is where the masks are checked. Above it they take INTERPRET_WIDE_CHANNELS channels
# a program (their module's `*_WIDE` interpreter configs): upstream's mamba_inner_fn test (dim 768, seqlen
# 128) ran its causal conv's rows kernel as 12,288 programs of 2 channels x 8 steps, past 300 s a case.
# Deterministic mode keeps the small tiles (its buffers of partial sums are sized by them).
INTERPRET_WIDE_ABOVE = 64
INTERPRET_WIDE_CHANNELS = 1024


def interpret_wide(dim: int) -> bool:
    """Whether a launch over `dim` channels takes the interpreter's wide plan (never on a GPU)."""
    return INTERPRET and dim > INTERPRET_WIDE_ABOVE


def for_channels(dim: int, kernel: Any, wide: Any) -> Any:
    """`wide` (a kernel's interpreter variant with the wide plan's config; None on a GPU) where `dim`
    channels take the wide plan, else `kernel`."""
    return wide if wide is not None and interpret_wide(dim) else kernel


def autotune_kwargs() -> Dict[str, Any]:
    """Keep tuned configs on disk (Triton's cache dir) so a second process skips the benchmarking."""
    params = inspect.signature(triton.autotune).parameters
    return {"cache_results": True} if "cache_results" in params else {}


# what launch returns: (the JIT function, its compiled kernel, the values after the positional ones), the grid
_Made = Tuple[Tuple[Any, Any, Tuple[Any, ...]], Any]
# id(autotuner) -> (its configs, its cache, {caller key: tuned config's launch kwargs})
_LAUNCH_MEMO: Dict[int, Tuple[Any, Any, Dict[Any, Dict[str, Any]]]] = {}


def launch_tuned(kernel: Any, key: Tuple[Any, ...], grid: Any, *args: Any, **kwargs: Any) -> Optional[_Made]:
    """kernel[grid](*args, **kwargs) for a Triton autotuner, with the tuned config remembered per `key`
    (the caller's tuning-relevant values). From the second call with a key on, the JIT function runs
    directly (`launch`), as the autotuner would run it, without the autotuner's per-call work (two dicts
    over every argument and a dtype scan: ~20 of the ~85 us host time of a conv launch, profiled on the
    lab H200). The memo is dropped whenever the autotuner's configs or cache are replaced
    (pin_autotuned_kernels, a benchmark forcing one config). Returns what `launch` returns (None while
    the autotuner runs)."""
    memo = _LAUNCH_MEMO.get(id(kernel))
    if memo is None or memo[0] is not kernel.configs or memo[1] is not kernel.cache:
        memo = _LAUNCH_MEMO[id(kernel)] = (kernel.configs, kernel.cache, {})
    tuned = memo[2].get(key)
    if tuned is not None:
        return launch(kernel.fn, grid, *args, **kwargs, **tuned)
    kernel[grid](*args, **kwargs)
    best = getattr(kernel, "best_config", None)
    # a config with a pre-hook, or a Triton without Config.all_kwargs (before 3.0), keeps the autotuner
    if best is not None and getattr(best, "pre_hook", None) is None and hasattr(best, "all_kwargs"):
        memo[2][key] = best.all_kwargs()
    return None


# a call site's launch plans (launch_planned): (the caller's plan key, device, each tensor's dtype and 16-byte
# alignment) -> (the autotuner or None, its configs and cache when planned, the JIT function, the compiled
# kernel, the grid (3 ints), the values after the tensors)
Plans = Dict[Tuple[Any, ...], Tuple[Any, ...]]
_PLANS_PER_SITE = 256  # distinct layouts remembered per call site; its plans start over past it


def launch_planned(plans: Plans, key: Tuple[Any, ...], kernel: Any, tensors: Tuple[torch.Tensor, ...],
                   make: Callable[[], Tuple[Optional[Tuple[Any, ...]], Any, Tuple[Any, ...], Dict[str, Any]]],
                   checked: Optional[int] = None) -> None:
    """kernel[grid](*tensors, *values, **kwargs) with (tuning key, grid, values, kwargs) = make(): through
    launch_tuned (an autotuner; the tuning key) or launch (a JIT function, or one under heuristics; None),
    and, once those have a compiled kernel for the call, straight to its launcher from the next call on,
    without make() (which builds ~40 keyword arguments) or launch_key over every value (~25 of the ~45 us
    of host time of a scan forward from the stand-in down, on this project's 2-core CPU).

    `key`, the caller's, must determine everything make() returns but the tensors: every shape, stride
    and flag that any value, keyword argument, tuning key or the grid is computed from (a stale plan would
    launch a kernel specialized for other strides). The tensors' dtypes and 16-byte alignment are added to
    it here, as launch_key adds them: of every tensor, or of the first `checked` ones where the caller
    allocated the others itself (new tensors, or views of one at offsets its key fixes: their dtypes follow
    from its key, and a new allocation's address is 512-byte aligned; ~0.2 us a tensor, 24 in a scan
    backward). A plan is dropped with the autotuner's configs or cache (as launch_tuned's memo), and not
    used while a launch hook (profilers) or a pre-run hook is set."""
    full = None
    if _RUNTIME_KNOBS is not None and _hooks_idle():
        current_device, current_stream = _device_and_stream()
        device = current_device()
        full = (key, device, *[(t.dtype, not t.data_ptr() & 15) for t in tensors[:checked]])
        plan = plans.get(full)
        if plan is not None:
            tuner, configs, cache, jit, compiled, g, rest = plan
            if (tuner is None or (tuner.configs is configs and tuner.cache is cache)) and not jit.pre_run_hooks:
                compiled.run(g[0], g[1], g[2], current_stream(device), compiled.function, compiled.packed_metadata,
                             None, None, None, *tensors, *rest)
                return
    tuning, grid, values, kwargs = make()
    tuner = kernel if isinstance(kernel, Autotuner) else None
    if tuner is not None:
        made = launch_tuned(kernel, tuning, grid, *tensors, *values, **kwargs)
    else:
        made = launch(kernel, grid, *tensors, *values, **kwargs)
    if made is not None and full is not None:
        (jit, compiled, tail), g = made
        if len(plans) >= _PLANS_PER_SITE:
            plans.clear()
        plans[full] = (tuner, getattr(tuner, "configs", None), getattr(tuner, "cache", None), jit, compiled,
                       _grid3(g), (*values, *tail))


# id(function launched: JIT or under heuristics) -> (that function, {launch_key: (the JIT function, its
# compiled kernel, the values of the parameters passed by keyword or added by heuristics)}): one launch plan
# per key; the function itself is kept so that a new one at a freed one's address is not taken for it
_COMPILED: Dict[int, Tuple[Any, Dict[Any, Tuple[Any, Tuple[Any, ...]]]]] = {}
_COMPILED_PER_KERNEL = 256  # distinct shapes/strides remembered per kernel; the memo starts over past it
_PLAIN = frozenset({int, bool, float, type(None)})  # arguments that are their own key


def launch_key(device: int, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Tuple[Any, ...]:
    """What selects a compiled kernel, as fine as Triton's own specialization or finer: a tensor's dtype
    and whether its address is 16-byte aligned; any other value itself (Triton specializes integers on
    their value's divisibility by 16 and width, constexprs on their value). Flat, and built with one
    comprehension that tests a plain tensor inline: it runs on every launch (~3 us here, where a tuple
    per argument cost ~6 us and a helper call per tensor ~0.3 us more each, 12 tensors a scan launch)."""
    return (device, len(args), *kwargs, *kwargs.values(),
            *[a if a.__class__ in _PLAIN else (a.dtype, not a.data_ptr() & 15) if a.__class__ is _TENSOR
              else _tensor_key(a) for a in args])


def _tensor_key(a: Any) -> Any:
    return (a.dtype, not a.data_ptr() & 15) if isinstance(a, torch.Tensor) else a


_TENSOR = torch.Tensor


# Triton with knobs (3.4 and later) launches a compiled kernel as `launch` does: `CompiledKernel.run(grid
# x3, stream, function, packed metadata, launch metadata, enter hook, exit hook, *every parameter in
# signature order)` (read in 3.6 and 3.8); older ones pass only the non-constexpr parameters.
_RUNTIME_KNOBS = triton.knobs.runtime if triton is not None and not INTERPRET and hasattr(triton, "knobs") else None


def _hooks_idle() -> bool:
    """No launch hook that does something (profilers add them; they need Triton's own path): each is
    unset or, from Triton 3.5 on, a chain of hooks that is empty."""
    enter, leave = _RUNTIME_KNOBS.launch_enter_hook, _RUNTIME_KNOBS.launch_exit_hook
    return not ((enter is not None and getattr(enter, "calls", True)) or
                (leave is not None and getattr(leave, "calls", True)))


@functools.lru_cache(maxsize=1)
def _device_and_stream() -> Tuple[Any, Any]:
    """Triton's own getters of the current device and its stream (torch's raw-stream call), looked up once."""
    from triton.runtime import driver

    active = driver.active
    return active.get_current_device, active.get_current_stream


def launch(fn: Any, grid: Any, *args: Any, **kwargs: Any) -> Optional[_Made]:
    """fn[grid](*args, **kwargs) for a JIT function (or one under @triton.heuristics). Once a launch with
    the same `launch_key` has compiled (or found) its kernel, later ones call that kernel's launcher
    directly: Triton's run binds and specializes every argument, builds a cache key with str(options)
    and checks its globals on each call (~20 us of host time per launch on the lab H200's host, the
    bulk of a conv launch's). The key is taken before the heuristics, and the values they add are kept
    with the kernel: their rules must read only integers and constexprs (values in the key; ours do),
    and run once per key instead of on every launch (~12 us of a scan launch here). `grid` as Triton's:
    a tuple, or a callable of the keyword arguments (the constexprs and the config, not the values the
    heuristics add). Returns the launch plan used or made and the grid, where the next launch with this key
    goes to the launcher directly (launch_planned keeps them), else None."""
    if _RUNTIME_KNOBS is None or not _hooks_idle():
        fn.run(*args, grid=grid, warmup=False, **kwargs)
        return None
    current_device, current_stream = _device_and_stream()
    device = current_device()
    key = launch_key(device, args, kwargs)
    memo = _COMPILED.get(id(fn))
    hit = memo[1].get(key) if memo is not None and memo[0] is fn else None
    if hit is None or hit[0].pre_run_hooks:
        jit, full = _heuristics_applied(fn, args, kwargs) if isinstance(fn, Heuristics) else (fn, kwargs)
        compiled = jit.run(*args, grid=grid, warmup=False, **full)
        made = _remember(fn, jit, key, compiled, args, full)
        return None if made is None else (made, _grid3(grid(kwargs) if callable(grid) else grid))
    _, compiled, tail = hit
    g = _grid3(grid(kwargs) if callable(grid) else grid)
    compiled.run(g[0], g[1], g[2], current_stream(device), compiled.function, compiled.packed_metadata,
                 None, None, None, *args, *tail)
    return hit, g


def _grid3(g: Tuple[int, ...]) -> Tuple[int, int, int]:
    """A Triton grid of 1-3 sizes as the launcher takes it: three."""
    return g[0], g[1] if len(g) > 1 else 1, g[2] if len(g) > 2 else 1


def _remember(fn: Any, jit: Any, key: Tuple[Any, ...], compiled: Any, args: Tuple[Any, ...],
              kwargs: Dict[str, Any]) -> Optional[Tuple[Any, Any, Tuple[Any, ...]]]:
    """Keep, under `fn` (the function launched, heuristics and all) and `key`, its JIT function, the
    compiled kernel and the values of the parameters after the positional ones (the heuristics' included),
    unless the launch is one `launch` cannot repeat: a kernel not compiled for this GPU (an old Triton),
    run hooks, a parameter left to its default, or a tensor passed by keyword (its key would be the
    tensor itself: kept alive by the memo, and never met again). Returns the entry kept, or None."""
    names = jit.arg_names[len(args):]
    if (not hasattr(compiled, "packed_metadata") or jit.pre_run_hooks or any(n not in kwargs for n in names)
            or any(isinstance(v, torch.Tensor) for v in kwargs.values())):
        return None
    memo = _COMPILED.get(id(fn))
    if memo is None or memo[0] is not fn or len(memo[1]) >= _COMPILED_PER_KERNEL:
        memo = _COMPILED[id(fn)] = (fn, {})
    memo[1][key] = entry = (jit, compiled, tuple(kwargs[n] for n in names))
    return entry


def jit_function(kernel: Any) -> Any:
    """The JIT function under @triton.autotune / @triton.heuristics wrappers (to compile, profile or
    count the kernel itself)."""
    while isinstance(kernel, (Autotuner, Heuristics)):
        kernel = kernel.fn
    return kernel


def _heuristics_applied(fn: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Tuple[Any, Dict[str, Any]]:
    """The JIT function under @triton.heuristics wrappers, and the keyword arguments with the values they
    add, computed as Heuristics.run computes them (each rule sees the arguments and the values before it)."""
    while isinstance(fn, Heuristics):
        kwargs = dict(kwargs)
        for name, rule in fn.values.items():
            kwargs[name] = rule({**dict(zip(fn.arg_names, args)), **kwargs})
        fn = fn.fn
    return fn, kwargs


def _tile_size(config: Any) -> Tuple[int, int]:
    """How much a config asks of a streaming multiprocessor: tile elements x stages, then warps."""
    tiles = 1
    for value in config.kwargs.values():
        if isinstance(value, int) and not isinstance(value, bool):
            tiles *= max(value, 1)
    return tiles * max(getattr(config, "num_stages", 1) or 1, 1), getattr(config, "num_warps", 4) or 4


def pin_autotuned_kernels(prefix: str) -> int:
    """Keep only the smallest config of every autotuned Triton kernel in the loaded modules `prefix*`.

    Numbers do not depend on tile sizes, and with one config a cold cache compiles one variant per
    kernel instead of all (mamba_ssm's SSD kernels: ~10 each, minutes on a Jetson's CPU). The smallest
    tiles fit every GPU's shared memory. Returns how many kernels were pinned.
    """
    if triton is None:
        return 0
    seen = set()
    for name, module in list(sys.modules.items()):
        if module is None or not (name == prefix or name.startswith(prefix + ".")):
            continue
        for value in list(vars(module).values()):
            # types only, no attribute probing: modules hold proxies whose __getattr__ raises
            while isinstance(value, Heuristics):
                value = value.fn  # @triton.heuristics wraps the autotuner
            if isinstance(value, Autotuner) and id(value) not in seen and len(value.configs) > 1:
                seen.add(id(value))
                value.configs = [min(value.configs, key=_tile_size)]
                value.cache.clear()
    return len(seen)


# The interpreter's fast paths (TRITON_INTERPRET=1 only; nothing here runs for a GPU). Triton's interpreter
# runs an associative_scan or reduce whose combine function it does not know (anything but sum, prod, min,
# max) one element at a time: per element np.unravel_index, a Triton tensor wrapped around each operand, the
# combine function interpreted, .item() per result. That was 88% of the interpreted scan's time (upstream's
# test_selective_scan at seqlen 128: 44 of 50 s in the scan backward's _reverse_scan and _next_row, profiled
# on the 2-core CPU, 2026-12-06), tl.flip included (an xor reduce). Two exact replacements:
# - a scan with a combine function marked `elementwise_combine` calls it once per step along the axis, on
#   whole slices: the same operations in the same left-to-right order on each element, so the same bits;
# - an xor reduce (tl.flip's) is numpy's, exact for integers in any order.
# Every other scan and reduce keeps Triton's own path. And every call of a @triton.jit helper made Triton
# patch triton.language again (~1 ms of inspect.getmembers; 36% of the scan's time at seqlen 1024 once the
# scans were fast) although the kernel's own patch is in effect until the kernel ends and repeating it
# changes nothing: it is done once per module per kernel run. Where the interpreter's classes differ
# from Triton 3.8's (another release), nothing is replaced: slow, not wrong.
_ELEMENTWISE_COMBINES: List[Any] = []


def elementwise_combine(fn: Any) -> Any:
    """Mark a @triton.jit scan combine function whose every operation acts on each element alone (no
    reductions, shapes or Python branches on values); returns it. The interpreter then scans with it by
    slices (see above); compiled kernels are unaffected."""
    _ELEMENTWISE_COMBINES.append(fn)
    return fn


def _install_interpreter_fast_paths() -> bool:
    """Replace the interpreter's element-by-element scan (for marked combine functions) and xor reduce;
    False where this Triton's interpreter is not laid out as 3.8's."""
    import numpy as np
    from triton.runtime import interpreter

    scans, reduces = getattr(interpreter, "ScanOps", None), getattr(interpreter, "ReduceOps", None)
    generic_scan = getattr(scans, "generic_scan", None)
    reduce_impl = getattr(reduces, "apply_impl", None)
    xor = getattr(getattr(tl, "standard", None), "_xor_combine", None)
    patch_lang, scope_type = getattr(interpreter, "_patch_lang", None), getattr(interpreter, "_LangPatchScope", None)
    if (generic_scan is None or reduce_impl is None or xor is None or not hasattr(scans, "to_tensor")
            or patch_lang is None or scope_type is None):
        return False
    patched: set = set()  # ids of the language modules (tl, tl.core) patched since the last kernel ended

    def patch_lang_once(fn: Any) -> Any:
        langs = {id(v) for v in fn.__globals__.values() if v is tl or v is tl.core}
        scope = scope_type() if langs and langs <= patched else patch_lang(fn)
        patched.update(langs)
        restore = scope.restore

        def restore_and_forget() -> None:  # a kernel's scope, restored when it ends: the next one patches anew
            patched.clear()
            restore()

        scope.restore = restore_and_forget
        return scope

    def scan_by_slices(self: Any, inputs: Any) -> Any:
        if not any(self.combine_fn is fn for fn in _ELEMENTWISE_COMBINES):
            return generic_scan(self, inputs)
        data = [np.moveaxis(arg.handle.data, self.axis, 0) for arg in inputs]
        outs = [np.empty_like(d) for d in data]
        acc: Tuple[Any, ...] = ()
        for i in range(data[0].shape[0]):
            step = tuple(self.to_tensor(d[i], arg.dtype) for d, arg in zip(data, inputs))
            if acc:
                result = self.combine_fn.fn(*acc, *step)
                step = result if isinstance(result, tuple) else (result,)
            for out, value in zip(outs, step):
                out[i] = np.reshape(value.handle.data, out.shape[1:])
            acc = tuple(self.to_tensor(out[i], arg.dtype) for out, arg in zip(outs, inputs))
        return [self.to_tensor(np.moveaxis(out, 0, self.axis), arg.dtype) for out, arg in zip(outs, inputs)]

    def reduce_fast(self: Any, inputs: Any) -> Any:
        if self.combine_fn is xor and self.axis is not None and len(inputs) == 1:
            data = np.bitwise_xor.reduce(inputs[0].handle.data, axis=self.axis, keepdims=self.keep_dims)
            return self.to_tensor(data, inputs[0].dtype)
        return reduce_impl(self, inputs)

    scans.generic_scan = scan_by_slices
    reduces.apply_impl = reduce_fast
    interpreter._patch_lang = patch_lang_once
    return True


INTERPRETER_FAST_PATHS = bool(INTERPRET and triton is not None and _install_interpreter_fast_paths())


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1), in plain Python: it runs on every launch, where
    triton.next_power_of_2 cost ~4 us per call from Python. The autotuners see lengths and batches
    through it (their classes): which tile is fastest depends on their scale, not their exact value."""
    return 1 << max(n - 1, 0).bit_length()


def grid_size(n: int, block: int) -> int:
    """Number of blocks of `block` covering `n`."""
    return (n + block - 1) // block


if triton is not None:

    @triton.jit
    def sigmoid(x):
        """Logistic function in fp32."""
        return 1.0 / (1.0 + tl.exp(-x))

    @triton.jit
    def _log2(x):
        """log2 from the GPU's special function unit (lg2.approx: absolute error ~2^-22), where Triton's
        tl.log/tl.log2 compile to a ~25-instruction software logarithm; tl.log2 under the interpreter
        (which runs no PTX)."""
        if _HW_LOG2:
            return tl.inline_asm_elementwise("lg2.approx.f32 $0, $1;", "=r,r", [x], dtype=tl.float32,
                                             is_pure=True, pack=1)
        else:
            return tl.log2(x)

    @triton.jit
    def softplus(x):
        """log1p(exp(x)) for x <= 20, x above (as the CUDA kernels). log1p from the hardware log2 where
        exp(x) >= 1/32 (relative error below 1e-5 there), else from its series (error ~e^5/6). It was
        Goldberg's log1p through tl.log and an IEEE division: ~37 SASS instructions per element, a third
        of the scan forward's loop."""
        e = tl.exp(x)
        series = e * (1.0 + e * (-0.5 + e * (0.3333333333333333 + e * (-0.25 + e * 0.2))))
        lp = tl.where(e < 0.03125, series, _log2(1.0 + e) * 0.6931471805599453)
        return tl.where(x <= 20.0, lp, x)
