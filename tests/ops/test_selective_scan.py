"""The portable selective scan and the public selective_scan_fn against the float64 reference."""

from __future__ import annotations

import itertools
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
import torch

from jetson_mamba.ops import selective_scan_fn
from jetson_mamba.ops.selective_scan import naive
from jetson_mamba.ops.selective_scan import torch as scan_torch
from jetson_mamba.verify.cases import SCAN_CASES, ScanCase

pytestmark = pytest.mark.usefixtures("clean_dispatch", "nan_empty")

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def make_inputs(case: ScanCase, dtype: torch.dtype, seed: int = 0) -> Dict[str, Optional[torch.Tensor]]:
    """Inputs as Mamba produces them: A < 0, delta around softplus's range, fp32 A/D/bias (fp64 in fp64)."""
    g = torch.Generator().manual_seed(seed)
    batch, dim, L, dstate = case.batch, case.dim, case.length, case.dstate

    def rnd(*shape: int, dt: torch.dtype = dtype, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dt)

    wdt = torch.float64 if dtype == torch.float64 else torch.float32
    if case.bc == "fixed":
        B, C = rnd(dim, dstate, dt=wdt), rnd(dim, dstate, dt=wdt)
    elif case.bc == "variable":
        B, C = rnd(batch, dstate, L), rnd(batch, dstate, L)
    else:
        B, C = rnd(batch, case.groups, dstate, L), rnd(batch, case.groups, dstate, L)
    return {
        "u": rnd(batch, dim, L), "delta": rnd(batch, dim, L, scale=case.delta_scale).abs(),
        "A": (-0.5 - torch.rand(dim, dstate, generator=g, dtype=torch.float64) * 2).to(wdt),
        "B": B, "C": C, "D": rnd(dim, dt=wdt) if case.D else None, "z": rnd(batch, dim, L) if case.z else None,
        "delta_bias": rnd(dim, dt=wdt, scale=0.5).abs() if case.delta_bias else None,
    }


def reference(inputs: Dict[str, Optional[torch.Tensor]], softplus: bool, dout: torch.Tensor
              ) -> Tuple[torch.Tensor, torch.Tensor, List[Optional[torch.Tensor]]]:
    """(out, last_state, grads in NAMES order) from the naive scan in float64 on the same values."""
    leaves = {k: None if v is None else v.detach().double().requires_grad_(True) for k, v in inputs.items()}
    out, last = naive.selective_scan_ref(*(leaves[k] for k in NAMES), delta_softplus=softplus,
                                         return_last_state=True)
    out.backward(dout.double())
    return out.detach(), last.detach(), [None if leaves[k] is None else leaves[k].grad for k in NAMES]


# Small chunks so short test sequences cross chunk (and sub-block) boundaries, for each plan.
PLANS = {
    "two-level": {"CHUNK": 32, "SUB": 8, "SEQUENTIAL_BLOCK": 1 << 40},
    "sequential": {"CHUNK_SEQUENTIAL": 16, "SEQUENTIAL_BLOCK": 0},
}


def use_plan(monkeypatch: pytest.MonkeyPatch, plan: str) -> None:
    for name, value in PLANS[plan].items():
        monkeypatch.setattr(scan_torch, name, value)


# verify/cases.py's one table: the edge cases and what `verify --quick` checks, each under a chunk plan.
CASES = list(zip(SCAN_CASES["edge"] + SCAN_CASES["quick"], itertools.cycle(("two-level", "sequential"))))


def _case_id(case: Tuple[ScanCase, str]) -> str:
    c, plan = case
    flags = "".join(f"-{name}" for name, on in (("z", c.z), ("D", c.D), ("bias", c.delta_bias), ("sp", c.softplus))
                    if on)
    return f"b{c.batch}d{c.dim}L{c.length}n{c.dstate}-{c.bc}{c.groups}{flags}-{plan}"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_torch_backend_matches_reference(case: Tuple[ScanCase, str], dtype: torch.dtype, close: Callable[..., None],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    scan, plan = case
    use_plan(monkeypatch, plan)
    inputs = make_inputs(scan, dtype)
    batch, dim, L, softplus, with_z = scan.batch, scan.dim, scan.length, scan.softplus, scan.z
    dout = torch.randn(batch, dim, L, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
    ref_out, ref_last, ref_grads = reference(inputs, softplus, dout)
    args = [inputs[k] for k in NAMES]
    out, out_z, last = scan_torch.selective_scan_forward(*args, delta_softplus=softplus)
    assert out.dtype == dtype and last.dtype in (torch.float32, torch.float64)
    close(out_z if with_z else out, ref_out, dtype, "out")
    assert (out_z is None) == (not with_z)
    close(last, ref_last, dtype, "last_state")
    u, delta, A, B, C, D, z, delta_bias = args
    grads = scan_torch.selective_scan_backward(u, delta, A, B, C, D, z, delta_bias, softplus, dout)
    # backward returns (du, ddelta, dA, dB, dC, dD, ddelta_bias, dz)
    order = dict(zip(("u", "delta", "A", "B", "C", "D", "delta_bias", "z"), grads))
    for name, ref in zip(NAMES, ref_grads):
        got = order[name]
        if got is not None and inputs[name] is not None:
            assert got.dtype == inputs[name].dtype, f"d{name} dtype"
        close(got, ref, dtype, f"d{name}")


@pytest.mark.parametrize("plan", sorted(PLANS))
def test_chunks_are_independent_of_chunk_size(plan: str, monkeypatch: pytest.MonkeyPatch,
                                              close: Callable[..., None]) -> None:
    """Carrying state across many small chunks gives the same numbers as one big chunk."""
    inputs = make_inputs(ScanCase(1, 4, 100, 8), torch.float64)
    args = [inputs[k] for k in NAMES]
    dout = torch.randn(1, 4, 100, dtype=torch.float64)
    big = scan_torch.selective_scan_forward(*args, delta_softplus=True)[1]
    gbig = scan_torch.selective_scan_backward(*args[:5], args[5], args[6], args[7], True, dout)
    use_plan(monkeypatch, plan)
    small = scan_torch.selective_scan_forward(*args, delta_softplus=True)[1]
    gsmall = scan_torch.selective_scan_backward(*args[:5], args[5], args[6], args[7], True, dout)
    close(small, big, torch.float64, "out")
    for a, b in zip(gsmall, gbig):
        close(a, b, torch.float64)


@pytest.mark.parametrize("plan", sorted(PLANS))
def test_large_decay_does_not_overflow(plan: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """delta * A summed over a chunk far below -88 (exp(-cumsum) would overflow fp32): still finite."""
    inputs = make_inputs(ScanCase(1, 4, 200, 4, z=False, D=False, delta_bias=False), torch.float32)
    inputs["delta"] = torch.full((1, 4, 200), 30.0)
    inputs["A"] = torch.full((4, 4), -5.0)
    use_plan(monkeypatch, plan)
    args = [inputs[k] for k in NAMES]
    out, _, last = scan_torch.selective_scan_forward(*args)
    grads = scan_torch.selective_scan_backward(*args, False, torch.ones_like(out))
    assert torch.isfinite(out).all() and torch.isfinite(last).all()
    assert all(torch.isfinite(g).all() for g in grads if g is not None)
    ref = naive.selective_scan_ref(*args)
    assert torch.allclose(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("return_last_state", [False, True])
def test_public_fn_autograd(return_last_state: bool, close: Callable[..., None]) -> None:
    """selective_scan_fn: upstream signature, autograd gives every input's gradient."""
    inputs = make_inputs(ScanCase(2, 6, 40, 4), torch.float32)
    leaves = {k: None if v is None else v.clone().requires_grad_(True) for k, v in inputs.items()}
    dout = torch.randn(2, 6, 40, dtype=torch.float64)
    ref_out, ref_last, ref_grads = reference(inputs, True, dout)
    result = selective_scan_fn(leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"],
                               D=leaves["D"], z=leaves["z"], delta_bias=leaves["delta_bias"],
                               delta_softplus=True, return_last_state=return_last_state)
    out = result[0] if return_last_state else result
    if return_last_state:
        close(result[1], ref_last, torch.float32, "last_state")
        assert not result[1].requires_grad
    close(out, ref_out, torch.float32, "out")
    out.backward(dout.float())
    for name, ref in zip(NAMES, ref_grads):
        close(leaves[name].grad, ref, torch.float32, f"d{name}")


def test_public_fn_non_contiguous_inputs(close: Callable[..., None]) -> None:
    """Transposed (non-contiguous) u / delta / B / C are accepted, as upstream makes them contiguous."""
    inputs = make_inputs(ScanCase(1, 4, 20, 4, z=False, delta_bias=False), torch.float32)
    u = inputs["u"].transpose(1, 2).contiguous().transpose(1, 2)
    B = inputs["B"].transpose(1, 2).contiguous().transpose(1, 2)
    out = selective_scan_fn(u, inputs["delta"], inputs["A"], B, inputs["C"], D=inputs["D"])
    close(out, naive.selective_scan_ref(*(inputs[k] for k in NAMES)), torch.float32, "out")


def test_compiled_fixed_B_state_gets_its_B_factor_back() -> None:
    """The compiled kernel scans delta*u without a fixed B (see cuda.last_state): its stored state is the
    state of a scan with B = 1. Multiplying B back must give the true final state, for every B."""
    from jetson_mamba.ops.selective_scan.cuda import last_state
    from jetson_mamba.ops.selective_scan.naive import selective_scan_ref

    g = torch.Generator().manual_seed(7)
    batch, dim, L, N = 2, 5, 23, 3
    u, delta = torch.randn(batch, dim, L, generator=g), 0.5 * torch.rand(batch, dim, L, generator=g)
    A = -0.5 * torch.rand(dim, N, generator=g) - 0.1
    B, C = torch.randn(dim, N, generator=g), torch.randn(dim, N, generator=g)
    _, kernel_like = selective_scan_ref(u, delta, A, torch.ones(dim, N), C, return_last_state=True)
    x = torch.zeros(batch, dim, 1, 2 * N)
    x[:, :, -1, 1::2] = kernel_like
    _, truth = selective_scan_ref(u, delta, A, B, C, return_last_state=True)
    torch.testing.assert_close(last_state(x, B), truth)
    assert not torch.allclose(x[:, :, -1, 1::2], truth)  # the uncorrected state is wrong
    variable = torch.randn(batch, N, L, generator=g)
    assert torch.equal(last_state(x, variable), x[:, :, -1, 1::2])


@pytest.mark.parametrize("bc", ["fixed", "grouped"])
@pytest.mark.parametrize("plan", sorted(PLANS))
def test_forward_x_keeps_the_kernels_chunk_states(plan: str, bc: str, monkeypatch: pytest.MonkeyPatch,
                                                  close: Callable[..., None]) -> None:
    """x from the same pass as out: decay products and states at every chunk end, the last chunk short."""
    inputs = make_inputs(ScanCase(2, 4, 150, 3, bc=bc, groups=2), torch.float64)
    args = [inputs[k] for k in NAMES]
    use_plan(monkeypatch, plan)
    out, out_z, x = scan_torch.selective_scan_forward_x(*args, delta_softplus=True, every=64)
    plain = scan_torch.selective_scan_forward(*args, delta_softplus=True)
    assert torch.equal(out, plain[0]) and torch.equal(out_z, plain[1])
    assert x.shape == (2, 4, 3, 6) and x.dtype == torch.float32
    ref = naive.chunk_states_ref(*(inputs[k] for k in ("u", "delta", "A", "B", "C", "delta_bias")),
                                 delta_softplus=True, every=64)
    close(x, ref, torch.float32, "x")
    close(x[:, :, -1, 1::2], plain[2], torch.float32, "x's last state")
    with pytest.raises(ValueError, match="not a multiple of the chunk"):
        scan_torch.selective_scan_forward_x(*args, delta_softplus=True, every=40)


def test_compiled_forward_x_gets_fixed_B_states_right(kernel_like_scan: Any, monkeypatch: pytest.MonkeyPatch,
                                                      close: Callable[..., None]) -> None:
    """The cuda backend's x is the kernel's, every chunk's fixed-B state given its B factor back."""
    from jetson_mamba.ops.selective_scan import cuda

    monkeypatch.setattr(cuda, "load_extension", lambda name: kernel_like_scan)
    inputs = make_inputs(ScanCase(1, 3, 2100, 2, bc="fixed", z=False), torch.float32)
    args = [inputs[k] for k in NAMES]
    _, _, x = cuda.selective_scan_forward_x(*args, delta_softplus=True, every=2048)
    ref = naive.chunk_states_ref(*(inputs[k] for k in ("u", "delta", "A", "B", "C", "delta_bias")),
                                 delta_softplus=True)
    assert x.shape == (1, 3, 2, 4)
    close(x, ref, torch.float32, "x")
    with pytest.raises(ValueError, match="every 2048 steps"):
        cuda.selective_scan_forward_x(*args, delta_softplus=True, every=1024)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="reproducibility on a GPU needs a GPU")
@pytest.mark.parametrize("bc", ["variable", "fixed", "grouped"])
def test_torch_backends_are_bitwise_reproducible_in_deterministic_mode_on_gpu(
        bc: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The portable backwards (this scan, and the conv's) sum with torch reductions, matmuls and Python-ordered
    adds, no index_add_/scatter_add_: with torch.use_deterministic_algorithms(True) 20 runs at a real shape
    (4 x 1024 x 2048, dstate 16, bf16) give bitwise equal gradients. Deterministic mode makes torch refuse
    cuBLAS (the scan's bmm) unless CUBLAS_WORKSPACE_CONFIG is set, as torch documents."""
    from jetson_mamba.ops.causal_conv1d import torch as conv_torch

    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    inp = make_inputs(ScanCase(4, 1024, 2048, 16, bc=bc, groups=4), torch.bfloat16)
    args = [None if inp[k] is None else inp[k].cuda() for k in NAMES]  # type: ignore[union-attr]
    dout = torch.randn(args[0].shape, device="cuda", generator=torch.Generator("cuda").manual_seed(2))
    x, w = args[0].transpose(1, 2).contiguous().transpose(1, 2), torch.randn(1024, 4, device="cuda")
    old = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        runs = [(scan_torch.selective_scan_backward(*args, True, dout.to(torch.bfloat16)),
                 conv_torch.causal_conv1d_backward(x, w, args[5], dout.to(x.dtype), None, None, None, True))
                for _ in range(20)]
    finally:
        torch.use_deterministic_algorithms(old)
    for scan_grads, conv_grads in runs[1:]:
        for name, a, c in zip(("du", "ddelta", "dA", "dB", "dC", "dD", "ddelta_bias", "dz", "dx", "dweight",
                               "dbias"), [*scan_grads, *conv_grads], [*runs[0][0], *runs[0][1]]):
            assert (a is None and c is None) or torch.equal(a, c), f"{name} differs between runs"
