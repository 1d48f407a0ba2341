"""Selective scan (mamba-ssm semantics) as Triton kernels: forward, and a backward that recomputes.

Layout of the work: one program per (block of BD channels, batch row) holds the fp32 state of
its channels (N x BD) and walks the sequence in chunks of T steps. Inside a chunk the linear
recurrence x_t = exp(delta_t A) x_{t-1} + delta_t B_t u_t is an associative scan over
(decay, input) pairs; the state is carried from chunk to chunk. Tiles are (T, N, BD) with the
channels last, so Triton puts the lanes on channels (and states) and each thread scans its
T steps in registers: a tile with time last put the lanes on time and cost ~13 warp shuffles
per element (measured from the SASS), the bottleneck of the first version.

The backward first runs the recurrence forward once, keeping only the state at each chunk
boundary (batch x dim x L/T x N floats, not the L x N history), then walks the chunks in reverse:
it recomputes the chunk's states from its boundary state and runs the adjoint recurrence
g_t = C_t dy_t + exp(delta_{t+1} A) g_{t+1} as a reverse scan. Gradients that sum over channels
(variable B and C) or over batch rows (A, D, delta_bias, fixed B and C) go through fp32 atomics, or, in
deterministic mode (torch.use_deterministic_algorithms), into per-program slots that the host adds up in a
fixed order: float atomics add in whatever order the programs arrive, so their sums change run to run.
"""

from __future__ import annotations

import itertools
import operator
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from jetson_mamba.errors import BackendUnavailableError
from jetson_mamba.ops import triton_utils as tu
from jetson_mamba.ops.selective_scan import triton_chunked
from jetson_mamba.ops.selective_scan.triton_kernels import _slots, _uniform
from jetson_mamba.ops.triton_utils import grid_size, triton

is_available = tu.is_available
WRITES_INTO_BUFFERS = True  # the backward takes a caller's dz buffer (standins._buffers)

if triton is not None:
    from jetson_mamba.ops.selective_scan.triton_kernels import _ssm_bwd_kernel, _ssm_fwd_kernel

# (BD, T, num_warps), the autotuner's candidates (first: used alone with JETSON_MAMBA_TRITON_AUTOTUNE=0).
# Small T and few warps keep each thread's (T x states) slab in registers; all compile for sm_87.
# BD=2 is for batch 1 with few channels (Mamba-YOLO's first stages): dim/BD programs must fill the GPU.
# (1, 16) and (1, 32): batch 1 at the LM's widths (d_inner 1536-2048, L 1024-2048) on the lab H100, 25% under the
# table's best before them (benchmarks/gpu/tune_scan_fwd.py, RESULTS.md "The scan forward's tiles at batch 1")
_FWD_CONFIGS = [(8, 8, 1), (8, 16, 1), (4, 16, 1), (16, 8, 1), (4, 8, 1), (16, 4, 1), (32, 4, 1), (64, 4, 2),
                (2, 16, 1), (2, 32, 1), (1, 16, 1), (1, 32, 1)]
_BWD_CONFIGS = [(8, 8, 1), (4, 8, 1), (16, 4, 1), (8, 4, 1), (2, 16, 1), (4, 4, 1)]
# The interpreter's tiles (triton_utils' launch plan): small up to 64 channels, wide above (one program per
# 1024 channels and batch row, 32 steps a tile: upstream's mamba_inner_fn at dim 768 in 2 programs).
_INTERPRET_CONFIG = (2, 8, 1)
_INTERPRET_WIDE = (tu.INTERPRET_WIDE_CHANNELS, 32, 1)
_T_MAX = max(t for _, t, _ in _FWD_CONFIGS + [_INTERPRET_CONFIG, _INTERPRET_WIDE])  # x's chunk ends: tile ends


def _configs(table):
    return [triton.Config({"BD": bd, "T": t}, num_warps=w) for bd, t, w in table]


def _tuned(kernel, configs, key, interpret=_INTERPRET_CONFIG, **kwargs):
    """Wrap a kernel in Triton's autotuner (one config, `interpret`, when interpreting; results cached on disk)."""
    return triton.autotune(tu.autotune_configs(configs, _configs([interpret])[0]), key=key, **tu.autotune_kwargs(),
                           **kwargs)(kernel)


# batch_class and L_class are in the kernels' signatures for this key alone. Batch: one program per
# (channel block, batch row), so batch 1 wants narrower blocks than batch 8 at the same dim. Length:
# its power-of-two class (triton_utils.next_power_of_2): keyed on the exact length, every new prompt
# length was tuned again (each candidate benchmarked, about 0.1 s apiece with Triton's defaults).
_KEY = ["dim", "L_class", "N", "G_B", "G_C", "DPG_B", "DPG_C", "batch_class"]
_KEY_VALUES = operator.itemgetter(*_KEY)
_fwd = _tuned(_ssm_fwd_kernel, _configs(_FWD_CONFIGS), _KEY) if triton is not None else None
_bwd = _tuned(_ssm_bwd_kernel, _configs(_BWD_CONFIGS), _KEY,
              reset_to_zero=["dA_ptr", "dB_ptr", "dC_ptr", "dD_ptr", "dbias_ptr"]) if triton is not None else None
# the interpreter's wide variants (tu.for_channels picks them above 64 channels); None on a GPU
_fwd_wide = _tuned(_ssm_fwd_kernel, [], _KEY, _INTERPRET_WIDE) if tu.INTERPRET and triton is not None else None
_bwd_wide = _tuned(_ssm_bwd_kernel, [], _KEY, _INTERPRET_WIDE) if tu.INTERPRET and triton is not None else None
# Deterministic mode's backward: one config (the table's first, the interpreter's under it), so the channel
# block, which sizes the buffers of partial sums, is known before the launch; nothing to tune or reset.
_DET_CONFIG = _INTERPRET_CONFIG if tu.INTERPRET else _BWD_CONFIGS[0]
_bwd_det = _tuned(_ssm_bwd_kernel, _configs([_DET_CONFIG]), _KEY) if triton is not None else None


def _bc_layout(M: torch.Tensor, dim: int, N: int, name: str) -> Tuple[bool, int, int, Tuple[int, int, int, int]]:
    """(variable, groups, channels per group, strides (batch, group, state, time)) of B or C."""
    if M.dim() == 2:
        if tuple(M.shape) != (dim, N):
            raise ValueError(f"fixed {name} must have shape (dim, dstate) = ({dim}, {N}), got {tuple(M.shape)}")
        s_d, s_n = M.stride()
        return False, dim, 1, (0, s_d, s_n, 0)
    if M.dim() == 3:
        s_b, s_n, s_l = M.stride()
        return True, 1, dim, (s_b, 0, s_n, s_l)
    if M.dim() == 4:
        G = M.shape[1]
        if dim % G != 0:
            raise ValueError(f"grouped {name} has {G} groups, which does not divide dim={dim}")
        return True, G, dim // G, M.stride()
    raise ValueError(f"{name} must be (dim, dstate), (batch, dstate, L) or (batch, groups, dstate, L)")


def batch_class(batch: int) -> int:
    """The batch as the autotuner sees it: 1, 2, 4, 8 or 16 (16 and more fill any GPU alike)."""
    return min(tu.next_power_of_2(batch), 16)


def _check(u: torch.Tensor, A: torch.Tensor) -> None:
    if A.dtype.is_complex:
        raise BackendUnavailableError(
            "the Triton selective scan takes a real A; complex A is not supported",
            "use JETSON_MAMBA_BACKEND=torch (or the compiled kernel) for complex-valued models")
    reason = is_available(u.device, u.dtype)
    if reason is not None:
        raise BackendUnavailableError(f"the Triton selective scan cannot run: {reason}",
                                      "use JETSON_MAMBA_BACKEND=torch, or run on a CUDA GPU")


# A view of the backward's gradient buffer: (shape, strides, offset), as Tensor.as_strided takes them
_View = Tuple[Tuple[int, ...], Tuple[int, ...], int]
# The backward's gradient buffer of a layout (_zeroed, _cast_bc): its length, the views dB, dC, dA, dD and
# ddelta_bias (None where absent), and where dB and dC share a dtype other than fp32, the length of their
# span (cast in one pass).
_Grads = Tuple[int, Tuple[Optional[_View], ...], int]
# (shapes, strides, dtypes and optional inputs of a call) -> (a token for that key, its _common_args, the
# autotuner's key, the backward's gradient buffer): building them cost ~15 us of a scan call's host time on
# this project's 2-core CPU, the key ~2 us. The token (never reused in the process) stands for the key in
# the launch plans' keys: hashing a ~60-value key on every launch cost ~2 us. The dicts are shared: read only.
_PLANS: Dict[Tuple[Any, ...], Tuple[int, Dict[str, Any], Tuple[Any, ...], _Grads]] = {}
_PLANS_MAX = 256  # distinct call layouts remembered; the memo starts over past it
_TOKENS = itertools.count()


def _plan(u, delta, A, B, C, D, z, delta_bias) -> Tuple[int, Dict[str, Any], Tuple[Any, ...], _Grads]:
    """(a token of the key, _common_args, _launch_key, the backward's gradient buffer) of a call,
    remembered per everything they read (the key): every shape, stride and dtype of u, delta, z, A, B and
    C, and which of D, z and delta_bias are given."""
    key = (u.shape, u.stride(), u.dtype, delta.shape, delta.stride(), delta.dtype,
           None if z is None else (z.shape, z.stride()), A.shape, A.stride(), B.shape, B.stride(), B.dtype,
           C.shape, C.stride(), C.dtype, D is None, delta_bias is None)
    plan = _PLANS.get(key)
    if plan is None:
        args = _common_args(u, delta, A, B, C, D, z, delta_bias)
        if len(_PLANS) >= _PLANS_MAX:
            _PLANS.clear()
        vec = ((args["dim"],), (1,))
        layouts = ((B.shape, B.stride()), (C.shape, C.stride()), (A.shape, A.stride()),
                   vec if D is not None else None, vec if delta_bias is not None else None)
        offsets = _offsets(layouts)
        views = tuple(None if lay is None else (tuple(lay[0]), tuple(lay[1]), at) for lay, at in zip(layouts, offsets))
        both = offsets[2] if B.dtype is C.dtype and B.dtype is not torch.float32 else 0
        plan = _PLANS[key] = (next(_TOKENS), args, _launch_key(args, u, delta, B, C), (offsets[-1], views, both))
    return plan


def _common_args(u, delta, A, B, C, D, z, delta_bias):
    """Kernel arguments shared by forward and backward, plus the B/C layouts (once per layout: _plan)."""
    batch, dim, L = u.shape
    N = A.shape[1]
    if delta.shape != u.shape or (z is not None and z.shape != u.shape):
        raise ValueError(f"u, delta and z must all have shape {tuple(u.shape)}")
    b_var, g_b, dpg_b, sb = _bc_layout(B, dim, N, "B")
    c_var, g_c, dpg_c, sc = _bc_layout(C, dim, N, "C")
    us, ds, As = u.stride(), delta.stride(), A.stride()
    zs = z.stride() if z is not None else (0, 0, 0)
    return dict(
        dim=dim, L=L, N=N, G_B=g_b, G_C=g_c, DPG_B=dpg_b, DPG_C=dpg_c, batch_class=batch_class(batch),
        L_class=tu.next_power_of_2(L),
        s_ub=us[0], s_ud=us[1], s_ul=us[2], s_db=ds[0], s_dd=ds[1], s_dl=ds[2],
        s_zb=zs[0], s_zd=zs[1], s_zl=zs[2], s_ad=As[0], s_an=As[1],
        s_Bb=sb[0], s_Bg=sb[1], s_Bn=sb[2], s_Bl=sb[3], s_Cb=sc[0], s_Cg=sc[1], s_Cn=sc[2], s_Cl=sc[3],
        B_VAR=b_var, C_VAR=c_var, HAS_D=D is not None, HAS_Z=z is not None,
        HAS_BIAS=delta_bias is not None, BN=max(tu.next_power_of_2(N), 2),
    )


def _launch_key(args: Dict[str, Any], u: torch.Tensor, delta: torch.Tensor, B: torch.Tensor,
                C: torch.Tensor) -> Tuple[Any, ...]:
    """What the autotuner keys a scan launch on: _KEY's values and the inputs' dtypes (one itemgetter call:
    a generator over the keys cost ~4 us per launch here)."""
    return (*_KEY_VALUES(args), u.dtype, delta.dtype, B.dtype, C.dtype)


def selective_scan_forward(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
    delta_bias: Optional[torch.Tensor] = None, delta_softplus: bool = False,
) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
    """(out = y + D u, out_z = out * silu(z) or None, last state fp32 (batch, dim, dstate))."""
    out, out_z, last, _ = _forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, every=0)
    return out, out_z, last


def selective_scan_forward_x(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: Optional[torch.Tensor], z: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor],
    delta_softplus: bool, every: int,
) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
    """(out, out_z or None, x): x (batch, dim, ceil(L / every), 2 * dstate) fp32 as the compiled kernels
    keep it, written by the same kernel: at each chunk's end the decay product from the start
    ([..., 0::2]) and the state ([..., 1::2]). `every`: a multiple of the largest tile (32 steps)."""
    if every <= 0 or every % _T_MAX:
        raise ValueError(f"x keeps a state every {every} steps; the Triton scan needs a multiple of {_T_MAX}")
    out, out_z, _, x = _forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, every)
    assert x is not None
    return out, out_z, x


def _forward(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: Optional[torch.Tensor], z: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor],
    delta_softplus: bool, every: int,
) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor, Optional[torch.Tensor]]:
    """(out, out_z, last state, x or None for every=0)."""
    _check(u, A)
    batch, dim, L = u.shape
    N = A.shape[1]
    token, args, launch_key, _ = _plan(u, delta, A, B, C, D, z, delta_bias)

    chunk = triton_chunked.chunk_for(u, forward=True)  # small batch x dim, in a CUDA graph: the sequence-parallel path
    if chunk and every % chunk == 0:
        return triton_chunked.forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, args, chunk, every, token)
    out = torch.empty_like(u, memory_format=torch.contiguous_format)  # (batch, dim, L) in u's dtype, contiguous
    out_z = torch.empty_like(out) if z is not None else None
    last = torch.empty((batch, dim, N), device=u.device, dtype=torch.float32)
    x = torch.empty((batch, dim, grid_size(L, every), 2 * N), device=u.device, dtype=torch.float32) if every else None
    dummy = out
    tensors = (u, delta, A, B, C, D if D is not None else dummy, z if z is not None else dummy,
               delta_bias if delta_bias is not None else dummy, out, out_z if out_z is not None else dummy, last,
               x if x is not None else last)

    def make() -> Tuple[Any, Any, Tuple[Any, ...], Dict[str, Any]]:
        xs = x.stride() if x is not None else (0, 0, 0)
        return launch_key, lambda meta: (grid_size(dim, meta["BD"]), batch), (), dict(
            X_EVERY=every or 1, s_xb=xs[0], s_xd=xs[1], s_xc=xs[2], HAS_X=x is not None, s_ob=out.stride(0),
            s_od=out.stride(1), s_ol=out.stride(2), SOFTPLUS=bool(delta_softplus), **args)

    # out, out_z, last and x are new and contiguous: their strides follow from u's shape, N and every, their
    # dtypes from the key (checked: the 8 inputs' dtypes and alignment)
    tu.launch_planned(_FWD_LAUNCHES, (token, every, bool(delta_softplus)), tu.for_channels(dim, _fwd, _fwd_wide),
                      tensors, make, checked=8)
    return out, out_z, last, x


_FWD_LAUNCHES: tu.Plans = {}
_BWD_LAUNCHES: tu.Plans = {}


def selective_scan_backward(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: Optional[torch.Tensor], z: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor],
    delta_softplus: bool, dout: torch.Tensor, dz: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
           Optional[torch.Tensor], Optional[torch.Tensor], Optional[torch.Tensor]]:
    """(du, ddelta, dA, dB, dC, dD, ddelta_bias, dz); dout is the gradient of out_z (with z) or out.
    `dz`: a caller's buffer (any strides) that the kernel writes dz into, and returns."""
    return _backward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, dout, False, dz)[0]


def selective_scan_backward_out_z(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: Optional[torch.Tensor], z: torch.Tensor, delta_bias: Optional[torch.Tensor],
    delta_softplus: bool, dout: torch.Tensor, dz: Optional[torch.Tensor] = None,
) -> Tuple[Tuple[torch.Tensor, ...], torch.Tensor]:
    """(the 8 gradients of selective_scan_backward, out_z = out * silu(z)): the gated output that
    mamba_ssm's backward asks the compiled kernel to recompute (recompute_out_z), written by the
    backward kernel, which recomputes out anyway, instead of five elementwise passes afterwards."""
    grads, out_z = _backward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, dout, True, dz)
    assert out_z is not None
    return grads, out_z


def _backward(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: Optional[torch.Tensor], z: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor],
    delta_softplus: bool, dout: torch.Tensor, with_out_z: bool, dz: Optional[torch.Tensor],
) -> Tuple[Tuple[Any, ...], Optional[torch.Tensor]]:
    """(the 8 gradients, out_z or None)."""
    if with_out_z and z is None:
        raise ValueError("out_z = out * silu(z) needs z")
    _check(u, A)
    batch, dim, L = u.shape
    token, args, launch_key, grads = _plan(u, delta, A, B, C, D, z, delta_bias)
    # dout is read with its own strides (mamba_inner_fn's is a transposed matmul result; a copy costs a
    # pass over B x D x L), as the compiled kernel does; only a strided time axis is copied.
    if dout.stride(2) != 1:
        dout = dout.contiguous()
    # du, ddelta and out_z take delta's layout (any strides; contiguous where delta overlaps itself), as
    # the compiled kernel's ddelta and out do: mamba_inner_fn's delta is a transposed matmul result, and
    # its backward rearranges these three to (dim, batch * L) for matmuls: views then, not copies.
    du = torch.empty_like(delta, dtype=u.dtype)
    ddelta = torch.empty_like(delta)
    out_z = torch.empty_like(delta, dtype=u.dtype) if with_out_z else None
    if z is None:
        if dz is not None:
            raise ValueError("a dz buffer was given, but there is no z")
    elif dz is None:
        dz = torch.empty_like(u, dtype=z.dtype, memory_format=torch.contiguous_format)
    elif dz.shape != u.shape or dz.dtype != z.dtype or dz.device != u.device:
        raise ValueError(f"dz must be like z: {tuple(u.shape)} {z.dtype} on {u.device}; got "
                         f"{tuple(dz.shape)} {dz.dtype} on {dz.device}")
    flat, (dB, dC, dA, dD, dbias) = _zeroed(u.device, grads)
    ckpt = torch.empty((batch, dim, grid_size(L, _smallest_tile(_bwd.configs)), args["BN"]), device=u.device,
                       dtype=torch.float32)
    dummy = du

    chunk = triton_chunked.chunk_for(u)  # small batch x dim: the sequence-parallel backward
    # deterministic mode (torch.use_deterministic_algorithms): partial sums per program instead of atomics
    det = torch.are_deterministic_algorithms_enabled()
    part = bpart = cpart = None
    if det:  # programs per channel block: per batch row (and chunk)
        part, bpart, cpart = _partials(args, batch, batch * grid_size(L, chunk) if chunk else batch, u.device)
    tensors = (
        u, delta, A, B, C, D if D is not None else dummy, z if z is not None else dummy,
        delta_bias if delta_bias is not None else dummy, dout, ckpt,
        du, ddelta, dz if dz is not None else dummy, out_z if out_z is not None else dummy, dA, dB, dC,
        dD if dD is not None else dummy, dbias if dbias is not None else dummy,
        part if part is not None else dummy, bpart if bpart is not None else dummy,
        cpart if cpart is not None else dummy)
    dzs = dz.stride() if dz is not None else (0, 0, 0)
    # with the token: everything the launch's values follow from; a caller's dz buffer may sit anywhere
    strides = (ckpt.stride(1), dout.stride(), du.stride(), dzs, dz is None or not dz.data_ptr() & 15)

    def kw() -> Dict[str, Any]:
        return dict(s_ck=strides[0], s_gb=strides[1][0], s_gd=strides[1][1], s_gl=strides[1][2],
                    s_ob=strides[2][0], s_od=strides[2][1], s_ol=strides[2][2], s_wb=dzs[0], s_wd=dzs[1],
                    s_wl=dzs[2], SOFTPLUS=bool(delta_softplus), HAS_OUTZ=with_out_z, DET=det)

    # the tensors after the first 9 inputs (u ... dout) are new, or dz (its alignment: in `strides`)
    plan_key = (token, strides, bool(delta_softplus), with_out_z, det)
    if chunk:
        triton_chunked.backward(tensors, kw(), args, chunk, plan_key, _DET_CONFIG if det else None)  # _partials'
    else:
        tu.launch_planned(
            _BWD_LAUNCHES, plan_key,
            _bwd_det if det else tu.for_channels(dim, _bwd, _bwd_wide),
            (*tensors, dummy, dummy),
            lambda: (launch_key, lambda meta: (grid_size(dim, meta["BD"]), batch), (),
                     dict(CHUNK=0, CHUNKED=False, **kw(), **args)), checked=9)
    if part is not None:
        _add_partials(args, part, bpart, cpart, dA, dB, dC, dD, dbias)
    return (du, ddelta, dA, *_cast_bc(flat, dB, dC, B, C, grads), dD, dbias, dz), out_z


_SMALLEST_TILE: List[Any] = [None, 0]  # [the configs list asked about, its smallest T]


def _smallest_tile(configs: List[Any]) -> int:
    """The smallest T of the backward's configs (it sizes the checkpoints), computed again only when the
    list is replaced (pin_autotuned_kernels): a scan over the configs on every call cost ~1 us."""
    if _SMALLEST_TILE[0] is not configs:
        _SMALLEST_TILE[:] = [configs, min(c.kwargs["T"] for c in configs)]
    return _SMALLEST_TILE[1]


def _zeroed(device: torch.device, grads: _Grads) -> Tuple[torch.Tensor, List[Optional[torch.Tensor]]]:
    """The fp32 gradient buffers the backward kernel adds into atomically, each with the (shape, strides)
    of its layout (the kernel indexes dB/dC/dA with B's/C's/A's strides), as views of one zeroed allocation:
    one fill launch instead of five (each ~2 us of GPU and ~5 us of host time). Returns the flat buffer
    too (_cast_bc casts dB and dC, laid out first and side by side, in one pass). `grads`: _plan's."""
    flat = torch.zeros(grads[0], device=device, dtype=torch.float32)
    return flat, [None if view is None else flat.as_strided(*view) for view in grads[1]]


def _offsets(layouts: Tuple[Optional[Tuple[Sequence[int], Sequence[int]]], ...]) -> Tuple[int, ...]:
    """Where each layout starts in _zeroed's buffer, then its length: each takes the elements from its
    first to its last one (as empty_strided allocates). Once per layout (_plan; the sums cost ~8 us a call)."""
    offsets = [0]
    for lay in layouts:
        offsets.append(offsets[-1] + (1 + sum((n - 1) * st for n, st in zip(*lay)) if lay and all(lay[0]) else 0))
    return tuple(offsets)


def _cast_bc(flat: torch.Tensor, dB: torch.Tensor, dC: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
             grads: _Grads) -> Tuple[torch.Tensor, torch.Tensor]:
    """dB and dC in B's and C's dtypes: one cast of their span of `flat` where they share a dtype (a Mamba
    block's bf16 B and C: one copy launch instead of two), else each on its own, none where it is fp32
    (a no-op .to costs ~1 us). The views' layouts are _plan's (dB.shape, .stride() cost ~1 us more)."""
    if grads[2]:
        both = flat[:grads[2]].to(B.dtype)
        return both.as_strided(*grads[1][0]), both.as_strided(*grads[1][1])  # type: ignore[misc]
    return (dB if B.dtype is torch.float32 else dB.to(B.dtype)), (dC if C.dtype is torch.float32 else dC.to(C.dtype))


def _partials(args: Dict[str, Any], batch: int, rows: int, device: torch.device
              ) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Deterministic mode's buffers of per-program sums: (rows, 3 N + 2, dim) for dA, fixed dB and dC, dD
    and ddelta_bias (each batch row's program of a channel block, or each (batch row, chunk)'s in the
    chunked backward, writes its own slot), and for variable B and C (batch, channel block, slot, N, L), a
    block's sums over its channels in each group it touches (chunks cover disjoint steps of it).
    Every slot the host reads is written (the channel blocks cover dim), so none needs zeroing."""
    bd, dim, N, L = _DET_CONFIG[0], args["dim"], args["N"], args["L"]
    f32 = dict(device=device, dtype=torch.float32)
    blocks = grid_size(dim, bd)
    part = torch.empty(rows, 3 * N + 2, dim, **f32)
    bc = [torch.empty(batch, blocks, _slots(args[f"G_{m}"], args[f"DPG_{m}"], bd), N, L, **f32)
          if args[f"{m}_VAR"] else None for m in "BC"]
    return part, bc[0], bc[1]


def _add_partials(args: Dict[str, Any], part: torch.Tensor, bpart: Optional[torch.Tensor],
                  cpart: Optional[torch.Tensor], dA: torch.Tensor, dB: torch.Tensor, dC: torch.Tensor,
                  dD: Optional[torch.Tensor], dbias: Optional[torch.Tensor]) -> None:
    """The gradients += the partial sums, reduced in a fixed order (torch's sum over one axis and its
    gathers are deterministic)."""
    N = args["N"]

    def rows(lo: int, hi: int) -> torch.Tensor:
        return part[:, lo:hi].sum(0)

    dA.add_(rows(0, N).t())
    for grad, bc, m, lo in ((dB, bpart, "B", N), (dC, cpart, "C", 2 * N)):
        if bc is None:
            grad.add_(rows(lo, lo + N).t())
        else:
            grad.add_(_group_sums(bc, args[f"G_{m}"], args[f"DPG_{m}"]).view_as(grad))
    if dD is not None:
        dD.add_(rows(3 * N, 3 * N + 1)[0])
    if dbias is not None:
        dbias.add_(rows(3 * N + 1, 3 * N + 2)[0])


def _group_sums(bc: torch.Tensor, groups: int, dpg: int) -> torch.Tensor:
    """(batch, groups, N, L): each group's sum of the channel blocks' partial sums (batch, block, slot, N, L),
    block by block in order. Blocks within one group: one sum over an axis; else, per step k, every group
    gathers its k-th block's slot for it (index_add_ would be the one-liner, but adds with atomics on a GPU)."""
    batch, blocks, slots, N, L = bc.shape
    bd = _DET_CONFIG[0]
    if _uniform(groups, dpg, bd):
        return bc.view(batch, groups, blocks // groups, N, L).sum(2)
    g = torch.arange(groups)
    first, last = g * dpg // bd, ((g + 1) * dpg - 1) // bd
    flat = bc.view(batch, blocks * slots, N, L)
    total = torch.zeros(batch, groups, N, L, device=bc.device, dtype=bc.dtype)
    for k in range(int((last - first).max()) + 1):
        j = torch.minimum(first + k, last)
        take = flat[:, (j * slots + g - j * bd // dpg).to(bc.device)]
        total.add_(torch.where((first + k <= last).to(bc.device)[None, :, None, None], take, 0.0))
    return total
