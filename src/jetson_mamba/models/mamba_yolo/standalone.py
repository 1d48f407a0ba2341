"""Mamba-YOLO detectors without ultralytics (for machines where ultralytics/torchvision are not installed).

`build_detector("t")` builds the same layer graph as `YOLO("mamba-yolo-t.yaml").model.model` from
the shipped YAML, with the same module names, so an ultralytics-trained state_dict loads into it
(`load_state_dict(ckpt["model"].state_dict())`). Its forward returns the Detect head's raw
per-level maps (box distribution and class logits, before DFL decoding and NMS): the whole network
cost, for latency measurement and for deployment pipelines that decode themselves.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence, Union

import torch
import torch.nn as nn

from jetson_mamba.errors import MissingDependencyError, UsageError
from jetson_mamba.models.mamba_yolo import blocks
from jetson_mamba.models.mamba_yolo.integration import config_path

REG_MAX = 16


class Conv(nn.Module):
    """ultralytics' Conv: conv (no bias, 'same' padding) -> BatchNorm -> SiLU."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SPPF(nn.Module):
    """Spatial pyramid pooling (fast), as the YOLOv8-era YAML row builds it (activated cv1)."""

    def __init__(self, c1: int, c2: int, k: int = 5) -> None:
        super().__init__()
        self.cv1 = Conv(c1, c1 // 2)
        self.cv2 = Conv(c1 // 2 * 4, c2)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


class Concat(nn.Module):
    def __init__(self, dimension: int = 1) -> None:
        super().__init__()
        self.d = dimension

    def forward(self, xs: List[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, self.d)


class DFL(nn.Module):
    """Fixed 1x1 conv (weights 0..reg_max-1) kept for state_dict compatibility with ultralytics' Detect."""

    def __init__(self, c1: int = REG_MAX) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1)


class Detect(nn.Module):
    """YOLOv8 detection head (box branch cv2, class branch cv3); returns the raw maps per level."""

    def __init__(self, nc: int, ch: Sequence[int]) -> None:
        super().__init__()
        c2, c3 = max(16, ch[0] // 4, REG_MAX * 4), max(ch[0], min(nc, 100))
        self.cv2 = nn.ModuleList(nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * REG_MAX, 1))
                                 for x in ch)
        self.cv3 = nn.ModuleList(nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for x in ch)
        self.dfl = DFL(REG_MAX)

    def forward(self, xs: List[torch.Tensor]) -> List[torch.Tensor]:
        return [torch.cat((box(x), cls(x)), 1) for x, box, cls in zip(xs, self.cv2, self.cv3)]


_SCALED = {"SimpleStem", "VSSBlock", "VisionClueMerge", "XSSBlock", "Conv", "SPPF"}


def _make_divisible(x: float, divisor: int = 8) -> int:
    return int(math.ceil(x / divisor) * divisor)


def _layer(name: str, args: List[Any], c1: Union[int, List[int]], n: int, nc: int) -> nn.Module:
    if name == "nn.Upsample":
        return nn.Upsample(*args)
    if name == "Concat":
        return Concat(*args)
    if name == "Detect":
        return Detect(nc, c1)  # type: ignore[arg-type]
    cls = {"Conv": Conv, "SPPF": SPPF}.get(name) or getattr(blocks, name, None)
    if cls is None:
        raise UsageError(f"layer {name!r} is not supported by the standalone builder",
                         "build this YAML with ultralytics (jetson_mamba.models.mamba_yolo.load_yolo)")
    if name == "XSSBlock":
        return cls(c1, args[0], n, *args[1:])
    made = [cls(c1, *args) for _ in range(n)]
    return made[0] if n == 1 else nn.Sequential(*made)


class MambaYOLODetector(nn.Module):
    """The layer list of a Mamba-YOLO YAML, run the way ultralytics runs it (saved skip outputs)."""

    def __init__(self, config: Dict[str, Any], scale: str, nc: int = 80) -> None:
        super().__init__()
        depth, width, max_channels = config["scales"][scale]
        channels: List[int] = []
        layers: List[nn.Module] = []
        self.save: List[int] = []
        for i, (f, n, name, args) in enumerate(config["backbone"] + config["head"]):
            args = [nc if a == "nc" else (None if a == "None" else a) for a in args]
            n = max(round(n * depth), 1) if n > 1 else n
            c_in = [channels[j] for j in f] if isinstance(f, list) else (channels[f] if channels else 3)
            if name in _SCALED:
                c2 = _make_divisible(min(args[0], max_channels) * width)
                args = [c2, *args[1:]]
            elif name == "Concat":
                c2 = sum(c_in)  # type: ignore[arg-type]
            else:
                c2 = c_in if isinstance(c_in, int) else 0
            layer = _layer(name, args, c_in, n, nc)
            layer.f, layer.i = f, i  # type: ignore[assignment]
            layers.append(layer)
            channels.append(c2)
            self.save.extend(j % i for j in ([f] if isinstance(f, int) else f) if j != -1)
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        outputs: List[Any] = []
        for layer in self.model:
            if layer.f != -1:
                x = outputs[layer.f] if isinstance(layer.f, int) else [x if j == -1 else outputs[j] for j in layer.f]
            x = layer(x)
            outputs.append(x if layer.i in self.save else None)
        return x


def build_detector(scale: str = "t", nc: int = 80) -> MambaYOLODetector:
    """Mamba-YOLO T, B or L from the shipped config, without ultralytics (needs PyYAML)."""
    try:
        import yaml
    except ImportError as error:
        raise MissingDependencyError("PyYAML is not installed", "pip install pyyaml") from error
    scale = scale.lower()
    config = yaml.safe_load(config_path(scale).read_text())
    return MambaYOLODetector(config, scale, nc)
