"""Mamba2's mixer pieces: split-conv1d SSD, gated RMSNorm, decode step, and their drop-in contracts."""

from __future__ import annotations

import inspect
from typing import Any, Dict, List, Optional

import pytest
import torch
import torch.nn.functional as F
from test_ssd import assert_close
from upstream_sources import NO_DEFAULT, load, read_member, signatures

from jetson_mamba.ops import causal_conv1d_fn, causal_conv1d_update
from jetson_mamba.ops.causal_conv1d.naive import causal_conv1d_ref
from jetson_mamba.ops.ssd import (
    RMSNormGated,
    SSDInputError,
    causal_conv1d_varlen_states,
    mamba_chunk_scan_combined,
    mamba_split_conv1d_scan_combined,
    rmsnorm_fn,
    selective_state_update,
)
from jetson_mamba.ops.ssd.naive import ssd_ref

VERSIONS = ["2.2.4", "2.2.5", "2.3.2.post1"]


@pytest.fixture(scope="module")
def rms_norm_ref(shared, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """mamba-ssm's own pure-PyTorch rms_norm_ref, from the 2.2.4 sdist (the module needs triton to import)."""
    pytest.importorskip("triton")
    pytest.importorskip("einops")
    source = read_member(shared / "sdists" / "mamba_ssm-2.2.4.tar.gz", "mamba_ssm/ops/triton/layernorm_gated.py")
    return load(source, tmp_path_factory.mktemp("upstream") / "layernorm_gated.py")["rms_norm_ref"]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path,ours", [
    ("mamba_ssm/ops/triton/ssd_combined.py", mamba_chunk_scan_combined),
    ("mamba_ssm/ops/triton/ssd_combined.py", mamba_split_conv1d_scan_combined),
    ("mamba_ssm/ops/triton/layernorm_gated.py", rmsnorm_fn),
    ("mamba_ssm/ops/triton/selective_state_update.py", selective_state_update),
])
def test_signatures_match_upstream(shared, version: str, path: str, ours: Any) -> None:
    """Same parameter names, order and defaults as upstream, so positional and keyword calls both work."""
    upstream = signatures(read_member(shared / "sdists" / f"mamba_ssm-{version}.tar.gz", path))[ours.__name__]
    mine = [(p.name, NO_DEFAULT if p.default is inspect.Parameter.empty else p.default)
            for p in inspect.signature(ours).parameters.values()]
    assert mine == upstream


def test_rmsnorm_module_is_upstreams(shared) -> None:
    source = read_member(shared / "sdists" / "mamba_ssm-2.2.4.tar.gz", "mamba_ssm/ops/triton/layernorm_gated.py")
    import ast

    cls = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == "RMSNorm")
    init = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    assert [a.arg for a in init.args.args] == list(inspect.signature(RMSNormGated.__init__).parameters)
    norm = RMSNormGated(12, eps=1e-5, group_size=6, norm_before_gate=False, dtype=torch.bfloat16)
    assert list(norm.state_dict()) == ["weight"] and norm.bias is None
    assert norm.weight.dtype == torch.bfloat16 and torch.equal(norm.weight, torch.ones(12, dtype=torch.bfloat16))
    x, z = torch.randn(3, 12), torch.randn(3, 12)
    assert torch.equal(norm(x, z), rmsnorm_fn(x, norm.weight, None, z=z, eps=1e-5, group_size=6, norm_before_gate=False))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("group_size", [None, 8])
@pytest.mark.parametrize("gate", ["none", "before", "after"])
@pytest.mark.parametrize("has_bias", [False, True])
def test_rmsnorm_matches_upstream_reference(rms_norm_ref: Any, dtype: torch.dtype, group_size: Optional[int],
                                            gate: str, has_bias: bool) -> None:
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 5, 16, generator=g) * 3).to(dtype).requires_grad_()
    z = torch.randn(2, 5, 16, generator=g).to(dtype).requires_grad_() if gate != "none" else None
    w = (torch.rand(16, generator=g) + 0.5).requires_grad_()
    b = torch.randn(16, generator=g).requires_grad_() if has_bias else None
    leaves = [t for t in (x, z, w, b) if t is not None]
    refs = [t.detach().clone().requires_grad_() for t in leaves]
    rx, rz, rw, rb = (refs.pop(0) if t is not None else None for t in (x, z, w, b))
    out = rmsnorm_fn(x, w, b, z=z, eps=1e-5, group_size=group_size, norm_before_gate=gate != "after")
    ref = rms_norm_ref(rx, rw, rb, z=rz, eps=1e-5, group_size=group_size, norm_before_gate=gate != "after")
    assert out.dtype == dtype
    rel = 1e-5 if dtype == torch.float32 else 1e-2
    assert_close(out, ref, rel, "out")
    dy = torch.randn(out.shape, generator=g).to(dtype)
    out.backward(dy)
    ref.backward(dy)
    for mine, theirs in zip(leaves, [t for t in (rx, rz, rw, rb) if t is not None]):
        assert_close(mine.grad, theirs.grad, rel * 3, "grad")


def make_zxbcdt(batch: int, seqlen: int, d_nonssm: int, nheads: int, headdim: int, ngroups: int, dstate: int,
                dtype: torch.dtype, seed: int = 0) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    dim = nheads * headdim
    conv_dim = dim + 2 * ngroups * dstate
    return {
        "zxbcdt": torch.randn(batch, seqlen, 2 * d_nonssm + 2 * dim + 2 * ngroups * dstate + nheads, generator=g).to(dtype),
        "conv1d_weight": torch.randn(conv_dim, 4, generator=g) * 0.5,
        "conv1d_bias": torch.randn(conv_dim, generator=g) * 0.1,
        "dt_bias": torch.randn(nheads, generator=g) * 0.5 - 1,
        "A": -torch.rand(nheads, generator=g) * 3 - 0.1,
        "D": torch.randn(nheads, generator=g),
        "D2": torch.randn(nheads, headdim, generator=g),
        "rmsnorm_weight": torch.rand(dim, generator=g) + 0.5,
        "outproj_weight": (torch.randn(7, d_nonssm + dim, generator=g) * 0.2).to(dtype),
        "outproj_bias": torch.randn(7, generator=g).to(dtype),
        "initial_states": torch.randn(batch, nheads, headdim, dstate, generator=g),
    }


def split_ref(t: Dict[str, torch.Tensor], rms_norm_ref: Any, chunk_size: int, ngroups: int, headdim: int,
              seq_idx: Optional[torch.Tensor], dt_limit: Any, norm_before_gate: bool) -> List[torch.Tensor]:
    """The mixer composed from references: conv (float64), SSD recurrence (float64), upstream RMSNorm."""
    D = t.get("D", t.get("D2"))
    nheads = D.shape[0]
    dim = nheads * headdim
    dstate = (t["conv1d_weight"].shape[0] - dim) // ngroups // 2
    batch, seqlen, channels = t["zxbcdt"].shape
    d_nonssm = (channels - 2 * dim - 2 * ngroups * dstate - nheads) // 2
    zx0, z, xBC, dt = torch.split(t["zxbcdt"].double(), [2 * d_nonssm, dim, dim + 2 * ngroups * dstate, nheads], -1)
    xBC = causal_conv1d_ref(xBC.transpose(1, 2), t["conv1d_weight"].double(), t["conv1d_bias"].double(),
                            activation="silu", seq_idx=seq_idx).transpose(1, 2)
    x, B, C = torch.split(xBC, [dim, ngroups * dstate, ngroups * dstate], -1)
    rms = "rmsnorm_weight" in t
    y, final = ssd_ref(x.reshape(batch, seqlen, nheads, headdim), dt, t["A"], B.reshape(batch, seqlen, ngroups, dstate),
                       C.reshape(batch, seqlen, ngroups, dstate), D=D,
                       z=None if rms else z.reshape(batch, seqlen, nheads, headdim), dt_bias=t["dt_bias"],
                       initial_states=t.get("initial_states"), seq_idx=seq_idx, dt_softplus=True, dt_limit=dt_limit)
    y = y.reshape(batch, seqlen, dim)
    if rms:
        y = rms_norm_ref(y, t["rmsnorm_weight"], None, z=z, eps=1e-5, group_size=dim // ngroups,
                         norm_before_gate=norm_before_gate).double()
    if d_nonssm:
        z0, x0 = zx0.chunk(2, dim=-1)
        y = torch.cat([F.silu(z0) * x0, y], dim=-1)
    if "outproj_weight" in t:
        y = F.linear(y, t["outproj_weight"].double(), t["outproj_bias"].double())
    return [y, final]


SPLIT_CASES = {
    # name: (d_nonssm, ngroups, D key, rmsnorm, outproj, seq_idx, initial_states, norm_before_gate, dt_limit)
    "mamba2-default": (0, 1, "D", True, True, False, False, False, (0.0, float("inf"))),
    "mlp-groups-D2": (4, 2, "D2", True, True, False, True, True, (0.0, float("inf"))),
    "no-norm-z-gate": (0, 2, "D", False, False, True, False, False, (0.01, 0.3)),
    "varlen-mlp": (2, 1, "D2", True, False, True, False, False, (0.0, float("inf"))),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", sorted(SPLIT_CASES))
def test_split_conv1d_scan_matches_composed_reference(rms_norm_ref: Any, dtype: torch.dtype, case: str) -> None:
    d_nonssm, ngroups, dkey, rms, outproj, use_seq, use_init, nbg, dt_limit = SPLIT_CASES[case]
    batch, seqlen, nheads, headdim, dstate, chunk = 2, 45, 4, 4, 6, 16
    full = make_zxbcdt(batch, seqlen, d_nonssm, nheads, headdim, ngroups, dstate, dtype)
    keep = ["zxbcdt", "conv1d_weight", "conv1d_bias", "dt_bias", "A", dkey]
    keep += ["rmsnorm_weight"] if rms else []
    keep += ["outproj_weight", "outproj_bias"] if outproj else []
    keep += ["initial_states"] if use_init else []
    leaves = {k: full[k].clone().requires_grad_() for k in keep}
    seq_idx = (torch.tensor([[0] * 20 + [1] * 25, [0] * 3 + [1] * 30 + [2] * 12], dtype=torch.int32)
               if use_seq else None)
    out, final = mamba_split_conv1d_scan_combined(
        leaves["zxbcdt"], leaves["conv1d_weight"], leaves["conv1d_bias"], leaves["dt_bias"], leaves["A"],
        leaves[dkey], chunk, initial_states=leaves.get("initial_states"), seq_idx=seq_idx, dt_limit=dt_limit,
        return_final_states=True, activation="silu", rmsnorm_weight=leaves.get("rmsnorm_weight"), rmsnorm_eps=1e-5,
        outproj_weight=leaves.get("outproj_weight"), outproj_bias=leaves.get("outproj_bias"),
        headdim=headdim if dkey == "D" else None, ngroups=ngroups, norm_before_gate=nbg)
    assert out.dtype == dtype
    refs = {k: v.detach().clone().requires_grad_() for k, v in leaves.items()}
    ref_out, ref_final = split_ref(refs, rms_norm_ref, chunk, ngroups, headdim, seq_idx, dt_limit, nbg)
    rel = 3e-4 if dtype == torch.float32 else 4e-2
    assert_close(out.float(), ref_out, rel, "out")
    assert_close(final, ref_final, rel, "final_states")
    g = torch.Generator().manual_seed(2)
    dout, dfinal = torch.randn(out.shape, generator=g), torch.randn(final.shape, generator=g)
    torch.autograd.backward([out, final], [dout.to(out.dtype), dfinal])
    torch.autograd.backward([ref_out, ref_final], [dout.double(), dfinal.double()])
    for name, leaf in leaves.items():
        if leaf.is_leaf:
            assert_close(leaf.grad, refs[name].grad, rel * 3, f"d{name}")


def test_split_conv1d_bad_layout_says_how_to_fix() -> None:
    t = make_zxbcdt(1, 8, 0, 2, 4, 1, 3, torch.float32)
    with pytest.raises(SSDInputError, match="channels") as info:
        mamba_split_conv1d_scan_combined(t["zxbcdt"][..., :-1], t["conv1d_weight"], t["conv1d_bias"], t["dt_bias"],
                                         t["A"], t["D"], 4, headdim=4)
    assert "in_proj" in (info.value.fix or "")
    with pytest.raises(SSDInputError, match="headdim"):
        mamba_split_conv1d_scan_combined(t["zxbcdt"], t["conv1d_weight"], t["conv1d_bias"], t["dt_bias"],
                                         t["A"], t["D"], 4)
    with pytest.raises(SSDInputError, match="activation"):
        mamba_split_conv1d_scan_combined(t["zxbcdt"], t["conv1d_weight"], t["conv1d_bias"], t["dt_bias"],
                                         t["A"], t["D"], 4, headdim=4, activation="relu")


def test_split_conv1d_under_autocast_projects_in_low_precision() -> None:
    """As upstream: the scan ignores autocast, only the output projection runs in the autocast dtype."""
    t = make_zxbcdt(1, 20, 0, 2, 4, 1, 3, torch.float32)
    args = (t["zxbcdt"], t["conv1d_weight"], t["conv1d_bias"], t["dt_bias"], t["A"], t["D"], 8)
    kwargs: Dict[str, Any] = dict(headdim=4, rmsnorm_weight=t["rmsnorm_weight"], outproj_weight=t["outproj_weight"])
    plain = mamba_split_conv1d_scan_combined(*args, **kwargs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = mamba_split_conv1d_scan_combined(*args, **kwargs)
        pre_proj = mamba_split_conv1d_scan_combined(*args, headdim=4, rmsnorm_weight=t["rmsnorm_weight"])
    assert auto.dtype == torch.bfloat16 and pre_proj.dtype == torch.float32
    assert_close(auto.float(), plain, 2e-2, "autocast out")


class TinyMamba2(torch.nn.Module):
    """The parameters and the exact calls of mamba_ssm's Mamba2 (forward both paths, and step)."""

    def __init__(self, d_model: int = 8, d_state: int = 6, headdim: int = 4, ngroups: int = 2,
                 d_ssm: Optional[int] = None, chunk_size: int = 8, rmsnorm: bool = True) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.d_inner, self.d_state, self.headdim, self.ngroups = 2 * d_model, d_state, headdim, ngroups
        self.d_ssm = self.d_inner if d_ssm is None else d_ssm
        self.nheads, self.chunk_size, self.rmsnorm, self.d_conv = self.d_ssm // headdim, chunk_size, rmsnorm, 4
        d_in_proj = 2 * self.d_inner + 2 * ngroups * d_state + self.nheads
        conv_dim = self.d_ssm + 2 * ngroups * d_state
        self.in_proj = torch.nn.Linear(d_model, d_in_proj, bias=False)
        self.conv1d = torch.nn.Conv1d(conv_dim, conv_dim, 4, groups=conv_dim, padding=3)
        self.dt_bias = torch.nn.Parameter(torch.rand(self.nheads, generator=g) - 2)
        self.A_log = torch.nn.Parameter(torch.log(torch.rand(self.nheads, generator=g) * 8 + 1))
        self.D = torch.nn.Parameter(torch.ones(self.nheads))
        self.norm = RMSNormGated(self.d_ssm, eps=1e-5, norm_before_gate=False, group_size=self.d_ssm // ngroups)
        self.out_proj = torch.nn.Linear(self.d_inner, d_model, bias=False)

    def forward(self, u: torch.Tensor, mem_eff: bool) -> torch.Tensor:
        zxbcdt = self.in_proj(u)
        A = -torch.exp(self.A_log.float())
        if mem_eff:
            return mamba_split_conv1d_scan_combined(
                zxbcdt, self.conv1d.weight.squeeze(1), self.conv1d.bias, self.dt_bias, A, D=self.D,
                chunk_size=self.chunk_size, seq_idx=None, activation="silu",
                rmsnorm_weight=self.norm.weight if self.rmsnorm else None,
                rmsnorm_eps=self.norm.eps if self.rmsnorm else 1e-6, outproj_weight=self.out_proj.weight,
                outproj_bias=self.out_proj.bias, headdim=self.headdim, ngroups=self.ngroups, norm_before_gate=False)
        d_mlp = (zxbcdt.shape[-1] - 2 * self.d_ssm - 2 * self.ngroups * self.d_state - self.nheads) // 2
        z0, x0, z, xBC, dt = torch.split(
            zxbcdt, [d_mlp, d_mlp, self.d_ssm, self.d_ssm + 2 * self.ngroups * self.d_state, self.nheads], dim=-1)
        xBC = causal_conv1d_fn(xBC.transpose(1, 2), self.conv1d.weight.squeeze(1), bias=self.conv1d.bias,
                               activation="silu").transpose(1, 2)
        x, B, C = torch.split(xBC, [self.d_ssm, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1)
        b, L = u.shape[:2]
        y = mamba_chunk_scan_combined(
            x.reshape(b, L, -1, self.headdim), dt, A, B.reshape(b, L, self.ngroups, -1),
            C.reshape(b, L, self.ngroups, -1), chunk_size=self.chunk_size, D=self.D,
            z=z.reshape(b, L, -1, self.headdim) if not self.rmsnorm else None, dt_bias=self.dt_bias, dt_softplus=True)
        y = y.reshape(b, L, -1)
        if self.rmsnorm:
            y = self.norm(y, z)
        if d_mlp > 0:
            y = torch.cat([F.silu(z0) * x0, y], dim=-1)
        return self.out_proj(y)

    def step(self, hidden: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor) -> torch.Tensor:
        zxbcdt = self.in_proj(hidden.squeeze(1))
        d_mlp = (zxbcdt.shape[-1] - 2 * self.d_ssm - 2 * self.ngroups * self.d_state - self.nheads) // 2
        z0, x0, z, xBC, dt = torch.split(
            zxbcdt, [d_mlp, d_mlp, self.d_ssm, self.d_ssm + 2 * self.ngroups * self.d_state, self.nheads], dim=-1)
        xBC = causal_conv1d_update(xBC, conv_state, self.conv1d.weight.squeeze(1), self.conv1d.bias, "silu")
        x, B, C = torch.split(xBC, [self.d_ssm, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1)
        A = -torch.exp(self.A_log.float())
        p, n = self.headdim, self.d_state
        y = selective_state_update(
            ssm_state, x.reshape(-1, self.nheads, p), dt[:, :, None].expand(-1, -1, p),
            A[:, None, None].expand(-1, p, n).to(torch.float32), B.reshape(-1, self.ngroups, n),
            C.reshape(-1, self.ngroups, n), self.D[:, None].expand(-1, p),
            z=z.reshape(-1, self.nheads, p) if not self.rmsnorm else None,
            dt_bias=self.dt_bias[:, None].expand(-1, p), dt_softplus=True)
        y = y.reshape(y.shape[0], -1)
        if self.rmsnorm:
            y = self.norm(y, z)
        if d_mlp > 0:
            y = torch.cat([F.silu(z0) * x0, y], dim=-1)
        return self.out_proj(y).unsqueeze(1)


@pytest.mark.parametrize("rmsnorm,d_ssm", [(True, None), (False, None), (True, 8)])
def test_mamba2_paths_agree_forward_backward_and_step(rmsnorm: bool, d_ssm: Optional[int]) -> None:
    """Fused (use_mem_eff_path) and unfused forward agree in value and gradient; decoding with step()
    token by token reproduces the forward output."""
    model = TinyMamba2(rmsnorm=rmsnorm, d_ssm=d_ssm)
    u = torch.randn(2, 19, 8, generator=torch.Generator().manual_seed(9))
    outs, grads = [], []
    for mem_eff in (True, False):
        model.zero_grad()
        out = model(u, mem_eff=mem_eff)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert_close(outs[0], outs[1], 1e-5, "fused vs unfused")
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert_close(grads[0][name], grads[1][name], 1e-4, f"d{name}")
    conv_dim = model.conv1d.weight.shape[0]
    conv_state = torch.zeros(2, 4, conv_dim).transpose(1, 2)
    ssm_state = torch.zeros(2, model.nheads, model.headdim, model.d_state)
    with torch.no_grad():
        steps = [model.step(u[:, t:t + 1], conv_state, ssm_state) for t in range(u.shape[1])]
    assert_close(torch.cat(steps, dim=1), outs[0], 1e-5, "step() vs forward")


def test_selective_state_update_cache_indices_and_padding() -> None:
    """Rows gathered through state_batch_indices; index -1 is padding: output exactly 0, no state touched.
    Unselected cache rows are NaN-poisoned to prove they are neither read nor written."""
    g = torch.Generator().manual_seed(4)
    batch, nheads, p, n, cache = 4, 2, 3, 5, 7
    state = torch.full((cache, nheads, p, n), float("nan"))
    idx = torch.tensor([5, -1, 0, 3], dtype=torch.int32)
    for i in (5, 0, 3):
        state[i] = torch.randn(nheads, p, n, generator=g)
    before = state.clone()
    x, dt, z = (torch.randn(batch, nheads, p, generator=g) for _ in range(3))
    A = -torch.rand(nheads, p, n, generator=g)
    B, C = torch.randn(batch, 1, n, generator=g), torch.randn(batch, 1, n, generator=g)
    D, bias = torch.randn(nheads, p, generator=g), torch.randn(nheads, p, generator=g)
    out = selective_state_update(state, x, dt, A, B, C, D, z=z, dt_bias=bias, dt_softplus=True, state_batch_indices=idx)
    assert torch.equal(out[1], torch.zeros_like(out[1])) and torch.isfinite(out).all()
    assert torch.isnan(state[[1, 2, 4, 6]]).all()
    for row, i in ((0, 5), (2, 0), (3, 3)):
        d = F.softplus(dt[row] + bias)
        new = before[i] * torch.exp(A * d[..., None]) + B[row, 0] * (d * x[row])[..., None]
        assert_close(state[i], new, 1e-6, f"state row {i}")
        assert_close(out[row], ((new * C[row, 0]).sum(-1) + D * x[row]) * F.silu(z[row]), 1e-6, f"out row {row}")


def test_selective_state_update_without_heads_matches_mamba1_step() -> None:
    """The 2-D form (batch, dim) / state (batch, dim, dstate) that Mamba.step uses."""
    g = torch.Generator().manual_seed(6)
    state = torch.randn(3, 8, 4, generator=g)
    x, dt = torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g)
    A, B, C = -torch.rand(8, 4, generator=g), torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    D = torch.randn(8, generator=g)
    expected_state = state * torch.exp(A * F.softplus(dt)[..., None]) + B[:, None] * (F.softplus(dt) * x)[..., None]
    out = selective_state_update(state, x.bfloat16(), dt, A, B, C, D, dt_softplus=True)
    assert out.shape == (3, 8) and out.dtype == torch.bfloat16
    assert_close(state, expected_state, 1e-2, "state")
    assert_close(out.float(), (expected_state * C[:, None]).sum(-1) + D * x, 2e-2, "out")


def test_causal_conv1d_varlen_states_takes_each_sequences_tail() -> None:
    x = torch.arange(1.0, 11.0)[:, None] * torch.tensor([1.0, -1.0])  # (10 tokens, dim 2)
    cu = torch.tensor([0, 2, 2, 7, 10], dtype=torch.int32)
    states = causal_conv1d_varlen_states(x, cu, state_len=4)
    assert states.shape == (4, 2, 4) and states.stride(1) == 1  # upstream layout: transposed (batch, len, dim)
    assert states[:, 0].tolist() == [[0, 0, 1, 2], [0, 0, 0, 0], [4, 5, 6, 7], [0, 8, 9, 10]]
    assert torch.equal(states[:, 1], -states[:, 0])
