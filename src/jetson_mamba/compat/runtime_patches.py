"""The runtime fixes for installed mamba-ssm / causal-conv1d (also baked into source trees).

Each fix recognises the upstream code it repairs (feature detection on the source) rather than
trusting version numbers, and the code it inserts is self-contained: only `portable-kernels` and
`traceable-conv1d` import jetson_mamba, guarded so that uninstalling jetson-mamba falls back to upstream behaviour.

1. causal-conv1d-bridge: mamba-ssm 2.2.4 calls the compiled `causal_conv1d_cuda` functions with
   their pre-1.5.1 arguments; >= 2.2.5 imports `causal_conv1d.cpp_functions` (only in >= 1.5.1).
   Both now use `cpp_functions` when present, else the old compiled functions directly.
2. transformers5-generation-output: `GreedySearchDecoderOnlyOutput` / `SampleDecoderOnlyOutput`
   were removed in transformers 5; they were aliases of `GenerateDecoderOnlyOutput`.
3. torch-without-distributed: torch builds without (parts of) torch.distributed import fine;
   distributed features raise a RuntimeError naming what is missing. No sitecustomize.py.
4. portable-kernels: without the compiled `selective_scan_cuda` / `causal_conv1d_cuda`, import
   jetson-mamba's stand-ins; Triton ops given tensors off the GPU run portable code. A compiled
   extension that exists always wins (a broken one still raises its own error).
5. ssd-dD-reduction: mamba-ssm < 2.3's Mamba2 backward (`_chunk_scan_chunk_state_bwd_dx_kernel`)
   stores the per-head D gradient of each BLOCK_SIZE_N column block instead of summing them, so
   when the autotuner picks BLOCK_SIZE_N < headdim (configs with 32 exist; headdim is 64 by
   default) the D gradient is silently wrong (62% off measured on the H200). Sum atomically into a
   zeroed buffer, zeroed again before each autotuning trial, as mamba-ssm 2.3 does.
6. fixed-B-last-state: with a fixed B (dim, dstate), the compiled selective scan applies B only when
   it forms the output, so the states it stores lack B's factor and `selective_scan_fn(...,
   return_last_state=True)` returns a wrong state (found by `jetson-mamba verify` on the lab GPU;
   every version so far). Multiply B back; jetson-mamba's stand-in already stores the true state.
7. triton-optional: every module under mamba_ssm/ops/triton imports `triton` at the top, and
   `import mamba_ssm` reaches them (Mamba-1 too, via layer_norm), so without Triton nothing imports.
   Fall back to `jetson_mamba.ops.standins.triton_absent` (kernels refuse to launch with the fix);
   the routed entry points of `portable-kernels` then run portable code on every device.
8. mamba3-lazy-kernels: mamba-ssm main's Mamba-3 imports its TileLang and CuTe-DSL kernels at
   import time, inside `except ImportError`; their dependencies may be missing or crash with other
   errors (apache-tvm-ffi 0.1.12 raises AttributeError: upstream issue 986), which breaks
   `import mamba_ssm` for Mamba-1/2 users. Import them on first use, with the cause in the error.
9. python39-annotations: causal-conv1d >= 1.5.1's `cpp_functions.py` annotates `torch.Tensor | None` and
   mamba-ssm 2.3's Mamba-3 `angle_dt.py` returns `Tensor | Tuple[...]`, without `from __future__ import
   annotations`, so on Python 3.9, which both packages declare they support, `import mamba_ssm` fails with
   "TypeError: unsupported operand type(s) for |" (found on aarch64 Python 3.9, glibc 2.31: the arm64 proxy's
   bullseye root, like JetPack 5). torch.library.custom_op reads cpp_functions' annotations, so those become
   `Optional[torch.Tensor]`; angle_dt's return annotation is quoted (nothing reads it).
10. traceable-conv1d: causal-conv1d >= 1.5.1 wraps each compiled call in a custom op that writes into an `out`
   buffer made with `empty_like(x)`; for the channel-last x of Mamba's and Mamba2's conv that buffer is not
   contiguous, and torch.compile / torch.export refuse the call ("Attempted to call op with non-contiguous
   `out=` tensor"), with the real extension as with the stand-in: mamba_inner_fn, Mamba2's fused path on a GPU
   and its unfused one (generation's prefill) cannot compile with fullgraph=True. While they trace (and
   jetson-mamba's custom ops exist), `cpp_functions`' three functions call jetson-mamba's stand-in of the same
   calling convention, whose functional custom ops run the same kernels (the compiled one when installed).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from jetson_mamba.compat.registry import (
    TREE,
    Context,
    Patch,
    PatchPlan,
    Replace,
    Transform,
    UnknownContent,
    apply_plan,
    marker,
    patch_plan,
    replacing,
    tree_target,
)

CAUSAL_CONV1D_BRIDGE = "causal-conv1d-bridge"
TRANSFORMERS5 = "transformers5-generation-output"
NO_DISTRIBUTED = "torch-without-distributed"
PORTABLE = "portable-kernels"
SSD_DD = "ssd-dD-reduction"
FIXED_B_STATE = "fixed-B-last-state"
NO_TRITON = "triton-optional"
MAMBA3_LAZY = "mamba3-lazy-kernels"
PY39_ANNOTATIONS = "python39-annotations"
TRACEABLE_CONV = "traceable-conv1d"

SELECTIVE_SCAN_INTERFACE = "mamba_ssm/ops/selective_scan_interface.py"
SSD_COMBINED = "mamba_ssm/ops/triton/ssd_combined.py"
GENERATION = "mamba_ssm/utils/generation.py"
DISTRIBUTED_UTILS = "mamba_ssm/distributed/distributed_utils.py"
TENSOR_PARALLEL = "mamba_ssm/distributed/tensor_parallel.py"
LAYERNORM_GATED = "mamba_ssm/ops/triton/layernorm_gated.py"
LAYER_NORM = "mamba_ssm/ops/triton/layer_norm.py"
STATE_UPDATE = "mamba_ssm/ops/triton/selective_state_update.py"
MAMBA3 = "mamba_ssm/modules/mamba3.py"
ANGLE_DT = "mamba_ssm/ops/triton/mamba3/angle_dt.py"
# every module of mamba_ssm/ops/triton that imports triton at the top (mamba-ssm main's superset)
TRITON_MODULES = tuple(f"mamba_ssm/ops/triton/{name}.py" for name in (
    "k_activations", "layer_norm", "layernorm_gated", "selective_state_update", "softplus", "ssd_bmm",
    "ssd_chunk_scan", "ssd_chunk_state", "ssd_combined", "ssd_state_passing", "mamba3/angle_dt",
    "mamba3/grouped_head_reduction", "mamba3/mamba3_mimo_rotary_step", "mamba3/mamba3_mimo_utils",
    "mamba3/mamba3_siso_bwd", "mamba3/mamba3_siso_combined", "mamba3/mamba3_siso_fwd", "mamba3/mamba3_siso_step",
    "mamba3/utils"))
CAUSAL_CONV1D_CPP = "causal_conv1d/cpp_functions.py"
CAUSAL_CONV1D_INTERFACE = "causal_conv1d/causal_conv1d_interface.py"
CAUSAL_CONV1D_VARLEN = "causal_conv1d/causal_conv1d_varlen.py"  # a Triton kernel: Mamba2's varlen prefill

UNDO = "(undo: jetson-mamba patch --revert)"


def _header(name: str) -> str:
    return f"# {marker(name)} {UNDO}\n"


# ---------------------------------------------------------------- 1. causal-conv1d API bridge

_CONV_IMPORT = (
    r"^try:\n    from causal_conv1d import causal_conv1d_fn\n"
    r"(?:    import causal_conv1d_cuda\n|    from causal_conv1d\.cpp_functions import causal_conv1d_fwd_function, "
    r"causal_conv1d_bwd_function, causal_conv1d_update_function\n)"
    r"except ImportError:\n(?:    [\w, ]+ = None(?:, None)*\n)+")

_BRIDGE = _header(CAUSAL_CONV1D_BRIDGE) + """\
# causal-conv1d >= 1.5.1 compiles output-buffer functions and keeps the old calling convention in
# causal_conv1d.cpp_functions; before 1.5.1 the compiled functions use the old convention themselves.
try:
    from causal_conv1d import causal_conv1d_fn
except ImportError:
    causal_conv1d_fn = None
try:
    from causal_conv1d.cpp_functions import causal_conv1d_fwd_function, causal_conv1d_bwd_function, causal_conv1d_update_function
except ImportError:
    try:
        from causal_conv1d.causal_conv1d_interface import causal_conv1d_cuda as _jm_causal_conv1d_cuda
    except ImportError:
        _jm_causal_conv1d_cuda = None
    causal_conv1d_fwd_function = getattr(_jm_causal_conv1d_cuda, "causal_conv1d_fwd", None)
    causal_conv1d_bwd_function = getattr(_jm_causal_conv1d_cuda, "causal_conv1d_bwd", None)
    causal_conv1d_update_function = getattr(_jm_causal_conv1d_cuda, "causal_conv1d_update", None)
"""

_bridge_edits = replacing(
    CAUSAL_CONV1D_BRIDGE,
    Replace(_CONV_IMPORT, _BRIDGE.replace("\\", "\\\\")),
    Replace(r"causal_conv1d_cuda\.causal_conv1d_fwd\(", "causal_conv1d_fwd_function(", count=0, required=False),
    Replace(r"causal_conv1d_cuda\.causal_conv1d_bwd\(", "causal_conv1d_bwd_function(", count=0, required=False),
    Replace(r"assert causal_conv1d_cuda is not None", "assert causal_conv1d_fwd_function is not None",
            count=0, required=False),
)


def _bridge(path: str, text: str, ctx: Context) -> Optional[str]:
    """The edits, then a check that no direct call of the compiled module is left."""
    new = _bridge_edits(path, text, ctx)
    if new is not None and re.search(r"(?<!_jm_)causal_conv1d_cuda\.", new):
        raise UnknownContent("a call of causal_conv1d_cuda.* that the bridge does not know is left")
    return new


# ------------------------------------------------------- 2. transformers 5 generation outputs

_GENERATION_IMPORT = (r"^from transformers\.generation import GreedySearchDecoderOnlyOutput, "
                      r"SampleDecoderOnlyOutput, TextStreamer\n")
_GENERATION = _header(TRANSFORMERS5) + """\
# transformers 5 removed these two aliases of GenerateDecoderOnlyOutput.
try:
    from transformers.generation import GreedySearchDecoderOnlyOutput, SampleDecoderOnlyOutput, TextStreamer
except ImportError:
    from transformers.generation import GenerateDecoderOnlyOutput, TextStreamer
    GreedySearchDecoderOnlyOutput = SampleDecoderOnlyOutput = GenerateDecoderOnlyOutput
"""

# ---------------------------------------------------------- 5. Mamba2's D gradient (defined here, used below)

_ssd_dd = replacing(
    SSD_DD,
    Replace(r"^(\s+)dD = tl\.sum\(dout_res \* x\)\n\1tl\.store\(dD_ptr, dD\)\n",
            rf"\1dD = tl.sum(dout_res * x)\n\1tl.atomic_add(dD_ptr, dD)  # {marker(SSD_DD)}: sum the column blocks\n"),
    Replace(r"^(\s+)dD = torch\.empty\(triton\.cdiv\(chunk_size, BLOCK_SIZE_min\)",
            r"\1dD = torch.zeros(triton.cdiv(chunk_size, BLOCK_SIZE_min)"),
    # the autotuner runs the kernel once per config: the buffer is zeroed before each run (the 9
    # configs of that kernel, the only ones in the file zeroing ddt alone; any other count is unknown code)
    Replace(r"pre_hook=init_to_zero\(\[\"ddt_ptr\"\]\)\)", 'pre_hook=init_to_zero(["ddt_ptr", "dD_ptr"]))', count=9),
)

# ---------------------------------------------------------- 3. torch without torch.distributed

_DISTRIBUTED = _header(NO_DISTRIBUTED) + """\
# Some torch builds (Jetson) lack torch.distributed or parts of it. Importing mamba_ssm works there;
# a distributed feature raises a RuntimeError that names what is missing.
class _JmDistributedMissing(RuntimeError, AttributeError):
    \"\"\"A RuntimeError for whoever calls the feature; an AttributeError for hasattr/getattr probes.\"\"\"


def _jm_dist_missing(name):
    return _JmDistributedMissing(
        "mamba-ssm's distributed (tensor/sequence parallel) features need torch.distributed.%s, which this "
        "PyTorch build (%s) does not provide; use a PyTorch built with distributed support, or run "
        "without a process_group" % (name, torch.__version__))


class _JmDistributed(object):
    \"\"\"torch.distributed as mamba-ssm uses it, with the pre-1.13 collective names as fallbacks.\"\"\"

    _fallbacks = {"all_gather_into_tensor": "_all_gather_base", "reduce_scatter_tensor": "_reduce_scatter_base"}

    def __getattr__(self, name):
        if name.startswith("__"):  # introspection (copy, inspect) sees a plain object
            raise AttributeError(name)
        dist = getattr(torch, "distributed", None)
        if dist is not None and dist.is_available():
            for candidate in (name, self._fallbacks.get(name)):
                if candidate and hasattr(dist, candidate):
                    return getattr(dist, candidate)
            if name not in self._fallbacks:
                raise AttributeError("module 'torch.distributed' has no attribute %r" % name)
        raise _jm_dist_missing(name)


_jm_dist = _JmDistributed()
try:
    from torch.distributed import ProcessGroup
except ImportError:
    class ProcessGroup(object):
        \"\"\"Stands in for torch.distributed.ProcessGroup in annotations; cannot be created.\"\"\"

        def __init__(self, *args, **kwargs):
            raise _jm_dist_missing("ProcessGroup")
"""

_distributed_module = replacing(
    NO_DISTRIBUTED,
    # upstream's own aliasing of the old collective names, now done by _JmDistributed
    Replace(r'^if "(\w+)" not in dir\(torch\.distributed\):\n    torch\.distributed\.\1 = torch\.distributed\.\w+\n',
            "", count=2, required=False),
    Replace(r"\btorch\.distributed\.", "_jm_dist.", count=0),
    Replace(r"^from torch\.distributed import ProcessGroup\n", _DISTRIBUTED),
)

_distributed_generation = replacing(
    NO_DISTRIBUTED,
    Replace(r"^(\s+)if torch\.distributed\.is_initialized\(\):\n",
            rf"\1if torch.distributed.is_available() and torch.distributed.is_initialized():  # {marker(NO_DISTRIBUTED)}\n"),
)

# --------------------------------------------------------------------- 4. portable kernels

_STANDIN_IMPORT = _header(PORTABLE) + """\
# Without the compiled {module}, use jetson-mamba's portable stand-in when it is installed.
try:
    import {module}
except ModuleNotFoundError as _jm_error:
    if _jm_error.name != "{module}":
        raise
    try:
        from jetson_mamba.ops.standins import {standin} as {module}
    except ImportError:
        raise _jm_error from None
"""

# Appended to a Triton module: tensors off the GPU go to portable code. `_jm_portable(name)` finds
# jetson_mamba.ops.<name>; a local reference implementation is given directly.
_OFF_GPU = _header(PORTABLE) + """\
# Triton kernels need a GPU (and triton): calls with tensors off the GPU, or without triton, run portable code.
def _jm_off_gpu(upstream, resolve):
    import functools

    @functools.wraps(upstream)
    def route(*args, **kwargs):
        first = args[0] if args else next(iter(kwargs.values()), None)
        if not getattr(first, "is_cuda", True) or getattr(triton, "__jetson_mamba_standin__", False):
            portable = resolve(*args, **kwargs)
            if portable is not None:
                return portable(*args, **kwargs)
        return upstream(*args, **kwargs)

    return route


def _jm_portable(name):
    def resolve(*args, **kwargs):
        try:
            import jetson_mamba.ops as ops
        except ImportError:
            return None
        return getattr(ops, name, None)

    return resolve
"""

_LAYER_NORM_OFF_GPU = """

def _jm_layer_norm_ref(x, weight, bias, residual=None, x1=None, weight1=None, bias1=None, eps=1e-6,
                       dropout_p=0.0, rowscale=None, prenorm=False, residual_in_fp32=False, is_rms_norm=False,
                       return_dropout_mask=False):
    ref = rms_norm_ref if is_rms_norm else layer_norm_ref
    out = ref(x, weight, bias, residual, x1, weight1, bias1, eps, dropout_p, rowscale, prenorm, upcast=True)
    if not prenorm:
        return out
    res_dtype = torch.float32 if residual_in_fp32 else (residual.dtype if residual is not None else x.dtype)
    return tuple(out[:-1]) + (out[-1].to(res_dtype),)


def _jm_rms_norm_ref(x, weight, bias, residual=None, x1=None, weight1=None, bias1=None, eps=1e-6,
                     dropout_p=0.0, rowscale=None, prenorm=False, residual_in_fp32=False, return_dropout_mask=False):
    return _jm_layer_norm_ref(x, weight, bias, residual, x1, weight1, bias1, eps, dropout_p, rowscale, prenorm,
                              residual_in_fp32, True)


def _jm_without_dropout_mask(ref):
    def resolve(*args, **kwargs):
        return None if kwargs.get("return_dropout_mask") else ref

    return resolve


layer_norm_fn = _jm_off_gpu(layer_norm_fn, _jm_without_dropout_mask(_jm_layer_norm_ref))
rms_norm_fn = _jm_off_gpu(rms_norm_fn, _jm_without_dropout_mask(_jm_rms_norm_ref))
"""

# module -> (functions that must exist at top level, code appended after _OFF_GPU)
_OFF_GPU_ROUTES: Dict[str, tuple] = {
    SSD_COMBINED: (("mamba_chunk_scan_combined", "mamba_split_conv1d_scan_combined"), """

mamba_chunk_scan_combined = _jm_off_gpu(mamba_chunk_scan_combined, _jm_portable("mamba_chunk_scan_combined"))
mamba_split_conv1d_scan_combined = _jm_off_gpu(mamba_split_conv1d_scan_combined,
                                               _jm_portable("mamba_split_conv1d_scan_combined"))
"""),
    LAYERNORM_GATED: (("rmsnorm_fn",), """

rmsnorm_fn = _jm_off_gpu(rmsnorm_fn, _jm_portable("rmsnorm_fn"))
"""),
    STATE_UPDATE: (("selective_state_update", "selective_state_update_ref"), """

def _jm_state_update_ref(*args, **kwargs):
    # the reference has no state_batch_indices (11th argument)
    return None if len(args) > 10 or kwargs.get("state_batch_indices") is not None else selective_state_update_ref


selective_state_update = _jm_off_gpu(selective_state_update, _jm_state_update_ref)
"""),
    LAYER_NORM: (("layer_norm_fn", "rms_norm_fn", "layer_norm_ref", "rms_norm_ref"), _LAYER_NORM_OFF_GPU),
    CAUSAL_CONV1D_VARLEN: (("causal_conv1d_varlen_states",), """

causal_conv1d_varlen_states = _jm_off_gpu(causal_conv1d_varlen_states, _jm_portable("causal_conv1d_varlen_states"))
"""),
}


def _route_off_gpu(path: str, text: str, ctx: Context) -> Optional[str]:
    functions, code = _OFF_GPU_ROUTES[path]
    present = [name for name in functions if re.search(rf"^def {name}\(", text, flags=re.M)]
    if not present:
        return None
    if len(present) != len(functions):
        missing = sorted(set(functions) - set(present))
        raise UnknownContent(f"it defines {', '.join(present)} but not {', '.join(missing)}")
    return text.rstrip("\n") + "\n\n\n" + _OFF_GPU + code


# mamba-ssm main: `try: import selective_scan_cuda / except ImportError: selective_scan_cuda = None`, and each
# Mamba-1 entry point raises "selective_scan_cuda is not installed" (`_check_selective_scan_cuda()`) on None.
_OPTIONAL_STANDIN_IMPORT = _header(PORTABLE) + """\
# Without the compiled {module}, use jetson-mamba's portable stand-in when it is installed.
try:
    import {module}
except ImportError as _jm_error:
    {module} = None
    if isinstance(_jm_error, ModuleNotFoundError) and _jm_error.name == "{module}":
        try:
            from jetson_mamba.ops.standins import {standin} as {module}
        except ImportError:
            pass
"""


def _standin_import(module: str, standin: Callable[[str], str]) -> Transform:
    """Guard `import <module>` (a compiled extension) with a fallback to a jetson-mamba stand-in: in
    the shape the file has (upstream moved the same import between these shapes)."""
    shapes = ((rf"^import {module}\n", _STANDIN_IMPORT),
              (rf"^try:\n    import {module}\nexcept ImportError:\n    {module} = None\n", _OPTIONAL_STANDIN_IMPORT))

    def transform(path: str, text: str, ctx: Context) -> Optional[str]:
        for shape, template in shapes:
            block = template.format(module=module, standin=standin(text))
            new = replacing(PORTABLE, Replace(shape, block.replace("\\", "\\\\")))(path, text, ctx)
            if new is not None:
                return new
        return None

    return transform


def _causal_conv1d_standin(text: str) -> str:
    """The stand-in matching how this file calls the compiled module (returning = pre-1.5.1 style)."""
    legacy = re.search(r"=\s*causal_conv1d_cuda\.causal_conv1d_fwd\(", text)
    return "causal_conv1d_cuda_legacy" if legacy else "causal_conv1d_cuda"


def _per_file(transforms: Dict[str, Transform]) -> Transform:
    def transform(path: str, text: str, ctx: Context) -> Optional[str]:
        return transforms[path](path, text, ctx)

    return transform


_PORTABLE_MAMBA: Dict[str, Transform] = {
    SELECTIVE_SCAN_INTERFACE: _standin_import("selective_scan_cuda", lambda text: "selective_scan_cuda"),
    **{path: _route_off_gpu for path in _OFF_GPU_ROUTES if path.startswith("mamba_ssm/")},
}
_CONV_STANDIN: Transform = _standin_import("causal_conv1d_cuda", _causal_conv1d_standin)
_PORTABLE_CONV: Dict[str, Transform] = {CAUSAL_CONV1D_CPP: _CONV_STANDIN, CAUSAL_CONV1D_INTERFACE: _CONV_STANDIN,
                                        CAUSAL_CONV1D_VARLEN: _route_off_gpu}

# ---------------------------------------------------------------- 10. traceable conv1d

_CONV_FUNCTIONS = ("causal_conv1d_fwd_function", "causal_conv1d_bwd_function", "causal_conv1d_update_function")
_TRACEABLE = _header(TRACEABLE_CONV) + """\
# While torch.compile / torch.export trace, the custom ops above are refused for a non-contiguous `out`
# (Mamba's channel-last conv input): jetson-mamba's stand-in of the same calling convention runs the call
# through functional custom ops instead (the compiled kernel, when installed, still does the work).
def _jm_traceable(upstream, name):
    import functools

    compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    if compiling is None:  # torch < 2.3: nothing to route (jetson-mamba's custom ops need 2.4)
        return upstream

    @functools.wraps(upstream)
    def route(*args, **kwargs):
        if compiling():
            try:
                from jetson_mamba.ops import _library
                from jetson_mamba.ops.standins import causal_conv1d_cuda_legacy as ours
            except ImportError:
                return upstream(*args, **kwargs)
            if _library.ENABLED:
                return getattr(ours, name)(*args, **kwargs)
        return upstream(*args, **kwargs)

    return route


{routes}
"""


def _traceable_conv(path: str, text: str, ctx: Context) -> Optional[str]:
    """Route cpp_functions' three functions (causal-conv1d >= 1.5.1) while torch.compile / export trace."""
    present = [name for name in _CONV_FUNCTIONS if re.search(rf"^def {name}\(", text, flags=re.M)]
    if not present:
        return None
    if len(present) != len(_CONV_FUNCTIONS):
        raise UnknownContent(f"it defines {', '.join(present)} but not all of {', '.join(_CONV_FUNCTIONS)}")
    routes = "\n".join(f"{name} = _jm_traceable({name}, {name[:-len('_function')]!r})" for name in _CONV_FUNCTIONS)
    return text.rstrip("\n") + "\n\n\n" + _TRACEABLE.format(routes=routes)


# ---------------------------------------------------------------- 6. fixed-B final state

_FIXED_B_STATE = Replace(
    r"^(?P<indent>[ \t]+)last_state = x\[:, :, -1, 1::2\]  # \(batch, dim, dstate\)\n",
    r"\g<0>\g<indent>" + _header(FIXED_B_STATE).rstrip("\n") + "\n"
    r"\g<indent>if B.dim() == 2 and not getattr(selective_scan_cuda, '__jetson_mamba_standin__', False):\n"
    r"\g<indent>    last_state = last_state * B  # the compiled kernel keeps a fixed B out of its states\n")

# ---------------------------------------------------------------- 7. triton optional

_TRITON_LINE = r"import triton(?:\.\w+)*(?: as \w+)?\n"
_TRITON_OPTIONAL = _header(NO_TRITON) + """\
# Without triton (some Jetson / aarch64 torch installs) this module still imports: its kernels refuse
# to launch, and jetson-mamba's portable kernels run the routed entry points.
try:
{imports}except ModuleNotFoundError as _jm_error:
    if _jm_error.name != "triton":
        raise
    try:
        from jetson_mamba.ops.standins import triton_absent as triton
    except ImportError:
        raise _jm_error from None
{aliases}"""


def _optional_triton(path: str, text: str, ctx: Context) -> Optional[str]:
    """The module's top-level `import triton...` lines, guarded (aliases like `tl` come from the stand-in)."""
    blocks = list(re.finditer(rf"^(?:{_TRITON_LINE})+", text, flags=re.M))
    if not blocks:
        return None
    if len(blocks) > 1:
        raise UnknownContent("it imports triton at the top level in more than one place")
    block = blocks[0].group(0)
    aliases = "".join(f"    {alias} = {name}\n" for name, alias in re.findall(r"^import (triton\.[\w.]+) as (\w+)$",
                                                                                 block, flags=re.M))
    new = _TRITON_OPTIONAL.format(imports="".join(f"    {line}\n" for line in block.splitlines()), aliases=aliases)
    return text[:blocks[0].start()] + new + text[blocks[0].end():]


# ---------------------------------------------------------------- 8. Mamba-3's kernels imported on first use

_LAZY_KERNEL = (r"^try:\n    from (?P<module>mamba_ssm\.ops\.(?:tilelang|cute)\.[\w.]+) import (?P<name>\w+)"
                r"(?: as (?P<alias>\w+))?\nexcept ImportError:[ \t]*\n    (?P<bound>\w+) = None\n")
_LAZY_LOADER = _header(MAMBA3_LAZY) + """\
# Mamba-3's TileLang and CuTe-DSL kernels are imported on first use: their dependencies (tilelang,
# apache-tvm-ffi, quack-kernels, nvidia-cutlass-dsl) may be missing or fail with errors other than
# ImportError (apache-tvm-ffi 0.1.12: AttributeError), which must not break Mamba-1/2.
class _JmLazyKernel(object):
    def __init__(self, module, name):
        self._module, self._name, self._kernel = module, name, None

    def load(self, hint="Mamba-3 kernel unavailable"):
        if self._kernel is None:
            import importlib

            try:
                self._kernel = getattr(importlib.import_module(self._module), self._name)
            except Exception as error:
                raise ImportError("%s: importing %s.%s failed with %s: %s (`jetson-mamba doctor` says why and "
                                  "how to fix it)" % (hint, self._module, self._name, type(error).__name__, error)
                                  ) from error
        return self._kernel

    def __call__(self, *args, **kwargs):
        return self.load()(*args, **kwargs)


"""


def _lazy_mamba3(path: str, text: str, ctx: Context) -> Optional[str]:
    """Each `try: from mamba_ssm.ops.<tilelang|cute>... import k / except ImportError: k = None` becomes a lazy
    kernel; `assert k is not None, msg` becomes `k.load(msg)` (imports it then, the cause in the error)."""
    found = list(re.finditer(_LAZY_KERNEL, text, flags=re.M))
    if not found:
        return None
    names = []
    for match in found:
        bound = match.group("alias") or match.group("name")
        if bound != match.group("bound"):
            raise UnknownContent(f"it binds {bound} but sets {match.group('bound')} to None on ImportError")
        names.append(bound)
    for match in reversed(found):
        lazy = f'{match.group("bound")} = _JmLazyKernel("{match.group("module")}", "{match.group("name")}")\n'
        text = text[:match.start()] + lazy + text[match.end():]
    text = text[:found[0].start()] + _LAZY_LOADER + text[found[0].start():]
    return re.sub(rf"^(\s+)assert ({'|'.join(names)}) is not None, (.+)$", r"\1\2.load(\3)", text, flags=re.M)


# ---------------------------------------------------------------- 9. annotations Python 3.9 can evaluate

_TENSOR_OR_NONE = r"\btorch\.Tensor \| None\b"
_OPTIONAL_IMPORT = _header(PY39_ANNOTATIONS) + """\
# Python < 3.10 evaluates these annotations at def time and has no `X | None` for classes.
from typing import Optional
"""


def _optional_annotations(path: str, text: str, ctx: Context) -> Optional[str]:
    """Every `torch.Tensor | None` becomes `Optional[torch.Tensor]`, imported before the module's `import torch`."""
    if not re.search(_TENSOR_OR_NONE, text) or re.search(r"^from __future__ import annotations$", text, flags=re.M):
        return None
    found = list(re.finditer(r"^import torch\n", text, flags=re.M))
    if len(found) != 1:
        raise UnknownContent(f"expected one top-level `import torch`, found {len(found)}")
    text = text[:found[0].start()] + _OPTIONAL_IMPORT + text[found[0].start():]
    return re.sub(_TENSOR_OR_NONE, "Optional[torch.Tensor]", text)


_RETURN_UNION = r"^(?P<head>\)|def [^\n]*\)) -> (?P<annotation>[^\"'\n]* \| [^\"'\n]*):(?P<tail>[ \t]*)$"


def _quoted_return_unions(path: str, text: str, ctx: Context) -> Optional[str]:
    """Each `) -> X | Y:` return annotation becomes `) -> "X | Y":`, the marker above the first such function."""
    found = list(re.finditer(_RETURN_UNION, text, flags=re.M))
    if not found or re.search(r"^from __future__ import annotations$", text, flags=re.M):
        return None
    defs = [m.start() for m in re.finditer(r"^def ", text[:found[0].start()], flags=re.M)]
    first = defs[-1] if defs else found[0].start()
    text = re.sub(_RETURN_UNION, r'\g<head> -> "\g<annotation>":\g<tail>', text, flags=re.M)
    return text[:first] + _header(PY39_ANNOTATIONS) + text[first:]


RUNTIME_PATCHES = (
    Patch(
        name=CAUSAL_CONV1D_BRIDGE,
        distribution="mamba-ssm",
        summary="mamba-ssm's fused paths call causal-conv1d through cpp_functions (>= 1.5.1) or the old compiled "
                "functions (< 1.5.1), whichever is installed; upstream 2.2.4 fails with >= 1.5.1 "
                "(incompatible function arguments) and >= 2.2.5 loses the fused path with < 1.5.1",
        files=(SELECTIVE_SCAN_INTERFACE, SSD_COMBINED),
        transform=_bridge,
        not_needed="this file does not call causal-conv1d's compiled functions",
    ),
    Patch(
        name=TRANSFORMERS5,
        distribution="mamba-ssm",
        summary="import mamba_ssm works with transformers 4 and 5 (GreedySearch/SampleDecoderOnlyOutput were "
                "removed in 5; generate() returns GenerateDecoderOnlyOutput, which they aliased)",
        files=(GENERATION,),
        transform=replacing(TRANSFORMERS5, Replace(_GENERATION_IMPORT, _GENERATION)),
        not_needed="this version already imports GenerateDecoderOnlyOutput",
    ),
    Patch(
        name=NO_DISTRIBUTED,
        distribution="mamba-ssm",
        summary="import mamba_ssm works on torch builds without torch.distributed (or without ProcessGroup / "
                "all_gather_into_tensor / reduce_scatter_tensor); distributed features raise a clear RuntimeError",
        files=(DISTRIBUTED_UTILS, TENSOR_PARALLEL, GENERATION),
        transform=_per_file({DISTRIBUTED_UTILS: _distributed_module, TENSOR_PARALLEL: _distributed_module,
                             GENERATION: _distributed_generation}),
        not_needed="this file does not use torch.distributed in a way that breaks without it",
    ),
    Patch(
        name=PORTABLE,
        distribution="mamba-ssm",
        summary="without the compiled selective_scan_cuda, and for Triton ops on tensors off the GPU, mamba-ssm "
                "runs jetson-mamba's portable kernels (a compiled extension, when present, always wins)",
        files=tuple(_PORTABLE_MAMBA),
        transform=_per_file(_PORTABLE_MAMBA),
        not_needed="this file has no compiled-extension import or Triton entry point to route",
    ),
    Patch(
        name=SSD_DD,
        distribution="mamba-ssm",
        summary="Mamba2's D gradient is summed over every column block (mamba-ssm < 2.3 kept one block's "
                "partial sum when the autotuner chose BLOCK_SIZE_N < headdim: a silently wrong gradient)",
        files=(SSD_COMBINED,),
        transform=_ssd_dd,
        not_needed="this version sums D's gradient itself (mamba-ssm >= 2.3)",
    ),
    Patch(
        name=FIXED_B_STATE,
        distribution="mamba-ssm",
        summary="selective_scan_fn's final state with a fixed (dim, dstate) B is right with the compiled kernel "
                "(its stored states lack B's factor: upstream returned them as they are)",
        files=(SELECTIVE_SCAN_INTERFACE,),
        transform=replacing(FIXED_B_STATE, _FIXED_B_STATE),
        not_needed="this version does not read the final state from the kernel's chunk states",
    ),
    Patch(
        name=NO_TRITON,
        distribution="mamba-ssm",
        summary="import mamba_ssm works without triton: its Triton modules import a stand-in whose kernels refuse "
                "to launch, and the routed entry points run jetson-mamba's portable kernels",
        files=TRITON_MODULES,
        transform=_optional_triton,
        not_needed="this file does not import triton at the top level",
    ),
    Patch(
        name=MAMBA3_LAZY,
        distribution="mamba-ssm",
        summary="Mamba-3's TileLang / CuTe-DSL kernels are imported on first use, so missing or crashing "
                "dependencies (tilelang, apache-tvm-ffi, quack-kernels, nvidia-cutlass-dsl) cannot break "
                "import mamba_ssm for Mamba-1/2",
        files=(MAMBA3,),
        transform=_lazy_mamba3,
        not_needed="this version imports no Mamba-3 kernel at import time",
    ),
    Patch(
        name=PORTABLE,
        distribution="causal-conv1d",
        summary="without the compiled causal_conv1d_cuda, causal-conv1d uses jetson-mamba's stand-in with the "
                "same calling convention (a compiled extension, when present, always wins); its Triton "
                "causal_conv1d_varlen_states (Mamba2's varlen prefill) runs portable code off the GPU",
        files=tuple(_PORTABLE_CONV),
        transform=_per_file(_PORTABLE_CONV),
        not_needed="this file does not import the compiled causal_conv1d_cuda nor define a Triton entry point",
    ),
    Patch(
        name=NO_TRITON,
        distribution="causal-conv1d",
        summary="import causal_conv1d.causal_conv1d_varlen works without triton (Mamba2 imports it): its kernel "
                "refuses to launch, and the routed entry point runs jetson-mamba's portable code",
        files=(CAUSAL_CONV1D_VARLEN,),
        transform=_optional_triton,
        not_needed="this file does not import triton at the top level",
    ),
    Patch(
        name=PY39_ANNOTATIONS,
        distribution="mamba-ssm",
        summary="import mamba_ssm works on Python 3.9: Mamba-3's angle_dt_fwd return annotation `Tensor | Tuple[...]`, "
                "evaluated at def time, is quoted",
        files=(ANGLE_DT,),
        transform=_quoted_return_unions,
        not_needed="this file has no `X | Y` return annotation evaluated at run time",
    ),
    Patch(
        name=PY39_ANNOTATIONS,
        distribution="causal-conv1d",
        summary="import causal_conv1d (and so mamba_ssm) works on Python 3.9: cpp_functions' `torch.Tensor | None` "
                "annotations, evaluated at def time and read by torch.library.custom_op, become Optional[...]",
        files=(CAUSAL_CONV1D_CPP,),
        transform=_optional_annotations,
        not_needed="this file has no `torch.Tensor | None` annotation evaluated at run time",
    ),
    Patch(
        name=TRACEABLE_CONV,
        distribution="causal-conv1d",
        summary="torch.compile(fullgraph=True) and torch.export go through causal-conv1d >= 1.5.1 on Mamba's "
                "channel-last conv input (its custom ops' non-contiguous `out` buffers are refused while tracing: "
                "jetson-mamba's functional custom ops run the call instead)",
        files=(CAUSAL_CONV1D_CPP,),
        transform=_traceable_conv,
        not_needed="this version has no cpp_functions custom ops (causal-conv1d < 1.5.1)",
    ),
)


def apply_to_tree(root: Path, patches: Sequence[Patch] = RUNTIME_PATCHES, options: Optional[Mapping[str, Any]] = None,
                  dry_run: bool = False) -> PatchPlan:
    """Apply the runtime patches (or `patches`) to an unpacked sdist, so a wheel built from it needs none.

    Idempotent; `registry.revert(root)` undoes it byte-exactly. Returns the plan (its changes were
    written unless `dry_run`).
    """
    plan = patch_plan([tree_target(root)], patches, TREE, options=options)
    if not dry_run:
        apply_plan(plan)
    return plan
