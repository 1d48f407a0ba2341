"""Mamba-YOLO's blocks with the original constructor arguments and state_dict keys.

Checkpoints of the original (HZAI-ZJNU/Mamba-YOLO) load with `strict=True` and compute the same
outputs (tests/models hold this to the recorded reference outputs). Differences, all fixes of the
original's defects: an even `d_conv` keeps the spatial size (asymmetric "same" padding); `d_conv`
below 2 means no depthwise conv and works; `forward_type` tags `noz`/`nozact` work; a block with
`ssm_ratio <= 0` skips its SSM branch instead of failing; VisionClueMerge accepts odd sizes.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from jetson_mamba.errors import UsageError
from jetson_mamba.models.mamba_yolo.scan import K_DIRECTIONS, cross_selective_scan


def _halves(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """x.chunk(2, dim=1) with plain-int sizes: traced for ONNX, chunk's sizes become Shape arithmetic
    (a graph with non-static shapes)."""
    half = int(x.shape[1]) // 2
    first, second = x.split([half, half], dim=1)
    return first, second


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of an NCHW tensor (key `norm.*` as in the original)."""

    def __init__(self, normalized_shape: int, eps: float = 1e-6, elementwise_affine: bool = True) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(normalized_shape, eps, elementwise_affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class DropPath(nn.Module):
    """Stochastic depth per sample (what timm's DropPath does; no timm dependency)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


def _split_forward_type(forward_type: str) -> Tuple[str, bool, bool, bool]:
    """Strip VMamba's postfix tags (no32, noz, nozact) off `forward_type`; only the v2 core exists."""
    flags = []
    for tag in ("no32", "noz", "nozact"):
        present = forward_type.endswith(tag)
        if present:
            forward_type = forward_type[: -len(tag)]
        flags.append(present)
    if forward_type != "v2":
        raise UsageError(f"SS2D forward_type {forward_type!r} is not supported (only 'v2' and its tags "
                         "'no32', 'noz', 'nozact' exist in Mamba-YOLO)",
                         "use forward_type='v2' (the default), optionally with those postfixes")
    return forward_type, flags[0], flags[1], flags[2]


class SS2D(nn.Module):
    """2D selective scan: in_proj -> depthwise conv -> 4-direction selective scan -> gate -> out_proj.

    `act_layer` is accepted for signature compatibility; like the original, the activation is GELU.
    """

    def __init__(self, d_model: int = 96, d_state: Union[int, str] = 16, ssm_ratio: float = 2.0,
                 ssm_rank_ratio: float = 2.0, dt_rank: Union[int, str] = "auto",
                 act_layer: Callable[..., nn.Module] = nn.SiLU, d_conv: int = 3, conv_bias: bool = True,
                 dropout: float = 0.0, bias: bool = False, forward_type: str = "v2", **kwargs: Any) -> None:
        super().__init__()
        d_expand = int(ssm_ratio * d_model)
        d_inner = int(min(ssm_rank_ratio, ssm_ratio) * d_model) if ssm_rank_ratio > 0 else d_expand
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.d_state = math.ceil(d_model / 6) if d_state == "auto" else int(d_state)
        self.d_conv = d_conv
        self.K = K_DIRECTIONS
        _, self.disable_force32, self.disable_z, self.disable_z_act = _split_forward_type(forward_type)

        self.out_norm = nn.LayerNorm(d_inner)
        self.in_proj = nn.Conv2d(d_model, d_expand if self.disable_z else 2 * d_expand, kernel_size=1, bias=bias)
        self.act = nn.GELU()
        if d_conv > 1:
            # padding="same" pads an even kernel asymmetrically, so H and W never change.
            self.conv2d = nn.Conv2d(d_expand, d_expand, kernel_size=d_conv, groups=d_expand,
                                    bias=conv_bias, padding="same")
        self.ssm_low_rank = d_inner < d_expand
        if self.ssm_low_rank:
            self.in_rank = nn.Conv2d(d_expand, d_inner, kernel_size=1, bias=False)
            self.out_rank = nn.Linear(d_inner, d_expand, bias=False)
        projs = [nn.Linear(d_inner, self.dt_rank + 2 * self.d_state, bias=False) for _ in range(self.K)]
        self.x_proj_weight = nn.Parameter(torch.stack([p.weight for p in projs], dim=0))  # (K, R+2N, inner)
        self.out_proj = nn.Conv2d(d_expand, d_model, kernel_size=1, bias=bias)
        self.dropout = nn.Dropout(dropout) if dropout > 0.0 else nn.Identity()
        self.Ds = nn.Parameter(torch.ones(self.K * d_inner))
        # A = -exp(A_logs): S4D-real initialisation A = -(1..N), as VMamba's A_log_init.
        a_init = torch.log(torch.arange(1, self.d_state + 1, dtype=torch.float32)).repeat(self.K * d_inner, 1)
        self.A_logs = nn.Parameter(a_init)
        self.dt_projs_weight = nn.Parameter(torch.empty(self.K, d_inner, self.dt_rank))
        self.dt_projs_bias = nn.Parameter(torch.empty(self.K, d_inner))
        self._init_dt()

    def _init_dt(self, dt_min: float = 0.001, dt_max: float = 0.1, dt_floor: float = 1e-4) -> None:
        """Mamba's dt initialisation: softplus(bias) log-uniform in [dt_min, dt_max]."""
        std = self.dt_rank ** -0.5
        with torch.no_grad():
            self.dt_projs_weight.uniform_(-std, std)
            dt = torch.exp(torch.rand_like(self.dt_projs_bias) * (math.log(dt_max) - math.log(dt_min))
                           + math.log(dt_min)).clamp(min=dt_floor)
            self.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def forward(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        x = self.in_proj(x)
        z = None
        if not self.disable_z:
            x, z = _halves(x)
            if not self.disable_z_act:
                z = self.act(z)
        if self.d_conv > 1:
            x = self.conv2d(x)
        x = self.act(x)
        if self.ssm_low_rank:
            x = self.in_rank(x)
        y = cross_selective_scan(x, self.x_proj_weight, self.dt_projs_weight, self.dt_projs_bias,
                                 self.A_logs, self.Ds, self.out_norm,
                                 force_fp32=self.training and not self.disable_force32)
        if self.ssm_low_rank:
            y = self.out_rank(y)
        y = y.permute(0, 3, 1, 2)
        if z is not None:
            y = y * z
        return self.dropout(self.out_proj(y))


class RGBlock(nn.Module):
    """Residual gated MLP: 1x1 -> (depthwise 3x3 + skip, activation) * gate -> 1x1."""

    def __init__(self, in_features: int, hidden_features: Optional[int] = None,
                 out_features: Optional[int] = None, act_layer: Callable[..., nn.Module] = nn.GELU,
                 drop: float = 0.0, channels_first: bool = False) -> None:
        super().__init__()
        out_features = out_features or in_features
        hidden = int(2 * (hidden_features or in_features) / 3)
        self.fc1 = nn.Conv2d(in_features, hidden * 2, kernel_size=1)
        self.dwconv = nn.Conv2d(hidden, hidden, kernel_size=3, padding=1, groups=hidden)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(hidden, out_features, kernel_size=1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = _halves(self.fc1(x))
        x = self.drop(self.act(self.dwconv(x) + x) * gate)
        return self.drop(self.fc2(x))


class LSBlock(nn.Module):
    """Local spatial block: depthwise 3x3 -> BN -> 1x1 -> activation -> 1x1, plus the input."""

    def __init__(self, in_features: int, hidden_features: Optional[int] = None,
                 act_layer: Callable[..., nn.Module] = nn.GELU, drop: float = 0.0) -> None:
        super().__init__()
        hidden = hidden_features or in_features
        self.fc1 = nn.Conv2d(in_features, hidden, kernel_size=3, padding=1, groups=hidden)
        self.norm = nn.BatchNorm2d(hidden)
        self.fc2 = nn.Conv2d(hidden, hidden, kernel_size=1)
        self.act = act_layer()
        self.fc3 = nn.Conv2d(hidden, in_features, kernel_size=1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.fc3(self.act(self.fc2(self.norm(self.fc1(x))))))


def _ss2d_kwargs(ssm_d_state: Union[int, str], ssm_ratio: float, ssm_rank_ratio: float,
                 ssm_dt_rank: Union[int, str], ssm_act_layer: Callable[..., nn.Module], ssm_conv: int,
                 ssm_conv_bias: bool, ssm_drop_rate: float, forward_type: str) -> dict:
    """Map a block's ssm_* arguments onto SS2D's."""
    return dict(d_state=ssm_d_state, ssm_ratio=ssm_ratio, ssm_rank_ratio=ssm_rank_ratio, dt_rank=ssm_dt_rank,
                act_layer=ssm_act_layer, d_conv=ssm_conv, conv_bias=ssm_conv_bias, dropout=ssm_drop_rate,
                forward_type=forward_type)


def _conv_bn_silu(c1: int, c2: int, bias: bool) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c1, c2, kernel_size=1, bias=bias), nn.BatchNorm2d(c2), nn.SiLU())


class _MambaResidual(nn.Module):
    """Shared body of VSSBlock and XSSBlock: x + SSM(norm(LSBlock(x))), then x + MLP(norm2(x))."""

    def _build_tail(self, hidden_dim: int, drop_path: float, norm_layer: Callable[..., nn.Module],
                    mlp_ratio: float, mlp_act_layer: Callable[..., nn.Module], mlp_drop_rate: float) -> None:
        self.drop_path = DropPath(drop_path)
        self.lsblock = LSBlock(hidden_dim, hidden_dim)
        self.mlp_branch = mlp_ratio > 0
        if self.mlp_branch:
            self.norm2 = norm_layer(hidden_dim)
            self.mlp = RGBlock(hidden_dim, int(hidden_dim * mlp_ratio), act_layer=mlp_act_layer, drop=mlp_drop_rate)

    def _residual(self, x: torch.Tensor, ssm: Optional[nn.Module]) -> torch.Tensor:
        if ssm is not None:
            x = x + self.drop_path(ssm(self.norm(self.lsblock(x))))
        if self.mlp_branch:
            x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


class VSSBlock(_MambaResidual):
    """Backbone block: 1x1 conv projection, then SS2D and RGBlock residual branches."""

    def __init__(self, in_channels: int = 0, hidden_dim: int = 0, drop_path: float = 0,
                 norm_layer: Callable[..., nn.Module] = partial(LayerNorm2d, eps=1e-6),
                 ssm_d_state: Union[int, str] = 16, ssm_ratio: float = 2.0, ssm_rank_ratio: float = 2.0,
                 ssm_dt_rank: Union[int, str] = "auto", ssm_act_layer: Callable[..., nn.Module] = nn.SiLU,
                 ssm_conv: int = 3, ssm_conv_bias: bool = True, ssm_drop_rate: float = 0,
                 ssm_init: str = "v0", forward_type: str = "v2", mlp_ratio: float = 4.0,
                 mlp_act_layer: Callable[..., nn.Module] = nn.GELU, mlp_drop_rate: float = 0.0,
                 use_checkpoint: bool = False, post_norm: bool = False, **kwargs: Any) -> None:
        super().__init__()
        self.ssm_branch = ssm_ratio > 0
        self.use_checkpoint = use_checkpoint
        self.post_norm = post_norm
        self.proj_conv = _conv_bn_silu(in_channels, hidden_dim, bias=True)
        if self.ssm_branch:
            self.norm = norm_layer(hidden_dim)
            self.op = SS2D(d_model=hidden_dim, **_ss2d_kwargs(
                ssm_d_state, ssm_ratio, ssm_rank_ratio, ssm_dt_rank, ssm_act_layer, ssm_conv,
                ssm_conv_bias, ssm_drop_rate, forward_type))
        self._build_tail(hidden_dim, drop_path, norm_layer, mlp_ratio, mlp_act_layer, mlp_drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._residual(self.proj_conv(x), self.op if self.ssm_branch else None)


VSSBlock_YOLO = VSSBlock


class XSSBlock(_MambaResidual):
    """Neck block: optional 1x1 projection, then n stacked SS2D and an RGBlock residual branch."""

    def __init__(self, in_channels: int = 0, hidden_dim: int = 0, n: int = 1, mlp_ratio: float = 4.0,
                 drop_path: float = 0, norm_layer: Callable[..., nn.Module] = partial(LayerNorm2d, eps=1e-6),
                 ssm_d_state: Union[int, str] = 16, ssm_ratio: float = 2.0, ssm_rank_ratio: float = 2.0,
                 ssm_dt_rank: Union[int, str] = "auto", ssm_act_layer: Callable[..., nn.Module] = nn.SiLU,
                 ssm_conv: int = 3, ssm_conv_bias: bool = True, ssm_drop_rate: float = 0,
                 ssm_init: str = "v0", forward_type: str = "v2",
                 mlp_act_layer: Callable[..., nn.Module] = nn.GELU, mlp_drop_rate: float = 0.0,
                 use_checkpoint: bool = False, post_norm: bool = False, **kwargs: Any) -> None:
        super().__init__()
        self.in_proj = (_conv_bn_silu(in_channels, hidden_dim, bias=False)
                        if in_channels != hidden_dim else nn.Identity())
        self.hidden_dim = hidden_dim
        self.norm = norm_layer(hidden_dim)
        ss2d_kwargs = _ss2d_kwargs(ssm_d_state, ssm_ratio, ssm_rank_ratio, ssm_dt_rank, ssm_act_layer,
                                   ssm_conv, ssm_conv_bias, ssm_drop_rate, forward_type)
        self.ss2d = nn.Sequential(*(SS2D(d_model=hidden_dim, **ss2d_kwargs) for _ in range(n)))
        self._build_tail(hidden_dim, drop_path, norm_layer, mlp_ratio, mlp_act_layer, mlp_drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._residual(self.in_proj(x), self.ss2d)


class SimpleStem(nn.Module):
    """Two stride-2 convolutions: (B, inp, H, W) -> (B, embed_dim, H/4, W/4)."""

    def __init__(self, inp: int, embed_dim: int, ks: int = 3) -> None:
        super().__init__()
        self.hidden_dims = embed_dim // 2
        self.conv = nn.Sequential(
            nn.Conv2d(inp, self.hidden_dims, kernel_size=ks, stride=2, padding=ks // 2, bias=False),
            nn.BatchNorm2d(self.hidden_dims),
            nn.GELU(),
            nn.Conv2d(self.hidden_dims, embed_dim, kernel_size=ks, stride=2, padding=ks // 2, bias=False),
            nn.BatchNorm2d(embed_dim),
            nn.SiLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class VisionClueMerge(nn.Module):
    """Space-to-depth downsampling (2x2 pixels -> 4x channels) followed by a 1x1 conv, BN, SiLU."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.hidden = int(dim * 4)
        self.pw_linear = _conv_bn_silu(self.hidden, out_dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % 2 or x.shape[-1] % 2:  # odd sizes: zero-pad the last row/column
            x = F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2))
        y = torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], dim=1)
        return self.pw_linear(y)
