"""The naive references (ops/<op>/naive.py) packaged as a backend module with the kernel contract.

Whole blocks (Mamba-YOLO's SS2D, Mamba layers) call the public ops, which dispatch to a backend.
To compute a block's float64 reference without trusting any backend under test, verify registers
this module for the duration (`reference_backend()`) and forces it. Backward runs autograd through
the naive code. Slow (a Python loop over time), so only small shapes go through it.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional, Tuple

NAME = "float64-reference"


def is_available(device: Any, dtype: Any) -> Optional[str]:
    return None  # plain torch: any device, any float dtype


def _scan_parts(u: Any, delta: Any, A: Any, B: Any, C: Any, D: Any, z: Any, delta_bias: Any,
                delta_softplus: bool) -> Tuple[Any, Any, Any]:
    import torch.nn.functional as F

    from jetson_mamba.ops.selective_scan.naive import selective_scan_ref

    out, last = selective_scan_ref(u, delta, A, B, C, D, None, delta_bias, delta_softplus, return_last_state=True)
    out_z = None if z is None else (out.to(last.dtype) * F.silu(z.to(last.dtype))).to(u.dtype)
    return out, out_z, last


def selective_scan_forward(u: Any, delta: Any, A: Any, B: Any, C: Any, D: Any = None, z: Any = None,
                           delta_bias: Any = None, delta_softplus: bool = False) -> Tuple[Any, Any, Any]:
    import torch

    with torch.no_grad():
        out, out_z, last = _scan_parts(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return out, out_z, last.float() if last.dtype != torch.float64 else last


def _autograd_grads(function: Any, inputs: Tuple[Any, ...], seeds: Tuple[Any, ...]) -> Tuple[Any, ...]:
    """Gradients of sum(output_i * seed_i) w.r.t. each input (None for None inputs)."""
    import torch

    with torch.enable_grad():
        leaves = tuple(None if t is None else t.detach().requires_grad_() for t in inputs)
        outputs = function(*leaves)
        loss = sum((o.to(torch.float64) * s.to(torch.float64)).sum() for o, s in zip(outputs, seeds)
                   if o is not None and s is not None)
        wanted = [t for t in leaves if t is not None]
        grads = iter(torch.autograd.grad(loss, wanted, allow_unused=True))
    result = []
    for leaf in leaves:
        grad = next(grads) if leaf is not None else None
        result.append(None if leaf is None else (torch.zeros_like(leaf) if grad is None else grad.to(leaf.dtype)))
    return tuple(result)


def selective_scan_backward(u: Any, delta: Any, A: Any, B: Any, C: Any, D: Any, z: Any, delta_bias: Any,
                            delta_softplus: bool, dout: Any) -> Tuple[Any, ...]:
    def run(u: Any, delta: Any, A: Any, B: Any, C: Any, D: Any, delta_bias: Any, z: Any) -> Tuple[Any]:
        out, out_z, _ = _scan_parts(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
        return (out if z is None else out_z,)

    return _autograd_grads(run, (u, delta, A, B, C, D, delta_bias, z), (dout,))


def causal_conv1d_forward(x: Any, weight: Any, bias: Any, seq_idx: Any, initial_states: Any,
                          return_final_states: bool, silu: bool) -> Tuple[Any, Any]:
    import torch

    from jetson_mamba.ops.causal_conv1d.naive import causal_conv1d_ref

    with torch.no_grad():
        result = causal_conv1d_ref(x, weight, bias, initial_states, return_final_states,
                                   activation="silu" if silu else None, seq_idx=seq_idx)
    return result if return_final_states else (result, None)


def causal_conv1d_backward(x: Any, weight: Any, bias: Any, dout: Any, seq_idx: Any, initial_states: Any,
                           dfinal_states: Any, silu: bool) -> Tuple[Any, ...]:
    from jetson_mamba.ops.causal_conv1d.naive import causal_conv1d_ref

    def run(x: Any, weight: Any, bias: Any, initial_states: Any) -> Tuple[Any, ...]:
        result = causal_conv1d_ref(x, weight, bias, initial_states, dfinal_states is not None,
                                   activation="silu" if silu else None, seq_idx=seq_idx)
        return result if dfinal_states is not None else (result,)

    return _autograd_grads(run, (x, weight, bias, initial_states), (dout, dfinal_states))


def causal_conv1d_update(x: Any, conv_state: Any, weight: Any, bias: Any, silu: bool, cache_seqlens: Any,
                         conv_state_indices: Any) -> Any:
    from jetson_mamba.ops.causal_conv1d.naive import causal_conv1d_update_ref

    return causal_conv1d_update_ref(x, conv_state, weight, bias, "silu" if silu else None, cache_seqlens,
                                    conv_state_indices)


@contextlib.contextmanager
def reference_backend() -> Iterator[None]:
    """Route every dispatched op through this module (forced), then restore the registry and the choice."""
    import sys

    from jetson_mamba.ops.backend import register_backend, unregister_backend, use_backend

    module = sys.modules[__name__]
    for op in ("selective_scan", "causal_conv1d"):
        register_backend(op, NAME, module, priority=0)
    try:
        with use_backend(NAME):
            yield
    finally:
        for op in ("selective_scan", "causal_conv1d"):
            unregister_backend(op, NAME)
