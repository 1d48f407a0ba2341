"""Import a compiled extension for the cuda backends, refusing jetson-mamba's own stand-ins.

The stand-ins are installed under the extensions' names (e.g. `selective_scan_cuda`) so that
unmodified upstream code runs without kernels; the cuda backend must never call them, or the
dispatch would loop back into itself.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    import torch

STANDIN_MARK = "__jetson_mamba_standin__"
GPU_DTYPES = ("float32", "float16", "bfloat16")


def is_standin(module: object) -> bool:
    """Whether `module` is one of jetson-mamba's stand-ins (they carry STANDIN_MARK), not a compiled extension."""
    return bool(getattr(module, STANDIN_MARK, False))


def load_extension(name: str) -> ModuleType:
    """The compiled module `name`; ImportError when absent, broken, or one of our stand-ins."""
    import torch  # noqa: F401  (the extensions need torch's libraries loaded first)

    module = importlib.import_module(name)
    if is_standin(module):
        raise ImportError(f"{name} is jetson-mamba's stand-in, not the compiled extension")
    return module


def why_unavailable(name: str, package: str, device: torch.device, dtype: torch.dtype) -> Optional[str]:
    """None when extension `name` (shipped by `package`) can run tensors of device/dtype, else why not."""
    if getattr(device, "type", str(device)) != "cuda":
        return f"tensors are on {device}; the compiled {package} kernels need CUDA tensors"
    if str(dtype).replace("torch.", "") not in GPU_DTYPES:
        return f"the compiled {package} kernels take {', '.join(GPU_DTYPES)}, not {dtype}"
    try:
        load_extension(name)
    except Exception as exc:  # ImportError, or an undefined symbol from a torch/CUDA mismatch
        return f"{name} cannot be imported ({exc}); install {package} with its compiled kernels"
    return None
