"""A tiny synthetic detection set (no downloads), so train/predict can be smoke-tested on any device."""

from __future__ import annotations

from pathlib import Path


def write_dataset(root: Path, count: int = 4, size: int = 64, seed: int = 0) -> Path:
    """Bright rectangles on dark noise, one box per image, as YOLO labels; returns the data.yaml.

    Deterministic for a seed, so a run on one machine can be repeated on another."""
    import torch
    from PIL import Image

    gen = torch.Generator().manual_seed(seed)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = (torch.rand(size, size, 3, generator=gen) * 60).to(torch.uint8)
            x0, y0 = (int(v) for v in torch.randint(4, size // 2, (2,), generator=gen))
            w, h = (int(v) for v in torch.randint(12, size // 2 - 2, (2,), generator=gen))
            pixels[y0:y0 + h, x0:x0 + w] = torch.tensor([230, 40, 40], dtype=torch.uint8)
            Image.fromarray(pixels.numpy()).save(root / "images" / split / f"{i}.jpg")
            cx, cy = (x0 + w / 2) / size, (y0 + h / 2) / size
            (root / "labels" / split / f"{i}.txt").write_text(f"0 {cx:.6f} {cy:.6f} {w / size:.6f} {h / size:.6f}\n")
    data = root / "data.yaml"
    data.write_text(f"path: {root.resolve()}\ntrain: images/train\nval: images/val\nnames:\n  0: box\n")
    return data
