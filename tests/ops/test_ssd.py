"""mamba_chunk_scan_combined (portable chunked SSD) against a float64 step-by-step recurrence."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import pytest
import torch
from upstream_sources import ssd_minimal

from jetson_mamba.ops.ssd import SSDInputError, mamba_chunk_scan_combined
from jetson_mamba.ops.ssd import torch as ssd_torch
from jetson_mamba.ops.ssd.naive import ssd_ref

TOL = {torch.float32: 2e-4, torch.bfloat16: 3e-2, torch.float16: 5e-3}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rel: float, what: str) -> None:
    """Max abs error relative to the largest reference value (robust for values near zero)."""
    assert actual.shape == expected.shape, what
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    err = (actual.double() - expected.double()).abs().max().item()
    scale = expected.double().abs().max().item() + 1e-6
    assert err <= rel * scale, f"{what}: max error {err:.3g} > {rel} * {scale:.3g}"


def make_inputs(batch: int, seqlen: int, nheads: int, headdim: int, ngroups: int, dstate: int,
                dtype: torch.dtype, seed: int = 0) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, scale: float = 1.0, dt: torch.dtype = dtype) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * scale).to(dt)

    return {
        "x": rnd(batch, seqlen, nheads, headdim),
        "dt": rnd(batch, seqlen, nheads, scale=0.5) - 1.0,
        "A": -torch.rand(nheads, generator=g) * 2 - 0.2,
        "B": rnd(batch, seqlen, ngroups, dstate),
        "C": rnd(batch, seqlen, ngroups, dstate),
        "D": rnd(nheads, dt=torch.float32),
        "D2": rnd(nheads, headdim, dt=torch.float32),
        "z": rnd(batch, seqlen, nheads, headdim),
        "dt_bias": rnd(nheads, scale=0.3, dt=torch.float32),
        "init": rnd(batch, nheads, headdim, dstate, dt=torch.float32),
    }


CASES = {
    "plain": dict(),
    "full": dict(D="D", z="z", dt_bias="dt_bias", initial_states="init", dt_softplus=True),
    "D2-limit": dict(D="D2", dt_bias="dt_bias", dt_softplus=True, dt_limit=(0.05, 0.4)),
    "no-softplus": dict(z="z", initial_states="init"),  # negative dt is clamped to 0, as upstream
}


def run_case(inp: Dict[str, torch.Tensor], case: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, str], Dict[str, Any]]:
    """Leaf tensors needing gradients, {argument: leaf name} and the plain options of one case."""
    opts = dict(CASES[case])
    names = {arg: opts.pop(arg) for arg in ("D", "z", "dt_bias", "initial_states") if arg in opts}
    leaves = {n: inp[n].clone().requires_grad_() for n in ["x", "dt", "A", "B", "C", *names.values()]}
    return leaves, names, opts


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("seqlen,chunk_size", [(1, 16), (37, 16), (64, 16), (50, 64)])
@pytest.mark.parametrize("ngroups", [1, 2])
@pytest.mark.parametrize("case", sorted(CASES))
def test_outputs_and_gradients_match_float64(dtype: torch.dtype, seqlen: int, chunk_size: int, ngroups: int,
                                             case: str) -> None:
    inp = make_inputs(2, seqlen, 4, 6, ngroups, 8, dtype)
    leaves, names, opts = run_case(inp, case)
    out, final = mamba_chunk_scan_combined(leaves["x"], leaves["dt"], leaves["A"], leaves["B"], leaves["C"],
                                           chunk_size, return_final_states=True,
                                           **{a: leaves[n] for a, n in names.items()}, **opts)
    assert out.dtype == dtype and final.dtype == torch.float32
    ref_leaves = {k: v.detach().double().requires_grad_() for k, v in leaves.items()}
    ref_kwargs = {a: ref_leaves[n] for a, n in names.items()}
    ref_kwargs.update(opts)
    ref_out, ref_final = ssd_ref(ref_leaves["x"], ref_leaves["dt"], ref_leaves["A"], ref_leaves["B"],
                                 ref_leaves["C"], **ref_kwargs)
    rel = TOL[dtype]
    assert_close(out, ref_out, rel, "out")
    assert_close(final, ref_final, rel, "final_states")
    g = torch.Generator().manual_seed(1)
    dout = torch.randn(out.shape, generator=g)
    dfinal = torch.randn(final.shape, generator=g)
    torch.autograd.backward([out, final], [dout.to(dtype), dfinal])
    torch.autograd.backward([ref_out, ref_final], [dout.double(), dfinal.double()])
    for name, leaf in leaves.items():
        assert leaf.grad is not None and leaf.grad.dtype == leaf.dtype, name
        # dt, A and dt_bias gradients sum over many products: bf16 inputs make them noisier.
        assert_close(leaf.grad, ref_leaves[name].grad, rel * (3 if dtype == torch.bfloat16 else 1), f"d{name}")


def test_float64_gradcheck() -> None:
    """Exact analytic-vs-numeric gradients through the chunked form (fp64 computes in fp64)."""
    inp = make_inputs(1, 7, 2, 2, 1, 3, torch.float64, seed=3)
    args = [inp[k].double().requires_grad_() for k in ("x", "dt", "A", "B", "C", "D", "z", "dt_bias", "init")]

    def fn(x, dt, A, B, C, D, z, dt_bias, init):
        return mamba_chunk_scan_combined(x, dt, A, B, C, 3, D=D, z=z, dt_bias=dt_bias, initial_states=init,
                                         dt_softplus=True, return_final_states=True)

    assert torch.autograd.gradcheck(fn, args, atol=1e-7, rtol=1e-5)


def test_seq_idx_restarts_the_state_like_separate_sequences() -> None:
    inp = make_inputs(2, 45, 4, 3, 2, 5, torch.float32, seed=5)
    seq_idx = torch.tensor([[0] * 10 + [1] * 20 + [2] * 15, [0] * 16 + [3] * 29], dtype=torch.int32)
    x = inp["x"].requires_grad_()
    out, final = mamba_chunk_scan_combined(x, inp["dt"], inp["A"], inp["B"], inp["C"], 16, D=inp["D"],
                                           dt_bias=inp["dt_bias"], initial_states=inp["init"], seq_idx=seq_idx,
                                           dt_softplus=True, return_final_states=True)
    ref_out, ref_final = ssd_ref(x.detach(), inp["dt"], inp["A"], inp["B"], inp["C"], D=inp["D"],
                                 dt_bias=inp["dt_bias"], initial_states=inp["init"], seq_idx=seq_idx,
                                 dt_softplus=True)
    assert_close(out, ref_out, 2e-4, "out")
    assert_close(final, ref_final, 2e-4, "final")
    # The same thing by hand: batch row 0, third sequence, run alone from a zero state.
    alone = mamba_chunk_scan_combined(inp["x"][:1, 30:], inp["dt"][:1, 30:], inp["A"], inp["B"][:1, 30:],
                                      inp["C"][:1, 30:], 16, D=inp["D"], dt_bias=inp["dt_bias"], dt_softplus=True)
    assert_close(out[:1, 30:], alone, 1e-5, "third sequence")


def test_varlen_states_are_each_sequences_final_state() -> None:
    inp = make_inputs(1, 40, 4, 3, 1, 5, torch.bfloat16, seed=7)
    cu = torch.tensor([0, 9, 9, 33, 40], dtype=torch.int32)
    seq_idx = torch.tensor([[0] * 9 + [2] * 24 + [3] * 7], dtype=torch.int32)
    out, final, varlen = mamba_chunk_scan_combined(
        inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], 16, dt_bias=inp["dt_bias"], dt_softplus=True,
        seq_idx=seq_idx, cu_seqlens=cu, return_final_states=True, return_varlen_states=True)
    assert varlen.shape == (4, 4, 3, 5) and varlen.dtype == torch.bfloat16
    bounds: List[int] = cu.tolist()
    for i, (s, e) in enumerate(zip(bounds, bounds[1:])):
        if s == e:
            assert torch.equal(varlen[i], torch.zeros_like(varlen[i]))
            continue
        _, ref_final = ssd_ref(inp["x"][:, s:e], inp["dt"][:, s:e], inp["A"], inp["B"][:, s:e], inp["C"][:, s:e],
                               dt_bias=inp["dt_bias"], dt_softplus=True)
        assert_close(varlen[i].float(), ref_final[0], 2e-2, f"sequence {i}")
    assert_close(final[0], varlen[-1].float(), 2e-2, "last sequence's state is the final state")
    # Without return_varlen_states the return value is just out, or (out, final).
    assert isinstance(mamba_chunk_scan_combined(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], 16), torch.Tensor)


# Offsets that fall on and beside chunk edges (chunk 8), empty sequences first, inside and last, a first
# sequence starting after 0 (its initial state is then unused) and a last one ending before seqlen.
VARLEN_OFFSETS = [[0, 8, 8, 9, 24, 30, 61], [0, 0, 5, 16, 17, 61], [3, 11, 40, 40], [0, 61], [0, 7, 7]]


@pytest.mark.parametrize("offsets", VARLEN_OFFSETS, ids=lambda o: "-".join(map(str, o)))
@pytest.mark.parametrize("ngroups", [1, 2])
def test_varlen_states_against_each_sequence_alone(offsets: List[int], ngroups: int) -> None:
    """Each state equals the float64 recurrence over its sequence alone, from zero or (the first, at
    offset 0) from initial_states; gradients flow to every input, initial_states included."""
    inp = make_inputs(1, 61, 4, 3, ngroups, 5, torch.float32, seed=len(offsets))
    leaves = {k: inp[k].clone().requires_grad_() for k in ("x", "dt", "B", "init")}
    cu = torch.tensor(offsets, dtype=torch.int32)
    _, varlen = mamba_chunk_scan_combined(leaves["x"], leaves["dt"], inp["A"], leaves["B"], inp["C"], 8,
                                          dt_bias=inp["dt_bias"], dt_softplus=True, initial_states=leaves["init"],
                                          cu_seqlens=cu, return_varlen_states=True)
    assert varlen.shape == (len(offsets) - 1, 4, 3, 5)
    for i, (s, e) in enumerate(zip(offsets, offsets[1:])):
        init = inp["init"] if i == 0 and s == 0 else torch.zeros_like(inp["init"])
        if s == e:
            assert torch.equal(varlen[i], init[0]), f"sequence {i} is empty"
            continue
        _, want = ssd_ref(inp["x"][:, s:e], inp["dt"][:, s:e], inp["A"], inp["B"][:, s:e], inp["C"][:, s:e],
                          dt_bias=inp["dt_bias"], dt_softplus=True, initial_states=init)
        assert_close(varlen[i], want[0], 1e-5, f"sequence {i} [{s}, {e})")
    varlen.square().sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in leaves.values())
    assert (leaves["init"].grad.abs().sum() > 0) == (offsets[0] == 0)


def test_multi_block_checkpointing_gives_the_same_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    """Long sequences are split into checkpointed blocks; results must not depend on the split."""
    inp = make_inputs(1, 70, 2, 4, 1, 4, torch.float32, seed=11)
    seq_idx = torch.tensor([[0] * 33 + [1] * 37], dtype=torch.int32)

    def grads() -> List[torch.Tensor]:
        leaves = [inp[k].clone().requires_grad_() for k in ("x", "dt", "A", "B", "C", "init")]
        out, final = mamba_chunk_scan_combined(*leaves[:5], 8, initial_states=leaves[5], seq_idx=seq_idx,
                                               dt_softplus=True, return_final_states=True)
        (out.square().sum() + final.sum()).backward()
        return [out.detach(), final.detach()] + [t.grad for t in leaves]

    whole = grads()
    calls = []
    real = ssd_torch.checkpoint
    monkeypatch.setattr(ssd_torch, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(ssd_torch, "BLOCK_ELEMENTS", 2 * 8 * 8 * 3)  # 3 chunks per block -> 3 blocks
    blocked = grads()
    assert len(calls) == 3
    for a, b in zip(whole, blocked):
        assert_close(b, a, 1e-5, "blocked vs whole")


def test_matches_upstream_ssd_minimal(shared) -> None:
    """mamba-ssm's own ssd_minimal_discrete (Listing 1 of the paper, from the 2.2.4 sdist) agrees."""
    pytest.importorskip("einops")
    minimal = ssd_minimal(shared / "sdists" / "mamba_ssm-2.2.4.tar.gz")
    inp = make_inputs(2, 64, 4, 8, 1, 16, torch.float32, seed=13)
    dt = torch.nn.functional.softplus(inp["dt"] - 1)
    init = inp["init"]
    y_min, final_min = minimal(
        inp["x"] * dt[..., None], inp["A"] * dt, inp["B"].expand(-1, -1, 4, -1), inp["C"].expand(-1, -1, 4, -1), 16,
        initial_states=init[:, None])
    y, final = mamba_chunk_scan_combined(inp["x"], dt, inp["A"], inp["B"], inp["C"], 32, initial_states=init,
                                         return_final_states=True)
    assert_close(y, y_min, 1e-4, "out vs ssd_minimal")
    assert_close(final, final_min, 1e-4, "final vs ssd_minimal")


def test_large_decay_stays_finite() -> None:
    """Strong decay over a long chunk: the stable segment sum never forms exp(+large)."""
    inp = make_inputs(1, 256, 2, 4, 1, 4, torch.float32, seed=17)
    A = torch.tensor([-80.0, -0.01])
    out = mamba_chunk_scan_combined(inp["x"], inp["dt"].abs() + 1.0, A, inp["B"], inp["C"], 256)
    ref, _ = ssd_ref(inp["x"], inp["dt"].abs() + 1.0, A, inp["B"], inp["C"])
    assert_close(out, ref, 2e-4, "out")


def test_fp16_inputs_run_in_fp32() -> None:
    inp = make_inputs(1, 20, 2, 4, 1, 4, torch.float16, seed=19)
    out = mamba_chunk_scan_combined(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], 8, z=inp["z"],
                                    dt_softplus=True)
    ref, _ = ssd_ref(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], z=inp["z"], dt_softplus=True)
    assert out.dtype == torch.float16
    assert_close(out, ref, TOL[torch.float16], "out")


def test_autocast_does_not_lower_the_scan_precision() -> None:
    inp = make_inputs(1, 33, 2, 4, 1, 4, torch.float32, seed=23)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mamba_chunk_scan_combined(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], 16, dt_softplus=True)
    ref, _ = ssd_ref(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], dt_softplus=True)
    assert out.dtype == torch.float32
    assert_close(out, ref, 2e-4, "out under autocast")


@pytest.mark.parametrize("bad,needle", [
    (dict(dt=torch.zeros(2, 9, 3)), "dt has shape"),
    (dict(A=torch.zeros(3)), "A has shape"),
    (dict(B=torch.zeros(2, 9, 3, 5)), "B has shape"),
    (dict(C=torch.zeros(2, 9, 2, 4)), "C has shape"),
    (dict(D=torch.zeros(4, 2)), "D has shape"),
    (dict(initial_states=torch.zeros(2, 4, 6, 4)), "initial_states has shape"),
    (dict(seq_idx=torch.zeros(2, 9)), "seq_idx"),
    (dict(chunk_size=0), "chunk_size"),
    (dict(return_varlen_states=True), "cu_seqlens"),
])
def test_bad_inputs_say_what_and_how_to_fix(bad: Dict[str, object], needle: str) -> None:
    args: Dict[str, Optional[object]] = dict(x=torch.zeros(2, 9, 4, 6), dt=torch.zeros(2, 9, 4), A=torch.zeros(4),
                                             B=torch.zeros(2, 9, 2, 5), C=torch.zeros(2, 9, 2, 5), chunk_size=4)
    args.update(bad)
    with pytest.raises(SSDInputError, match=needle) as info:
        mamba_chunk_scan_combined(**args)
    assert info.value.fix and isinstance(info.value, ValueError)


def test_negative_dt_without_softplus_is_clamped_to_zero_like_upstream() -> None:
    inp = make_inputs(1, 5, 1, 2, 1, 2, torch.float32)
    dt = -torch.ones(1, 5, 1)
    dt.requires_grad_()
    out = mamba_chunk_scan_combined(inp["x"][:, :, :1], dt, inp["A"][:1], inp["B"], inp["C"], 4)
    assert torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    assert torch.equal(dt.grad, torch.zeros_like(dt))
