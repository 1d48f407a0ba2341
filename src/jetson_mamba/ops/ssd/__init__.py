"""Mamba2's SSD path in portable PyTorch: chunked scan, split-conv1d mixer, gated RMSNorm, decode step.

Drop-ins (same signatures, semantics and return values) for what mamba_ssm's Mamba2 calls from
`mamba_ssm.ops.triton.ssd_combined`, `.layernorm_gated`, `.selective_state_update` and
`causal_conv1d.causal_conv1d_varlen`: Triton kernels that need a CUDA GPU.
"""

from __future__ import annotations

from jetson_mamba.ops.ssd.combined import mamba_chunk_scan_combined, mamba_split_conv1d_scan_combined
from jetson_mamba.ops.ssd.conv_varlen import causal_conv1d_varlen_states
from jetson_mamba.ops.ssd.layernorm_gated import RMSNormGated, rmsnorm_fn
from jetson_mamba.ops.ssd.state_update import selective_state_update
from jetson_mamba.ops.ssd.validate import SSDInputError

__all__ = [
    "RMSNormGated",
    "SSDInputError",
    "causal_conv1d_varlen_states",
    "mamba_chunk_scan_combined",
    "mamba_split_conv1d_scan_combined",
    "rmsnorm_fn",
    "selective_state_update",
]
