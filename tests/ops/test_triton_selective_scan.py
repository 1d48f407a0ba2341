"""Triton selective scan against the float64 reference: outputs, last state and every gradient.

Runs on CPU tensors under TRITON_INTERPRET=1 (through test_triton_interpreted.py, small shapes)
and directly on a GPU (the same cases, plus real shapes marked gpu).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import pytest
import torch
from test_triton_interpreted import DEVICE, GPU, Launch, assert_close, needs_triton

from jetson_mamba.errors import BackendUnavailableError
from jetson_mamba.ops import selective_scan_fn
from jetson_mamba.ops import triton_utils as tu
from jetson_mamba.ops.selective_scan import triton as scan_triton
from jetson_mamba.ops.selective_scan.naive import chunk_states_ref, selective_scan_ref

pytestmark = needs_triton

if tu.triton is not None:
    from jetson_mamba.ops.triton_utils import softplus, tl

    @tu.triton.jit
    def _softplus_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(y_ptr + offs, softplus(tl.load(x_ptr + offs, mask=offs < n)), mask=offs < n)
TOL = {torch.float32: 2e-4, torch.float16: 5e-3, torch.bfloat16: 3e-2}
ARGS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def make_inputs(batch: int, dim: int, L: int, N: int, b_layout: str, c_layout: str, dtype: torch.dtype,
                groups: int = 1, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Inputs on DEVICE; B/C layout: 'fixed' (dim, N), 'var' (batch, N, L) or 'grouped' (batch, groups, N, L)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, scale: float = 1.0, dt: torch.dtype = dtype) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * scale).to(dt).to(DEVICE)

    def bc(layout: str) -> torch.Tensor:
        if layout == "fixed":
            return rnd(dim, N, dt=torch.float32)
        if layout == "var":
            return rnd(batch, N, L)
        return rnd(batch, groups, N, L)

    return {
        "u": rnd(batch, dim, L),
        "delta": rnd(batch, dim, L, scale=0.5),
        "A": (-torch.rand(dim, N, generator=g) * 2 - 0.1).to(DEVICE),
        "B": bc(b_layout),
        "C": bc(c_layout),
        "D": rnd(dim, dt=torch.float32),
        "z": rnd(batch, dim, L),
        "delta_bias": rnd(dim, scale=0.3, dt=torch.float32),
    }


def check(inp: Dict[str, torch.Tensor], use: Tuple[str, ...], softplus: bool, rel: float,
          grad_rel: Optional[float] = None) -> None:
    """Run the public selective_scan_fn (Triton backend) and the float64 reference; compare everything."""
    leaves = {k: v.clone().requires_grad_() for k, v in inp.items() if k in ("u", "delta", "A", "B", "C") + use}
    kw = {k: leaves.get(k) for k in ARGS}
    out, last = selective_scan_fn(**kw, delta_softplus=softplus, return_last_state=True)
    ref_leaves = {k: v.detach().double().requires_grad_() for k, v in leaves.items()}
    ref_out, ref_last = selective_scan_ref(**{k: ref_leaves.get(k) for k in ARGS}, delta_softplus=softplus,
                                           return_last_state=True)
    assert out.dtype == inp["u"].dtype and last.dtype == torch.float32
    assert_close(out, ref_out, rel, "out")
    assert_close(last, ref_last, rel, "last_state")
    g = torch.Generator().manual_seed(1)
    dout = torch.randn(out.shape, generator=g).to(DEVICE)
    out.backward(dout.to(out.dtype))
    ref_out.backward(dout.double())
    for name, leaf in leaves.items():
        assert leaf.grad is not None and leaf.grad.dtype == leaf.dtype, name
        # atol: where the exact gradient is 0 (dA after one step: no earlier state to decay), fused
        # multiply-adds on the GPU leave fp32 rounding noise (~1e-8) from x_t - dBu_t.
        assert_close(leaf.grad, ref_leaves[name].grad, grad_rel or rel, f"d{name}", atol=1e-7)


ALL = ("D", "z", "delta_bias")
CASES = {
    # name: (batch, dim, L, N, B layout, C layout, groups, used optional args, softplus)
    "mamba-fixed-BC": (2, 6, 19, 5, "fixed", "fixed", 1, ALL, True),
    "mamba-var-BC": (2, 5, 23, 4, "var", "var", 1, ALL, True),
    "bare-var": (1, 3, 17, 3, "var", "var", 1, (), False),
    "grouped-nonuniform": (2, 6, 13, 4, "grouped", "grouped", 2, ("D",), True),
    "vmamba-K4": (2, 8, 21, 4, "grouped", "grouped", 4, ("D", "delta_bias"), True),
    "mixed-var-B-fixed-C": (1, 4, 11, 2, "var", "fixed", 1, ("z",), False),
    "one-step": (2, 3, 1, 3, "var", "var", 1, ALL, True),
    "exact-chunks": (1, 4, 16, 8, "var", "grouped", 2, ALL, True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_float64_reference(case: str, nan_poison: None) -> None:
    batch, dim, L, N, bl, cl, groups, use, softplus = CASES[case]
    check(make_inputs(batch, dim, L, N, bl, cl, torch.float32, groups), use, softplus, TOL[torch.float32])


@pytest.mark.parametrize("tile", scan_triton._FWD_CONFIGS, ids=lambda c: "BD{}-T{}-w{}".format(*c))
def test_every_forward_tile_of_the_table_matches_float64(tile: Tuple[int, int, int], monkeypatch: pytest.MonkeyPatch,
                                                         nan_poison: None) -> None:
    """The GPU's autotuner picks a forward tile by speed alone, so each one in the table must be right (the
    interpreter otherwise runs only its own): dim 5 fills no channel block, L 37 no tile."""
    bd, t, warps = tile
    monkeypatch.setattr(scan_triton._fwd, "configs", [tu.triton.Config({"BD": bd, "T": t}, num_warps=warps)])
    monkeypatch.setattr(scan_triton._fwd, "cache", {})
    check(make_inputs(2, 5, 37, 4, "var", "var", torch.float32), ALL, True, TOL[torch.float32])


def test_wide_channel_counts_take_the_interpreters_wide_kernels(launches: List[Launch], nan_poison: None) -> None:
    """Above 64 channels the interpreter runs 1024 channels and 32 steps a program (triton_utils' launch
    plan; upstream's mamba_inner_fn test is dim 768): 1030 channels are two programs, the second nearly all
    masked, over several tiles. On a GPU the tuned kernels run."""
    from jetson_mamba.ops.selective_scan import triton as backend

    check(make_inputs(1, 1030, 70, 4, "var", "fixed", torch.float32), ALL, True, TOL[torch.float32])
    wide = [backend._fwd_wide, backend._bwd_wide] if tu.INTERPRET else [backend._fwd, backend._bwd]
    assert [launch.kernel for launch in launches] == wide


if tu.INTERPRET:
    from jetson_mamba.ops.selective_scan.triton_kernels import _affine_combine

    @tu.triton.jit
    def _plain_affine_combine(a1, b1, a2, b2):
        """_affine_combine's body, not marked elementwise: the interpreter scans it element by element."""
        return a1 * a2, a2 * b1 + b2

    @tu.triton.jit
    def _scans_kernel(a_ptr, b_ptr, out_ptr, T: tl.constexpr, N: tl.constexpr):
        """The scan of (a, b) over axis 0 of a (T, N) tile with the marked combine and with the plain one,
        and the flipped tile, into out (5, T, N)."""
        offs = tl.arange(0, T)[:, None] * N + tl.arange(0, N)[None, :]
        a = tl.load(a_ptr + offs)
        b = tl.load(b_ptr + offs)
        fa, fb = tl.associative_scan((a, b), 0, _affine_combine)
        pa, pb = tl.associative_scan((a, b), 0, _plain_affine_combine)
        tl.store(out_ptr + offs, fa)
        tl.store(out_ptr + T * N + offs, fb)
        tl.store(out_ptr + 2 * T * N + offs, pa)
        tl.store(out_ptr + 3 * T * N + offs, pb)
        tl.store(out_ptr + 4 * T * N + offs, tl.flip(b, 0))


@pytest.mark.skipif(not tu.INTERPRET, reason="the interpreter's fast paths")
def test_interpreter_scans_by_slices_with_the_same_bits() -> None:
    """A marked combine function's scan (one call per step over whole slices) gives bit for bit what Triton's
    element-by-element scan gives for the same body; tl.flip (an xor reduce) is numpy's flip."""
    assert tu.INTERPRETER_FAST_PATHS
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(16, 8, generator=g), torch.randn(16, 8, generator=g)
    out = torch.empty(5, 16, 8)
    _scans_kernel[(1,)](a, b, out, T=16, N=8)
    assert torch.equal(out[0], out[2]) and torch.equal(out[1], out[3])
    expect = b[0].clone()
    for t in range(1, 16):  # the sequential affine recurrence, as a check that the plain scan is one
        expect = a[t] * expect + b[t]
    assert torch.allclose(out[1, -1], expect, rtol=1e-5)
    assert torch.equal(out[4], b.flip(0))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_keep_an_fp32_state(dtype: torch.dtype, nan_poison: None) -> None:
    inp = make_inputs(2, 4, 15, 4, "var", "grouped", dtype, groups=2)
    # delta, A, delta_bias gradients sum many rounded products: allow more in half precision.
    check(inp, ALL, True, TOL[dtype], grad_rel=3 * TOL[dtype])


def test_strided_inputs_through_the_low_level_functions(nan_poison: None) -> None:
    """u/delta/z views with time not contiguous (the public wrapper would copy them) give the same numbers."""
    from jetson_mamba.ops.selective_scan import triton as backend

    inp = make_inputs(2, 5, 12, 3, "var", "var", torch.float32)
    strided = {k: (v.transpose(1, 2).contiguous().transpose(1, 2) if k in ("u", "delta", "z") else v)
               for k, v in inp.items()}
    assert strided["u"].stride(2) != 1
    args = [strided[k] for k in ARGS]
    out, out_z, last = backend.selective_scan_forward(*args, delta_softplus=True)
    ref_out, ref_last = selective_scan_ref(*[inp[k].double() for k in ARGS], delta_softplus=True,
                                           return_last_state=True)
    assert_close(out_z, ref_out, 2e-4, "out_z")
    ref_y = selective_scan_ref(*[inp[k].double() if k != "z" else None for k in ARGS], delta_softplus=True)
    assert_close(out, ref_y, 2e-4, "out (before the z gate)")
    assert_close(last, ref_last, 2e-4, "last_state")
    dout = torch.randn_like(out).transpose(1, 2).contiguous().transpose(1, 2)
    grads = backend.selective_scan_backward(*args, True, dout)
    plain = backend.selective_scan_backward(*[inp[k] for k in ARGS], True, dout.contiguous())
    for name, a, b in zip(("du", "ddelta", "dA", "dB", "dC", "dD", "ddelta_bias", "dz"), grads, plain):
        assert_close(a, b, 1e-5, name)


def test_softplus_matches_float64_across_its_range() -> None:
    """The kernels' softplus: its series below exp(x) = 1/32, log2 above (on a GPU the hardware lg2.approx,
    under the interpreter numpy's), x itself above 20, as torch and the CUDA kernels: within 1e-5 of
    float64, relative, from -40 to 40, including both sides of each switch."""
    x = torch.cat([torch.linspace(-40, 40, 4001), torch.tensor([-3.4657, -3.4657359, -3.4656, 19.999, 20.0, 20.001])])
    y = torch.full_like(x, float("nan")).to(DEVICE)
    _softplus_kernel[(tu.grid_size(x.numel(), 1024),)](x.to(DEVICE), y, x.numel(), BLOCK=1024)
    ref = torch.nn.functional.softplus(x.double())
    err = ((y.cpu().double() - ref).abs() / ref.abs()).max().item()
    assert err < 1e-5, f"softplus relative error {err:.2e}"


def test_complex_A_is_refused_with_a_fix() -> None:
    from jetson_mamba.ops.selective_scan import triton as backend

    inp = make_inputs(1, 2, 4, 2, "var", "var", torch.float32)
    with pytest.raises(BackendUnavailableError) as err:
        backend.selective_scan_forward(inp["u"], inp["delta"], inp["A"].to(torch.complex64), inp["B"], inp["C"])
    assert err.value.fix and "torch" in err.value.fix


@pytest.mark.parametrize("layout", ["fixed", "grouped"])
def test_forward_x_keeps_the_kernels_chunk_states(layout: str, nan_poison: None) -> None:
    """The stand-ins' x from the forward kernel itself: decay products and states at each chunk end."""
    from jetson_mamba.ops.selective_scan import triton as backend

    inp = make_inputs(2, 4, 75, 3, layout, layout, torch.float32, groups=2)
    args = [inp[k] for k in ARGS]
    out, out_z, x = backend.selective_scan_forward_x(*args, delta_softplus=True, every=32)
    plain = backend.selective_scan_forward(*args, delta_softplus=True)
    assert torch.equal(out, plain[0]) and torch.equal(out_z, plain[1])
    assert x.shape == (2, 4, 3, 6)
    ref = chunk_states_ref(*(inp[k].cpu().double() for k in ("u", "delta", "A", "B", "C", "delta_bias")),
                           delta_softplus=True, every=32)
    assert_close(x.cpu(), ref, TOL[torch.float32], "x")
    assert torch.equal(x[:, :, -1, 1::2], plain[2])
    with pytest.raises(ValueError, match="multiple of 32"):
        backend.selective_scan_forward_x(*args, delta_softplus=True, every=48)


def test_stand_in_backward_takes_out_z_from_the_kernel(monkeypatch: pytest.MonkeyPatch,
                                                       nan_poison: None) -> None:
    """mamba_ssm's recompute_out_z: on the Triton backend the backward kernel writes out_z (every element:
    buffers start as NaN); it matches the forward's out_z, and the gradients are the plain backward's."""
    from jetson_mamba.ops import use_backend
    from jetson_mamba.ops.selective_scan import triton as backend
    from jetson_mamba.ops.standins import selective_scan_cuda as standin

    inp = make_inputs(2, 4, 37, 3, "var", "var", torch.float32)
    args = [inp[k] for k in ARGS]
    fused = backend.selective_scan_backward_out_z
    calls = []
    monkeypatch.setattr(backend, "selective_scan_backward_out_z", lambda *a: calls.append(1) or fused(*a))
    with use_backend("triton"):
        out, x, out_z = standin.fwd(*args, True)
        dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(DEVICE)
        result = standin.bwd(*args, dout, x, out, None, True, True)
    assert calls == [1] and len(result) == 9
    assert_close(result[8], out_z, TOL[torch.float32], "out_z from the backward kernel")
    plain = backend.selective_scan_backward(*args, True, dout)
    for name, got, want in zip(("du", "ddelta", "dA", "dB", "dC", "dD", "ddelta_bias", "dz"), result, plain):
        assert torch.equal(got, want), name
    with pytest.raises(ValueError, match="needs z"):
        backend.selective_scan_backward_out_z(*args[:6], None, args[7], True, dout)


def test_stand_in_backward_reads_a_transposed_dout_and_writes_the_callers_dz(
        launches: List[Launch], nan_poison: None) -> None:
    """mamba_inner_fn's layouts: delta and dout are transposed matmul results (strides (L, batch*L, 1)) and
    dz a view into its dxz. The kernel reads that dout and writes that dz as they are: no copy of either
    (each a pass over batch x dim x L), and the same numbers as from contiguous tensors. du and ddelta come
    back in delta's layout, as the compiled kernel's ddelta does: mamba_inner_fn's (dim, batch*L) views."""
    from jetson_mamba.ops import use_backend
    from jetson_mamba.ops.selective_scan import triton as backend
    from jetson_mamba.ops.standins import selective_scan_cuda as standin

    inp = make_inputs(2, 4, 37, 3, "var", "var", torch.float32)
    inp["delta"] = inp["delta"].transpose(0, 1).contiguous().transpose(0, 1)
    args = [inp[k] for k in ARGS]
    dout = torch.randn(4, 2 * 37, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    dout = dout.view(4, 2, 37).permute(1, 0, 2)  # (batch, dim, L), strides (37, 74, 1)
    dxz = torch.full((2, 8, 37), float("nan"), device=DEVICE)
    dx, dz = dxz.chunk(2, dim=1)
    with use_backend("triton"):
        out, x, _ = standin.fwd(*args, True)
        launches.clear()
        result = standin.bwd(*args, dout, x, out, dz, True, False)
    ((_, kernel_args),) = launches
    assert kernel_args[8] is dout, "dout was copied before the kernel"
    assert kernel_args[12].data_ptr() == dz.data_ptr() and kernel_args[12].stride() == dz.stride()
    assert result[7] is dz and not dz.isnan().any() and dx.isnan().all()
    assert result[0].stride() == result[1].stride() == inp["delta"].stride() == (37, 74, 1)
    plain = backend.selective_scan_backward(*args, True, dout.contiguous())
    for name, got, want in zip(("du", "ddelta", "dA", "dB", "dC", "dD", "ddelta_bias", "dz"), result, plain):
        assert torch.equal(got, want), name
    with pytest.raises(ValueError, match="dz must be like z"):
        backend.selective_scan_backward(*args, True, dout, dz=dz[:, :, 1:])


def test_batch_one_and_batch_eight_tune_apart() -> None:
    """Batch is in the autotuning key (as a class), so batch 1 is not run with batch 8's wide blocks."""
    from jetson_mamba.ops.selective_scan import triton as backend

    assert [backend.batch_class(b) for b in (1, 2, 3, 5, 8, 9, 16, 64)] == [1, 2, 4, 8, 8, 16, 16, 16]

    def key(batch: int) -> list:
        args = backend._common_args(*make_inputs(batch, 4, 4, 2, "var", "var", torch.float32).values())
        return [args[k] for k in backend._fwd.keys]

    assert key(1) != key(8) and key(9) == key(16)
    assert "batch_class" in backend._bwd.keys


def test_lengths_of_one_power_of_two_class_tune_once() -> None:
    """The autotuners see a length's power-of-two class, not the length: a new prompt length in the same
    class reuses the tuned config instead of benchmarking every candidate again."""
    from jetson_mamba.ops import triton_utils
    from jetson_mamba.ops.selective_scan import triton as backend

    assert [triton_utils.next_power_of_2(n) for n in (0, 1, 2, 3, 5, 1000, 1024, 1025)] == \
        [1, 1, 2, 4, 8, 1024, 1024, 2048]

    def key(L: int) -> list:
        args = backend._common_args(*make_inputs(1, 4, L, 2, "var", "var", torch.float32).values())
        assert args["L"] == L  # the kernels still get the true length
        return [args[k] for k in backend._fwd.keys]

    assert "L" not in backend._fwd.keys and "L" not in backend._bwd.keys
    assert key(1000) == key(1024) != key(1025)


# Every way a gradient is summed across programs: fixed B/C (over batch rows), variable B/C (over channel
# blocks), groups that a channel block lies in (vmamba-K4) or straddles (nonuniform, per-channel), mixed.
DET_CASES = {
    "fixed-BC": (2, 6, 19, 5, "fixed", "fixed", 1),
    "var-BC": (2, 5, 23, 4, "var", "var", 1),
    "grouped-nonuniform": (2, 6, 13, 4, "grouped", "grouped", 2),
    "grouped-uniform": (2, 8, 21, 4, "grouped", "grouped", 4),
    "per-channel-B-var-C": (1, 4, 9, 3, "grouped", "var", 4),
    "var-B-fixed-C": (2, 4, 11, 2, "var", "fixed", 1),
}


@pytest.mark.parametrize("case", sorted(DET_CASES))
def test_deterministic_mode_sums_gradients_without_atomics(case: str, launches: List[Launch],
                                                           atomics: List[int], deterministic: None,
                                                           nan_poison: None) -> None:
    """With torch.use_deterministic_algorithms(True) each backward program stores its sums (dA, dD,
    ddelta_bias, fixed dB/dC per batch row; variable/grouped dB/dC per channel block) into its own slots
    and the host adds them in a fixed order: no atomics, the deterministic kernel, the reference's numbers."""
    from jetson_mamba.ops.selective_scan import triton as backend

    batch, dim, L, N, bl, cl, groups = DET_CASES[case]
    check(make_inputs(batch, dim, L, N, bl, cl, torch.float32, groups), ALL, True, TOL[torch.float32])
    assert not atomics, f"{len(atomics)} atomics in deterministic mode"
    assert [launch.kernel for launch in launches] == [backend._fwd, backend._bwd_det]


def test_default_mode_keeps_the_atomics(launches: List[Launch], atomics: List[int]) -> None:
    """Outside deterministic mode the backward still adds its gradients with atomics (the fast path)."""
    from jetson_mamba.ops.selective_scan import triton as backend

    assert not torch.are_deterministic_algorithms_enabled()
    check(make_inputs(*DET_CASES["grouped-nonuniform"][:6], torch.float32, 2), ALL, True, TOL[torch.float32])
    assert atomics
    assert [launch.kernel for launch in launches] == [backend._fwd, backend._bwd]


def test_group_sums_add_each_groups_blocks_in_order() -> None:
    """The host's reduction of straddling groups, on numbers whose sum shows where each slot went: blocks
    of 8 channels, groups of 3 (a block touches up to 4 groups; group 2 spans blocks 0 and 1)."""
    from jetson_mamba.ops.selective_scan import triton as backend

    groups, dpg, bd = 8, 3, backend._DET_CONFIG[0]
    dim = groups * dpg
    blocks, slots = -(-dim // bd), backend._slots(groups, dpg, bd)
    per_channel = torch.randn(2, dim, 3, 5, dtype=torch.float64)
    part = torch.zeros(2, blocks, slots, 3, 5, dtype=torch.float64)
    for c in range(dim):
        j = c // bd
        part[:, j, c // dpg - j * bd // dpg] += per_channel[:, c]
    expect = per_channel.view(2, groups, dpg, 3, 5).sum(2)
    torch.testing.assert_close(backend._group_sums(part.to(DEVICE), groups, dpg).cpu(), expect)


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="reproducibility of GPU atomics needs a GPU")
@pytest.mark.parametrize("layout", ["var", "fixed", "grouped-4", "grouped-256"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_deterministic_mode_is_bitwise_reproducible_on_gpu(layout: str, dtype: torch.dtype,
                                                           deterministic: None) -> None:
    """4 x 1024 x 2048, dstate 16 with D, z and delta_bias, 20 backwards: every gradient bitwise equal.
    grouped-256: 4 channels per group, so each channel block of the kernel straddles groups."""
    from jetson_mamba.ops.selective_scan import triton as backend

    bl = layout.split("-")[0]
    groups = int(layout.split("-")[1]) if bl == "grouped" else 1
    inp = make_inputs(4, 1024, 2048, 16, bl, bl, dtype, groups)
    args = [inp[k] for k in ARGS]
    dout = torch.randn(inp["u"].shape, device="cuda", generator=torch.Generator("cuda").manual_seed(2)).to(dtype)
    first = backend.selective_scan_backward(*args, True, dout)
    for _ in range(19):
        again = backend.selective_scan_backward(*args, True, dout)
        for name, a, c in zip(("du", "ddelta", "dA", "dB", "dC", "dD", "ddelta_bias", "dz"), again, first):
            assert torch.equal(a, c), f"{name} differs between runs"


REAL = {
    # Mamba block scan (bf16 and fp32) and Mamba-YOLO's SS2D scan (grouped K=4, no z, fp32).
    "mamba-bf16": ((2, 256, 2048, 16, "var", "var", 1, ALL, True), torch.bfloat16),
    "mamba-fp32": ((2, 256, 2048, 16, "var", "var", 1, ALL, True), torch.float32),
    "yolo-K4-fp32": ((2, 4 * 64, 1600, 16, "grouped", "grouped", 4, ("D", "delta_bias"), True), torch.float32),
}


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="real shapes need a GPU")
@pytest.mark.parametrize("case", sorted(REAL))
def test_real_shapes_on_gpu(case: str) -> None:
    (batch, dim, L, N, bl, cl, groups, use, softplus), dtype = REAL[case]
    tol = TOL[dtype] * (2 if dtype == torch.float32 else 1)
    check(make_inputs(batch, dim, L, N, bl, cl, dtype, groups), use, softplus, tol, grad_rel=3 * tol)
