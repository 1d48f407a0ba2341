"""Probe the machine into a frozen `MachineInfo`. Never raises; nothing runs at import time."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Optional, Union

from jetson_mamba.probe.jetson import read_jetson
from jetson_mamba.probe.model import (
    CudaInfo,
    ExtensionInfo,
    FatbinArchs,
    GpuInfo,
    JetsonInfo,
    MachineInfo,
    MemoryInfo,
    PackageInfo,
    PackagesInfo,
    TorchInfo,
)
from jetson_mamba.probe.python_env import probe_python
from jetson_mamba.probe.system import read_cuda, read_memory, read_nvidia_smi

__all__ = [
    "CudaInfo", "ExtensionInfo", "FatbinArchs", "GpuInfo", "JetsonInfo", "MachineInfo", "MemoryInfo",
    "PackageInfo", "PackagesInfo", "TorchInfo", "probe_machine",
]


def probe_machine(root: Union[str, Path] = "/", python: Optional[str] = None) -> MachineInfo:
    """Everything we know about this machine.

    `root` re-roots the files read (Jetson release files, /proc, /usr/local/cuda) for
    fixture trees and mounted device images; `python` probes another interpreter's torch
    and packages. The GPU comes from torch.cuda, else nvidia-smi, else the Jetson SoC table.
    """
    root = Path(root)
    live = root == Path("/")
    cuda = read_cuda(root, env=os.environ if live else {}, run=live)
    jetson = read_jetson(root, cuda.version)
    torch, packages, torch_gpu = probe_python(python)
    gpu: Optional[GpuInfo] = None
    if torch_gpu:
        smem = torch_gpu.get("smem_per_block")
        gpu = GpuInfo(name=torch_gpu.get("name"), arch=torch_gpu.get("arch"), source="torch.cuda",
                      count=int(torch_gpu.get("count", 1)), smem_per_block=smem if isinstance(smem, int) else None)
    elif live:
        gpu = read_nvidia_smi()
    if gpu is None and jetson is not None and jetson.cuda_arch:
        gpu = GpuInfo(name=jetson.model, arch=jetson.cuda_arch, source="jetson-soc-table")
    return MachineInfo(
        system=platform.system(),
        machine="aarch64" if jetson is not None else platform.machine(),
        cpu_count=os.cpu_count() or 1,
        memory=read_memory(root),
        jetson=jetson,
        gpu=gpu,
        cuda=cuda,
        torch=torch,
        packages=packages,
    )
