"""Mamba kernels with upstream signatures, on whichever backend can run them here.

`selective_scan_fn`, `causal_conv1d_fn` and `causal_conv1d_update` match mamba-ssm /
causal-conv1d; each call picks a backend (compiled cuda -> triton -> torch, see `backend`)
from the tensors' device and dtype, unless one is chosen (`with use_backend("triton"):`, or
JETSON_MAMBA_BACKEND read once per process). The Mamba2 pieces (`mamba_chunk_scan_combined`,
`mamba_split_conv1d_scan_combined`, `rmsnorm_fn`) live in `jetson_mamba.ops.ssd` and are
re-exported here lazily.

Under torch.compile / torch.export the scan and the conv are custom ops (`torch.ops.jetson_mamba.*`,
see `_library`) where torch has them (>= 2.4), so the tracer sees one opaque call each; eager calls,
and every call on older torch (or with JETSON_MAMBA_CUSTOM_OPS=0), take the autograd.Functions beside each
op (`<op>/autograd.py`; a custom op's Python dispatch cost ~100 us of host time per call on this 2-core CPU, measured).
"""

from __future__ import annotations

from typing import Any

from jetson_mamba.ops.backend import (
    Backend,
    BackendInfo,
    list_backends,
    register_backend,
    select_backend,
    unregister_backend,
    use_backend,
)
from jetson_mamba.ops.causal_conv1d.autograd import (
    CausalConv1dFn,
    causal_conv1d_fn,
    causal_conv1d_update,
)
from jetson_mamba.ops.selective_scan.autograd import SelectiveScanFn, selective_scan_fn
from jetson_mamba.ops.standins import _scan as _standin_ops  # noqa: F401  (stand-ins' custom ops: see below)

# The stand-ins' custom ops (selective_scan_fwd_x / _bwd_x) register with the others at this import, so that
# an exported program that holds them loads after `import jetson_mamba.ops`.

__all__ = [
    "Backend", "BackendInfo", "list_backends", "register_backend", "select_backend", "unregister_backend",
    "use_backend",
    "selective_scan_fn", "causal_conv1d_fn", "causal_conv1d_update",
    "SelectiveScanFn", "CausalConv1dFn",
    "mamba_chunk_scan_combined", "mamba_split_conv1d_scan_combined", "rmsnorm_fn", "RMSNormGated",
    "selective_state_update", "causal_conv1d_varlen_states",
]


# Mamba2 / SSD: implemented in jetson_mamba.ops.ssd, imported on first use.
SSD_EXPORTS = ("mamba_chunk_scan_combined", "mamba_split_conv1d_scan_combined", "rmsnorm_fn", "RMSNormGated",
               "selective_state_update", "causal_conv1d_varlen_states")


def __getattr__(name: str) -> Any:
    if name in SSD_EXPORTS:
        from jetson_mamba.ops import ssd

        return getattr(ssd, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
