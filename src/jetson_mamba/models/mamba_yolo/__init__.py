"""Mamba-YOLO: the original's blocks on jetson-mamba's kernel backends, plus ultralytics glue.

`register()` (needs the optional `yolo` extra) makes `ultralytics.YOLO("mamba-yolo-t.yaml")` work.
"""

from __future__ import annotations

from jetson_mamba.models.mamba_yolo.blocks import (
    SS2D,
    LayerNorm2d,
    LSBlock,
    RGBlock,
    SimpleStem,
    VisionClueMerge,
    VSSBlock,
    VSSBlock_YOLO,
    XSSBlock,
)
from jetson_mamba.models.mamba_yolo.integration import PUBLISHED, SCALES, config_path, load_yolo, register

__all__ = ["SS2D", "LayerNorm2d", "LSBlock", "RGBlock", "SimpleStem", "VisionClueMerge", "VSSBlock",
           "VSSBlock_YOLO", "XSSBlock", "PUBLISHED", "SCALES", "config_path", "load_yolo", "register"]
