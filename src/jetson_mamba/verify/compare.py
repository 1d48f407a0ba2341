"""How a result is judged: relative error against a float64 reference, tolerances per dtype, NaN poisoning.

The error of a tensor is ||out - ref|| / ||ref|| (Frobenius), computed in float64: one number that
is small for rounding noise and large for a wrong kernel, whatever the tensor's scale. A NaN or
Inf anywhere (e.g. an output buffer a kernel never wrote) makes the error infinite.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

# Relative-error tolerances (forward, backward) by dtype. Rounding the output alone costs about
# 2^-9 (bf16), 2^-12 (fp16) relative per element; gradients add reductions over batch and length.
TOLERANCES: Dict[str, Tuple[float, float]] = {
    "float32": (1e-4, 5e-4),
    "float16": (3e-3, 1e-2),
    "bfloat16": (2e-2, 5e-2),
}
# Kernels that compute float32 matrix products in TF32 (10-bit mantissa, like fp16): mamba_ssm's
# Triton SSD kernels behind Mamba2 do, by Triton's default.
TOLERANCES["tf32"] = TOLERANCES["float16"]
# Whole blocks (projections, norms and the scan, run in the dtype) are looser than single kernels.
BLOCK_FACTOR = 4.0


def tolerance(dtype: Any, backward: bool, block: bool = False) -> float:
    """The relative-error tolerance for one check (`dtype` a torch dtype or a TOLERANCES key)."""
    name = str(dtype).replace("torch.", "")
    forward_tol, backward_tol = TOLERANCES[name]
    return (backward_tol if backward else forward_tol) * (BLOCK_FACTOR if block else 1.0)


def relative_error(out: Any, ref: Any) -> float:
    """||out - ref|| / ||ref|| in float64; inf when out has NaN/Inf or a different shape."""
    if tuple(out.shape) != tuple(ref.shape):
        return math.inf
    got = out.detach().cpu().double()
    want = ref.detach().cpu().double()
    if not bool(got.isfinite().all()):
        return math.inf
    scale = float(want.norm())
    diff = float((got - want).norm())
    if scale == 0.0:
        return diff
    return diff / scale


def compare(outputs: Mapping[str, Any], references: Mapping[str, Any]) -> Dict[str, float]:
    """Relative error of every named tensor that has a reference (None outputs are missing: inf)."""
    errors: Dict[str, float] = {}
    for name, ref in references.items():
        if ref is None:
            continue
        out = outputs.get(name)
        errors[name] = math.inf if out is None else relative_error(out, ref)
    return errors


def worst(errors: Mapping[str, float]) -> Tuple[Optional[str], float]:
    """The tensor with the largest error and that error."""
    if not errors:
        return None, 0.0
    name = max(errors, key=lambda key: errors[key])
    return name, errors[name]


@contextlib.contextmanager
def nan_poisoned_memory() -> Iterator[None]:
    """Make every torch.empty / empty_like (also inside extensions and Triton wrappers) return NaNs.

    A kernel that leaves part of its output unwritten then shows up as a NaN instead of passing by
    luck with whatever the allocator handed back. Uses torch's deterministic mode in warn-only form
    (its warnings are silenced here) and restores the previous settings afterwards.
    """
    import torch

    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """No TF32 in torch's own matmuls and cuDNN convolutions while checking: float32 means float32.

    Otherwise a float32 block on an Ampere or newer GPU (Orin included) differs from float64 by
    TF32 rounding (~1e-3), which would hide a real kernel error of the same size.
    """
    import torch

    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
