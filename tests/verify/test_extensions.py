"""The extension adapters catch broken in-place contracts: a kernel that returns a fresh tensor instead of
writing the caller's buffer passes a naive check but gives mamba_inner_fn garbage gradients."""

from __future__ import annotations

from types import ModuleType, SimpleNamespace
from typing import Any, Tuple

import pytest
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
                            torch.Generator().manual_seed(4), backward=False, with_x=True)
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
                        backward=False, with_x=True)[-1]
    assert result.direction == "chunk states" and result.status == "error"
    assert "delta_scale" in (result.message or "")


def _bwd_writing_like_x(x: Any, weight: Any, bias: Any, dout: Any, seq_idx: Any, init: Any, dfinal: Any, dx: Any,
                        dweight: Any, dbias: Any, dinit: Any, silu: bool) -> None:
    """The old Triton general backward's habit: dx written as if it had x's strides. Here only the elements
    both layouts agree on are written (the GPU kernel also wrote past dx's end)."""
    fresh = torch.empty_like(x)  # x's own order, dense: what the stand-in's dx would be for a dense x
    causal_conv1d_cuda.causal_conv1d_bwd(x, weight, bias, dout, seq_idx, init, dfinal, fresh, dweight, dbias, dinit,
                                         silu)
    if dx.stride() == x.stride():
        dx.copy_(fresh)
    else:
        dx[:, :, 0].copy_(fresh[:, :, 0])  # the t=0 column sits where both layouts put it


@pytest.mark.parametrize("case", [ConvCase(2, 8, 19, 4, channel_last=True, strided=True, initial_states=True,
                                           final_states=True),
                                  ConvCase(2, 8, 19, 4, channel_last=True, strided=True, seq_idx=True)],
                         ids=["states", "seq_idx"])
def test_conv_check_calls_the_module_as_causal_conv1d_does(case: ConvCase) -> None:
    """verify's quick cases include Mamba2's channel-last paths on a strided x, and the adapter hands the
    module a dense dx (empty_like(x)), channel-last dout, dfinal_states and seq_idx as causal-conv1d's
    backward does: the stand-in passes; one that writes dx as if it had x's strides fails."""
    from jetson_mamba.verify.cases import conv_cases

    assert case in conv_cases(quick=True)
    calls = []

    def spy(*args: Any) -> None:
        calls.append(args)
        return causal_conv1d_cuda.causal_conv1d_bwd(*args)

    recording = SimpleNamespace(causal_conv1d_fwd=causal_conv1d_cuda.causal_conv1d_fwd, causal_conv1d_bwd=spy)
    results = check_conv("standin", ConvAdapter(recording, buffers=True), case, torch.float32, "cpu",
                         torch.Generator().manual_seed(6))
    assert [r.status for r in results] == ["passed", "passed"]
    x, dout, seq_idx, dfinal, dx = calls[0][0], calls[0][3], calls[0][4], calls[0][6], calls[0][7]
    assert x.stride(1) == 1 and not x.is_contiguous() and dx.stride() != x.stride() and dout.stride(1) == 1
    assert (seq_idx is not None) == case.seq_idx and (dfinal is not None) == case.final_states
    broken = SimpleNamespace(causal_conv1d_fwd=causal_conv1d_cuda.causal_conv1d_fwd,
                             causal_conv1d_bwd=_bwd_writing_like_x)
    forward, backward = check_conv("broken", ConvAdapter(broken, buffers=True), case, torch.float32, "cpu",
                                   torch.Generator().manual_seed(6))
    assert forward.status == "passed" and backward.status == "failed" and "x: NaN/Inf" in (backward.message or "")


def test_old_api_backward_gets_dx_none() -> None:
    """causal-conv1d < 1.5.1's Python passes dx=None to causal_conv1d_bwd; so does the adapter."""
    from jetson_mamba.ops.standins import causal_conv1d_cuda_legacy as legacy

    seen = []

    def spy(*args: Any) -> Any:
        seen.append(args[7])
        return legacy.causal_conv1d_bwd(*args)

    module = SimpleNamespace(causal_conv1d_fwd=legacy.causal_conv1d_fwd, causal_conv1d_bwd=spy)
    results = check_conv("legacy", ConvAdapter(module, buffers=False),
                         ConvCase(2, 8, 19, 4, channel_last=True, strided=True, initial_states=True,
                                  final_states=True), torch.float32, "cpu", torch.Generator().manual_seed(7))
    assert [r.status for r in results] == ["passed", "passed"] and seen == [None]
