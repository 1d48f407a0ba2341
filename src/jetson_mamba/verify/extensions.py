"""Adapters from the compiled extensions' own calling conventions to the backend contract.

verify checks `selective_scan_cuda`, `causal_conv1d_cuda` (output-buffer style since 1.5.1, returning
style before) and VMamba's `selective_scan_cuda_core` exactly as their callers use them, including
the in-place contracts: `selective_scan_cuda.bwd` must write dz into the caller's buffer, and the
new `causal_conv1d_cuda` fills the out/dx buffers it is given. Buffers are pre-filled with NaN, so an
unwritten one fails the check. The same adapters check jetson-mamba's stand-ins for these modules.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, FrozenSet, List, Optional, Tuple

from jetson_mamba.ops._compiled import is_standin
from jetson_mamba.ops.selective_scan.cuda import X_CHUNK, true_chunk_states
from jetson_mamba.verify.cases import ConvCase, ScanCase


def _nan_like(t: Any, shape: Optional[Tuple[int, ...]] = None) -> Any:
    """A NaN-filled buffer like `t` (same strides, so channel-last stays channel-last), or of `shape`."""
    import torch

    if shape is None:
        return torch.empty_like(t).fill_(float("nan"))
    return torch.full(shape, float("nan"), device=t.device, dtype=t.dtype)


def _grouped(BC: Any) -> Any:
    """Variable B/C (batch, N, L) as one group (batch, 1, N, L), as mamba's selective_scan_fn passes it."""
    return BC.unsqueeze(1) if BC.dim() == 3 else BC


class MambaScanAdapter:
    """mamba-ssm's `selective_scan_cuda.fwd/bwd`. The compiled kernel's states with a fixed B get their B
    factor back, as the cuda backend does (the kernel leaves it out: `ops.selective_scan.cuda.true_chunk_states`);
    jetson-mamba's stand-in stores the true states, which mamba_ssm then returns as they are."""

    OFFERS: FrozenSet[str] = frozenset({"selective_scan_forward_x"})  # optional functions (ops.backend.CONTRACTS)

    def __init__(self, ext: ModuleType) -> None:
        self.ext = ext

    def supports(self, case: ScanCase) -> Optional[str]:
        return None

    def _fwd(self, u: Any, delta: Any, A: Any, B: Any, C: Any, D: Any, z: Any, delta_bias: Any,
             softplus: bool) -> Tuple[Any, Any, List[Any]]:
        out, x, *rest = self.ext.fwd(u, delta, A, _grouped(B), _grouped(C), D, z, delta_bias, softplus)
        return out, x, rest

    def selective_scan_forward(self, u: Any, delta: Any, A: Any, B: Any, C: Any, D: Any = None, z: Any = None,
                               delta_bias: Any = None, delta_softplus: bool = False) -> Tuple[Any, Any, Any]:
        out, out_z, x = self.selective_scan_forward_x(u, delta, A, B, C, D, z, delta_bias, delta_softplus, X_CHUNK)
        return out, out_z, x[:, :, -1, 1::2]

    def selective_scan_forward_x(self, u: Any, delta: Any, A: Any, B: Any, C: Any, D: Any, z: Any, delta_bias: Any,
                                 delta_softplus: bool, every: int) -> Tuple[Any, Any, Any]:
        """The module's own x (its states every 2048 steps), as mamba_ssm and the backward receive it."""
        if every != X_CHUNK:
            raise ValueError(f"selective_scan_cuda keeps its states every {X_CHUNK} steps, not every {every}")
        out, x, rest = self._fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
        return out, rest[0] if z is not None else None, x if is_standin(self.ext) else true_chunk_states(x, B)

    def selective_scan_backward(self, u: Any, delta: Any, A: Any, B: Any, C: Any, D: Any, z: Any,
                                delta_bias: Any, delta_softplus: bool, dout: Any) -> Tuple[Any, ...]:
        out, x, _rest = self._fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
        dz = _nan_like(z) if z is not None else None  # the caller's buffer, as mamba_inner_fn passes it
        du, ddelta, dA, dB, dC, dD, ddelta_bias, *_ = self.ext.bwd(
            u, delta, A, _grouped(B), _grouped(C), D, z, delta_bias, dout, x, out, dz, delta_softplus, False)
        if B.dim() == 3:
            dB = dB.squeeze(1)
        if C.dim() == 3:
            dC = dC.squeeze(1)
        return du, ddelta, dA, dB, dC, dD, ddelta_bias, dz


class VMambaCoreAdapter:
    """VMamba's `selective_scan_cuda_core` / `selective_scan_cuda_oflex` fwd/bwd (grouped B/C (batch, K, N, L),
    no z), as Mamba-YOLO calls them (oflex's extra `out_float` left at its default)."""

    nrows = 1
    OFFERS: FrozenSet[str] = frozenset()

    def __init__(self, ext: ModuleType) -> None:
        self.ext = ext

    def supports(self, case: ScanCase) -> Optional[str]:
        if case.bc != "grouped" or case.z:
            return "selective_scan_cuda_core takes grouped B/C and no z"
        return None

    def selective_scan_forward(self, u: Any, delta: Any, A: Any, B: Any, C: Any, D: Any = None, z: Any = None,
                               delta_bias: Any = None, delta_softplus: bool = False) -> Tuple[Any, Any, Any]:
        out, x, *_ = self.ext.fwd(u, delta, A, B, C, D, delta_bias, delta_softplus, self.nrows)
        return out, None, x[:, :, -1, 1::2]

    def selective_scan_backward(self, u: Any, delta: Any, A: Any, B: Any, C: Any, D: Any, z: Any,
                                delta_bias: Any, delta_softplus: bool, dout: Any) -> Tuple[Any, ...]:
        _out, x, *_ = self.ext.fwd(u, delta, A, B, C, D, delta_bias, delta_softplus, self.nrows)
        du, ddelta, dA, dB, dC, dD, ddelta_bias, *_ = self.ext.bwd(
            u, delta, A, B, C, D, delta_bias, dout, x, delta_softplus, self.nrows)
        return du, ddelta, dA, dB, dC, dD, ddelta_bias, None


class ConvAdapter:
    """causal-conv1d's `causal_conv1d_cuda`, output-buffer style (>= 1.5.1) or returning style (older)."""

    OFFERS: FrozenSet[str] = frozenset({"causal_conv1d_update"})

    def __init__(self, ext: ModuleType, buffers: bool) -> None:
        self.ext = ext
        self.buffers = buffers

    def supports(self, case: ConvCase) -> Optional[str]:
        return None

    def causal_conv1d_forward(self, x: Any, weight: Any, bias: Any, seq_idx: Any, initial_states: Any,
                              return_final_states: bool, silu: bool) -> Tuple[Any, Any]:
        batch, dim = x.shape[:2]
        width = weight.shape[-1]
        final = _nan_like(x, (batch, width - 1, dim)).transpose(1, 2) if return_final_states else None
        if not self.buffers:
            return self.ext.causal_conv1d_fwd(x, weight, bias, seq_idx, initial_states, final, silu), final
        out = _nan_like(x)
        self.ext.causal_conv1d_fwd(x, weight, bias, seq_idx, initial_states, out, final, silu)
        return out, final

    def causal_conv1d_backward(self, x: Any, weight: Any, bias: Any, dout: Any, seq_idx: Any,
                               initial_states: Any, dfinal_states: Any, silu: bool) -> Tuple[Any, ...]:
        """As causal-conv1d's CausalConv1dFn.backward calls it: dout as autograd gives it (copied only when
        neither its channel nor its time stride is 1); the old API gets dx=None, the new one a dx from
        empty_like(x) (dense: not x's strides when x is a slice), zeroed fp32 dweight/dbias and a
        (batch, width-1, dim)-transposed dinitial_states."""
        import torch

        batch, dim = x.shape[:2]
        width = weight.shape[-1]
        if dout.stride(2) != 1 and dout.stride(1) != 1:
            dout = dout.contiguous()
        if not self.buffers:
            dx, dweight, dbias, dinit = self.ext.causal_conv1d_bwd(
                x, weight, bias, dout, seq_idx, initial_states, dfinal_states, None, initial_states is not None, silu)
            return dx, dweight, dbias, dinit
        dx = _nan_like(x)
        dweight = torch.zeros_like(weight, dtype=torch.float32)
        dbias = torch.zeros_like(bias, dtype=torch.float32) if bias is not None else None
        dinit = _nan_like(x, (batch, width - 1, dim)).transpose(1, 2) if initial_states is not None else None
        self.ext.causal_conv1d_bwd(x, weight, bias, dout, seq_idx, initial_states, dfinal_states, dx, dweight,
                                   dbias, dinit, silu)
        return dx, dweight.to(weight.dtype), None if dbias is None else dbias.to(bias.dtype), dinit

    def causal_conv1d_update(self, x: Any, conv_state: Any, weight: Any, bias: Any, silu: bool,
                             cache_seqlens: Any, conv_state_indices: Any) -> Any:
        if not self.buffers:
            return self.ext.causal_conv1d_update(x, conv_state, weight, bias, silu, cache_seqlens)
        out = _nan_like(x)
        self.ext.causal_conv1d_update(x, conv_state, weight, bias, out, silu, cache_seqlens, conv_state_indices)
        return out


def conv_uses_buffers(ext: ModuleType) -> bool:
    """Whether this causal_conv1d_cuda takes output buffers: its fwd has 8 parameters (7 in the old API).

    Python stand-ins have a signature; a compiled pybind function names its arguments arg0..argN
    in its docstring; failing both, causal-conv1d >= 1.5.1 means buffers.
    """
    import inspect

    try:
        return len(inspect.signature(ext.causal_conv1d_fwd).parameters) >= 8
    except (TypeError, ValueError):
        pass
    doc = (getattr(ext.causal_conv1d_fwd, "__doc__", None) or "").split("\n")[0]
    if "arg7" in doc:
        return True
    if "arg6" in doc:
        return False
    from importlib.metadata import PackageNotFoundError, version

    from packaging.version import Version

    try:
        return Version(version("causal-conv1d")) >= Version("1.5.1")
    except PackageNotFoundError:
        return True


def import_module(name: str) -> Tuple[Optional[ModuleType], Optional[str]]:
    """The module, or why it cannot be imported (absent vs broken, with the error)."""
    try:
        import torch  # noqa: F401  (compiled extensions need torch's libraries loaded first)

        return importlib.import_module(name), None
    except ModuleNotFoundError as exc:
        if exc.name == name:
            return None, "not installed"
        return None, f"import fails: {exc}"
    except Exception as exc:  # undefined symbols, missing libc10.so, wrong GLIBC
        return None, f"import fails: {type(exc).__name__}: {exc}"
