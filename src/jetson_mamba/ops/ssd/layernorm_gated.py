"""Gated RMSNorm, drop-in for mamba_ssm.ops.triton.layernorm_gated (Mamba2's `norm`).

Upstream's Triton kernel only runs on CUDA; this computes the same thing in PyTorch on any
device, in fp32 (fp64 for fp64 inputs), and returns x's dtype like the kernel.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from jetson_mamba.ops.ssd.validate import check, compute_dtype


def rmsnorm_fn(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    z: Optional[torch.Tensor] = None,
    eps: float = 1e-6,
    group_size: Optional[int] = None,
    norm_before_gate: bool = True,
) -> torch.Tensor:
    """RMSNorm(x) * silu(z) if norm_before_gate else RMSNorm(x * silu(z)); per group of group_size."""
    N = x.shape[-1]
    gs = N if group_size is None else group_size
    check(gs > 0 and N % gs == 0, lambda: f"group_size={group_size} does not divide the last dimension {N} of x",
          "pass a group_size that divides x.shape[-1] (Mamba2 uses d_ssm // ngroups), or None for one group")
    check(tuple(weight.shape) == (N,), lambda: f"weight has shape {tuple(weight.shape)}, expected ({N},)",
          "pass one weight per channel of x's last dimension")
    check(bias is None or tuple(bias.shape) == (N,), lambda: f"bias has shape {tuple(bias.shape) if bias is not None else None}, expected ({N},)",
          "pass one bias per channel of x's last dimension, or None")
    check(z is None or z.shape == x.shape, lambda: f"z has shape {tuple(z.shape) if z is not None else None}, x has {tuple(x.shape)}",
          "pass a gate z of exactly x's shape, or None")
    f = compute_dtype(x.dtype)
    with torch.autocast(device_type=x.device.type, enabled=False):
        xf = x.to(f)
        zf = z.to(f) if z is not None else None
        if zf is not None and not norm_before_gate:
            xf = xf * F.silu(zf)
        xg = xf.reshape(*xf.shape[:-1], N // gs, gs)
        out = (xg * torch.rsqrt(xg.square().mean(dim=-1, keepdim=True) + eps)).reshape(xf.shape) * weight.to(f)
        if bias is not None:
            out = out + bias.to(f)
        if zf is not None and norm_before_gate:
            out = out * F.silu(zf)
    return out.to(x.dtype)


class RMSNormGated(torch.nn.Module):
    """mamba_ssm.ops.triton.layernorm_gated.RMSNorm: same constructor, parameters and state_dict."""

    def __init__(
        self,
        hidden_size: int,
        eps: float = 1e-5,
        group_size: Optional[int] = None,
        norm_before_gate: bool = True,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.empty(hidden_size, device=device, dtype=dtype))
        self.register_parameter("bias", None)
        self.group_size = group_size
        self.norm_before_gate = norm_before_gate
        self.reset_parameters()

    def reset_parameters(self) -> None:
        torch.nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor, z: Optional[torch.Tensor] = None) -> torch.Tensor:
        return rmsnorm_fn(x, self.weight, self.bias, z=z, eps=self.eps, group_size=self.group_size,
                          norm_before_gate=self.norm_before_gate)

