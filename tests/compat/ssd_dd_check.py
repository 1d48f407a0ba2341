"""Mamba2's D gradient from mamba-ssm's own Triton backward, run by the Triton interpreter on the CPU.

    TRITON_INTERPRET=1 python ssd_dd_check.py MAMBA_SSM_PACKAGE_DIR

Imports mamba_ssm/ops/triton/ssd_combined.py from the given tree without running mamba_ssm/__init__
(no compiled parts needed), keeps one config per autotuned kernel, with BLOCK_SIZE_N = 32 for
`_chunk_scan_chunk_state_bwd_dx_kernel` (below headdim 64, as the autotuner may choose), and
prints the relative error of D.grad against sum(dout * x), which is exact for y = ssd(x) + D * x.
"""

from __future__ import annotations

import contextlib
import json
import sys
import types

import torch


def import_ssd_combined(root: str) -> types.ModuleType:
    """mamba_ssm.ops.triton.ssd_combined from the package tree `root`, without running mamba_ssm/__init__
    (which needs the compiled extensions): the parent packages are bare namespace modules."""
    for name, sub in (("mamba_ssm", ""), ("mamba_ssm.ops", "/ops"), ("mamba_ssm.ops.triton", "/ops/triton"),
                      ("mamba_ssm.utils", "/utils")):
        module = types.ModuleType(name)
        module.__path__ = [root + sub]
        sys.modules[name] = module
    from mamba_ssm.ops.triton import ssd_combined

    return ssd_combined


def main(root: str) -> None:
    ssd_combined = import_ssd_combined(root)

    from jetson_mamba.ops.triton_utils import pin_autotuned_kernels

    # what upstream asks of the GPU it expects, answered for the interpreter: a device context, an SM count
    torch.cuda.device = lambda index: contextlib.nullcontext()
    torch.cuda.get_device_properties = lambda device: types.SimpleNamespace(multi_processor_count=132)
    kernel = ssd_combined._chunk_scan_chunk_state_bwd_dx_kernel
    narrow = [c for c in kernel.configs if c.kwargs["BLOCK_SIZE_N"] == 32]
    pin_autotuned_kernels("mamba_ssm")
    kernel.configs = narrow[:1]
    torch.manual_seed(0)
    batch, length, heads, headdim, dstate = 1, 32, 2, 64, 16
    x = torch.randn(batch, length, heads, headdim, requires_grad=True)
    dt = torch.rand(batch, length, heads) * 0.5 + 0.1
    A = -torch.rand(heads) - 0.5
    B, C = torch.randn(batch, length, 1, dstate), torch.randn(batch, length, 1, dstate)
    D = torch.randn(heads, requires_grad=True)
    y = ssd_combined.mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size=16, D=D)
    dout = torch.randn_like(y)
    y.backward(dout)
    reference = (dout * x.detach()).sum(dim=(0, 1, 3))
    print(json.dumps({"block_n": narrow[0].kwargs["BLOCK_SIZE_N"], "headdim": headdim,
                      "error": float((D.grad - reference).norm() / reference.norm())}))


if __name__ == "__main__":
    main(sys.argv[1])
