"""A `selective_scan_cuda` that stores fixed-B chunk states as the compiled kernel does: without B's factor.

jetson-mamba's stand-in with that one habit of the real kernel; it carries no stand-in mark, so code
under test treats it as compiled. Tests import it, or copy it into a venv as `selective_scan_cuda.py`.
"""

from jetson_mamba.ops.standins.selective_scan_cuda import bwd  # noqa: F401  (part of the module's API)
from jetson_mamba.ops.standins.selective_scan_cuda import fwd as _fwd


def fwd(u, delta, A, B, C, *rest):  # type: ignore[no-untyped-def]
    out, x, *more = _fwd(u, delta, A, B, C, *rest)
    if B.dim() == 2:
        x = x.clone()
        x[..., 1::2] = x[..., 1::2] / B[:, None, :]
    return [out, x, *more]
