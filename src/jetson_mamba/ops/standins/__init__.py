"""Drop-in modules with the exact signatures and return values of the compiled extensions.

Unmodified upstream Python (mamba-ssm's `selective_scan_interface`, causal-conv1d's
`cpp_functions`, VMamba / Mamba-YOLO's selective-scan wrappers) imports these names; with
`install()` they resolve to jetson-mamba's dispatched kernels (torch, triton or compiled).
Each module carries `__jetson_mamba_standin__ = True` so the cuda backend never calls one.
"""

from __future__ import annotations

import importlib
import sys
from typing import Dict, Iterable, List, Optional

MODULES: Dict[str, str] = {
    "selective_scan_cuda": "jetson_mamba.ops.standins.selective_scan_cuda",
    "causal_conv1d_cuda": "jetson_mamba.ops.standins.causal_conv1d_cuda",
    "causal_conv1d_cuda_legacy": "jetson_mamba.ops.standins.causal_conv1d_cuda_legacy",
    "selective_scan_cuda_core": "jetson_mamba.ops.standins.selective_scan_cuda_core",
    "selective_scan_cuda_oflex": "jetson_mamba.ops.standins.selective_scan_cuda_oflex",
}


def install(names: Optional[Iterable[str]] = None, legacy_causal_conv1d: bool = False) -> List[str]:
    """Put stand-ins into sys.modules under the extension names; return the names installed.

    A name whose real compiled extension imports is left alone. `legacy_causal_conv1d` makes
    `causal_conv1d_cuda` the old returning API (causal-conv1d < 1.5.1 callers).
    """
    from jetson_mamba.ops._compiled import load_extension

    installed: List[str] = []
    for name in names or ("selective_scan_cuda", "causal_conv1d_cuda", "selective_scan_cuda_core",
                          "selective_scan_cuda_oflex"):
        if name not in MODULES or name == "causal_conv1d_cuda_legacy":
            raise ValueError(f"no stand-in for {name!r}; known: {', '.join(sorted(MODULES))}")
        try:
            load_extension(name)
            continue
        except Exception:  # not importable (or already a stand-in): ours goes in
            pass
        source = "causal_conv1d_cuda_legacy" if name == "causal_conv1d_cuda" and legacy_causal_conv1d else name
        sys.modules[name] = importlib.import_module(MODULES[source])
        installed.append(name)
    return installed
