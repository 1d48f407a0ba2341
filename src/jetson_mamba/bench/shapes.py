"""Benchmark problems: the default shapes (a Mamba-130M layer, Mamba-YOLO-T's SS2D scans) and `--shape` parsing.

GPU defaults are the shapes the lab baseline measured (../shared/measurements/h200-baseline.md), so
numbers compare directly; CPU defaults are cut down to finish in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence

from jetson_mamba.errors import UsageError
from jetson_mamba.verify.cases import ConvCase, ScanCase

OPS = ("selective_scan", "causal_conv1d", "block")
SHAPE_KEYS = {"B": "batch", "D": "dim", "L": "length", "N": "dstate", "G": "groups", "z": "z", "W": "width"}


@dataclass(frozen=True)
class Problem:
    """One op at one shape, with a human name for tables."""

    op: str  # selective_scan, causal_conv1d, block
    name: str  # "Mamba-130M layer", "Mamba-YOLO-T SS2D P3", "custom"
    scan: Optional[ScanCase] = None
    conv: Optional[ConvCase] = None
    block: Optional[str] = None  # "mamba_ssm.Mamba", "mamba_yolo.VSSBlock"
    block_shape: Sequence[int] = ()

    @property
    def label(self) -> str:
        if self.scan is not None:
            return f"{self.name}: {self.scan.label}"
        if self.conv is not None:
            return f"{self.name}: {self.conv.label}"
        return f"{self.name}: input {'x'.join(map(str, self.block_shape))}"


def default_problems(on_gpu: bool) -> List[Problem]:
    """Mamba-130M (d_model 768, d_inner 1536, d_state 16, d_conv 4) and Mamba-YOLO-T SS2D (K=4 grouped, fp32)."""
    if on_gpu:
        batch, length, yolo = 8, 2048, ((8, 512, 80), (8, 1024, 40))
        mamba_in, vss_in = (8, 2048, 768), (8, 64, 80, 80)
    else:  # the same layers with short sequences and small images, so a CPU run takes seconds
        batch, length, yolo = 1, 64, ((1, 512, 8),)
        mamba_in, vss_in = (1, 32, 768), (1, 64, 8, 8)
    problems = [
        Problem("selective_scan", "Mamba-130M layer", scan=ScanCase(batch, 1536, length, 16)),
        Problem("causal_conv1d", "Mamba-130M layer", conv=ConvCase(batch, 1536, length, 4)),
    ]
    problems += [Problem("selective_scan", f"Mamba-YOLO-T SS2D {side}x{side}",
                         scan=ScanCase(b, kd, side * side, 16, bc="grouped", groups=4, z=False))
                 for b, kd, side in yolo]
    problems += [Problem("block", "Mamba-130M block", block="mamba_ssm.Mamba", block_shape=mamba_in),
                 Problem("block", "Mamba-YOLO-T VSSBlock", block="mamba_yolo.VSSBlock", block_shape=vss_in)]
    return problems


def parse_shape(text: str) -> Dict[str, int]:
    """`B=8,D=2048,L=2048,N=16` -> {"batch": 8, ...}; clear errors for unknown keys and bad values."""
    values: Dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in SHAPE_KEYS:
            raise UsageError(f"bad --shape entry {part!r} in {text!r}",
                             f"use KEY=VALUE pairs with keys {', '.join(SHAPE_KEYS)}, e.g. --shape B=8,D=2048,L=2048,N=16")
        try:
            number = int(value)
        except ValueError:
            raise UsageError(f"--shape {key}={value!r} is not an integer", "e.g. --shape B=1,D=1536,L=256") from None
        if number < 0 or (number == 0 and key.strip() not in ("G", "z")):
            raise UsageError(f"--shape {key}={number} must be positive", "e.g. --shape B=1,D=1536,L=256")
        values[SHAPE_KEYS[key.strip()]] = number
    return values


def custom_problems(shape: Dict[str, int], ops: Sequence[str]) -> List[Problem]:
    """Problems for `--shape`: the Mamba-130M defaults with the given keys replaced (G>0: grouped B/C)."""
    problems: List[Problem] = []
    base = default_problems(on_gpu=False)
    for op in ops:
        if op == "selective_scan":
            case = base[0].scan
            scan_keys = {k: v for k, v in shape.items() if k in ("batch", "dim", "length", "dstate")}
            case = replace(case, **scan_keys, z=bool(shape.get("z", 1)))
            if shape.get("groups"):
                case = replace(case, bc="grouped", groups=shape["groups"])
                if case.dim % case.groups:
                    raise UsageError(f"D={case.dim} is not a multiple of G={case.groups}", "pick D divisible by G")
            problems.append(Problem(op, "custom", scan=case))
        elif op == "causal_conv1d":
            conv_keys = {k: v for k, v in shape.items() if k in ("batch", "dim", "length", "width")}
            case = replace(base[1].conv, **conv_keys)
            if not 2 <= case.width <= 4:
                raise UsageError(f"W={case.width}: causal conv1d widths are 2 to 4", "use W=2, 3 or 4")
            problems.append(Problem(op, "custom", conv=case))
    return problems
