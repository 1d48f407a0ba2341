"""Peak memory bandwidth of the devices we know, to say how close a kernel gets to the hardware.

Numbers are the vendors' published peaks (GB/s). On a Jetson, torch only says "Orin", so the
board model from /proc/device-tree tells an AGX Orin from an Orin Nano.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

# (substrings that must all appear in the lower-cased name, GB/s). First match wins: specific first.
PEAK_GBPS: Sequence[Tuple[Tuple[str, ...], float]] = (
    (("gh200",), 4000.0),
    (("h200",), 4800.0),
    (("h100", "pcie"), 2000.0),
    (("h100",), 3350.0),
    (("a100", "80gb"), 2039.0),
    (("a100",), 1555.0),
    (("l40",), 864.0),
    (("l4",), 300.0),
    (("rtx 4090",), 1008.0),
    (("a10",), 600.0),
    (("thor",), 273.0),
    (("agx orin",), 204.8),
    (("orin nx",), 102.4),
    (("orin nano", "4gb"), 34.0),
    (("orin nano",), 68.0),
    (("orin",), 204.8),
    (("agx xavier",), 136.5),
    (("xavier nx",), 59.7),
    (("xavier",), 136.5),
    (("jetson nano",), 25.6),
)


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    peak_gbps: Optional[float]
    l2_bytes: int


def peak_gbps_for(name: str) -> Optional[float]:
    """Published peak bandwidth for a device name, or None when we do not know it."""
    lowered = name.lower()
    for needles, gbps in PEAK_GBPS:
        if all(needle in lowered for needle in needles):
            return gbps
    return None


def describe_device(device: str) -> DeviceInfo:
    """Name, peak bandwidth (None on the CPU and unknown GPUs) and L2 size of a torch device."""
    import torch

    dev = torch.device(device)
    if dev.type != "cuda":
        return DeviceInfo(name="cpu", peak_gbps=None, l2_bytes=0)
    props = torch.cuda.get_device_properties(dev)
    name = props.name
    from jetson_mamba.probe.jetson import read_jetson

    jetson = read_jetson(Path("/"))
    if jetson is not None and jetson.model:
        name = f"{jetson.model} ({name})"
    return DeviceInfo(name=name, peak_gbps=peak_gbps_for(name),
                      l2_bytes=int(getattr(props, "L2_cache_size", 0) or 0))
