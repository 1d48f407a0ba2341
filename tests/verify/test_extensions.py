"""The extension adapters catch broken in-place contracts: a kernel that returns a fresh tensor instead of
writing the caller's buffer passes a naive check but gives mamba_inner_fn garbage gradients."""

from __future__ import annotations

from types import ModuleType, SimpleNamespace
from typing import Any, Tuple

import torch

from jetson_mamba.ops.standins import causal_conv1d_cuda, selective_scan_cuda
from jetson_mamba.verify.cases import ConvCase, ScanCase
from jetson_mamba.verify.extensions import ConvAdapter, MambaScanAdapter, conv_uses_buffers
from jetson_mamba.verify.kernels import check_conv, check_scan


def _bwd_ignoring_dz(*args: Any) -> Any:
    """selective_scan_cuda.bwd that computes dz correctly but never writes the dz buffer it is given."""
    args = list(args)
    args[11] = None
    return selective_scan_cuda.bwd(*args)


def _fwd_returning_out(x: Any, weight: Any, bias: Any, seq_idx: Any, init: Any, out: Any, final: Any,
                       silu: bool) -> Any:
    """New-API causal_conv1d_fwd that returns its result instead of filling `out` (the old API's habit)."""
    fresh = torch.empty_like(out)
    causal_conv1d_cuda.causal_conv1d_fwd(x, weight, bias, seq_idx, init, fresh, final, silu)
    return fresh


def test_the_stand_ins_honour_the_buffers() -> None:
    generator = torch.Generator().manual_seed(0)
    case = ScanCase(2, 8, 21, 4)
    results = check_scan("standin", MambaScanAdapter(selective_scan_cuda), case, torch.float32, "cpu", generator)
    assert [r.status for r in results] == ["passed", "passed"] and "z" in results[1].tensors
    assert conv_uses_buffers(causal_conv1d_cuda)
    conv = check_conv("standin", ConvAdapter(causal_conv1d_cuda, buffers=True), ConvCase(2, 8, 19, 4),
                      torch.float32, "cpu", generator)
    assert [r.status for r in conv] == ["passed", "passed"]


def test_unwritten_dz_buffer_fails_the_backward_check() -> None:
    broken = SimpleNamespace(fwd=selective_scan_cuda.fwd, bwd=_bwd_ignoring_dz)
    results = check_scan("broken", MambaScanAdapter(broken), ScanCase(2, 8, 21, 4), torch.float32, "cpu",
                         torch.Generator().manual_seed(1))
    forward, backward = results
    assert forward.status == "passed"
    assert backward.status == "failed" and "z: NaN/Inf" in backward.message
    assert backward.tensors["u"] < 1e-5  # everything else is right: only the contract is broken


def test_unfilled_output_buffer_fails_the_forward_check() -> None:
    broken = SimpleNamespace(causal_conv1d_fwd=_fwd_returning_out, causal_conv1d_bwd=causal_conv1d_cuda.causal_conv1d_bwd)
    forward, backward = check_conv("broken", ConvAdapter(broken, buffers=True), ConvCase(2, 8, 19, 4),
                                   torch.float32, "cpu", torch.Generator().manual_seed(2))
    assert forward.status == "failed" and "out: NaN/Inf" in forward.message
    assert backward.status == "passed"


def test_fixed_B_state_is_corrected_for_the_compiled_kernel_alone(kernel_like_scan: ModuleType) -> None:
    """The compiled kernel's fixed-B final state lacks B; the stand-in's does not. The adapter tells them apart by
    the stand-in mark: each passes, and each fails when taken for the other (found on the lab GPU: correcting
    the stand-in too multiplied B in twice)."""
    case = ScanCase(1, 13, 129, 4, bc="fixed", D=False, delta_bias=False, softplus=False)
    kernel = kernel_like_scan
    kernel_taken_for_standin = SimpleNamespace(fwd=kernel.fwd, bwd=kernel.bwd, __jetson_mamba_standin__=True)
    standin_taken_for_kernel = SimpleNamespace(fwd=selective_scan_cuda.fwd, bwd=selective_scan_cuda.bwd)

    # two 2048-step chunks: every chunk's state in x, not only the last, needs B back
    long_case = ScanCase(1, 3, 2100, 2, bc="fixed", z=False, D=False, delta_bias=False, softplus=False,
                         delta_scale=0.002)

    def statuses(module: Any) -> Tuple[str, str]:
        results = check_scan("scan", MambaScanAdapter(module), case, torch.float32, "cpu",
                             torch.Generator().manual_seed(3))
        chunks = check_scan("scan", MambaScanAdapter(module), long_case, torch.float32, "cpu",
                            torch.Generator().manual_seed(4), backward=False)
        assert chunks[-1].direction == "chunk states"
        return results[0].status, chunks[-1].status

    assert statuses(selective_scan_cuda) == ("passed", "passed")
    assert statuses(kernel) == ("passed", "passed")
    assert statuses(standin_taken_for_kernel) == ("failed", "failed")
    assert statuses(kernel_taken_for_standin) == ("failed", "failed")


def test_chunk_states_check_refuses_a_case_whose_decay_underflows() -> None:
    """Over 2048 steps of large deltas the decay products are below fp32's range, 0 in every kernel: such a
    case could not judge them, so the check errors and names the fix instead of comparing zeros."""
    from jetson_mamba.ops.selective_scan import torch as portable

    case = ScanCase(1, 3, 2100, 2, bc="fixed", z=False, D=False, delta_bias=False, softplus=False)
    result = check_scan("scan", portable, case, torch.float32, "cpu", torch.Generator().manual_seed(5),
                        backward=False)[-1]
    assert result.direction == "chunk states" and result.status == "error"
    assert "delta_scale" in (result.message or "")
