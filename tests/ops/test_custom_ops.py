"""The scan and the conv as custom ops: torch.compile(fullgraph=True) and torch.export go through
them with the eager results and gradients; opcheck accepts their fake implementations and autograd;
torch without the custom-op API (< 2.4, JetPack 5/6) keeps the autograd.Function path.

Runs on the dispatched backend (torch on CPU); `test_compile_under_the_triton_interpreter` runs the
compile tests again in a subprocess with TRITON_INTERPRET=1 on the Triton backend.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest
import torch

import jetson_mamba.ops as ops
from interpreted import pytest_interpreted
from jetson_mamba.ops import _library

HERE = Path(__file__).resolve().parent
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
needs_custom_ops = pytest.mark.skipif(not _library.ENABLED, reason="torch < 2.4 has no torch.library.custom_op")


def _scan_inputs(batch: int = 2, dim: int = 4, L: int = 24, N: int = 4, groups: int = 2,
                 dtype: torch.dtype = torch.float32) -> Dict[str, torch.Tensor]:
    """Mamba-YOLO-like: grouped variable B, plain variable C, with D, z and delta_bias."""
    g = torch.Generator().manual_seed(0)

    def r(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * scale)

    return dict(u=r(batch, dim, L).to(dtype), delta=(r(batch, dim, L, scale=0.5)).to(dtype),
                A=-torch.rand(dim, N, generator=g) - 0.5, B=r(batch, groups, N, L).to(dtype),
                C=r(batch, N, L).to(dtype), D=r(dim), z=r(batch, dim, L).to(dtype), delta_bias=r(dim, scale=0.1))


def _conv_inputs(batch: int = 2, dim: int = 4, L: int = 24, width: int = 4) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, L, dim, generator=g).transpose(1, 2)  # channel-last, as Mamba's in_proj gives it
    return dict(x=x, weight=torch.randn(dim, width, generator=g), bias=torch.randn(dim, generator=g),
                initial_states=torch.randn(batch, dim, width - 1, generator=g))


def _block(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, initial_states: torch.Tensor,
           delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, D: torch.Tensor,
           z: torch.Tensor, delta_bias: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """conv -> scan, as upstream's Mamba wires them (plus the conv's initial and final states)."""
    xc, final = ops.causal_conv1d_fn(x, weight, bias, initial_states=initial_states, return_final_states=True,
                                     activation="silu")
    out, last = ops.selective_scan_fn(xc, delta, A, B, C, D, z, delta_bias, True, return_last_state=True)
    return out, last, final


def _leaves() -> Dict[str, torch.Tensor]:
    scan = _scan_inputs()
    scan.pop("u")
    return {k: v.clone().requires_grad_() for k, v in {**_conv_inputs(), **scan}.items()}


def _run(fn, leaves: Dict[str, torch.Tensor]) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:  # type: ignore[no-untyped-def]
    """Outputs and the gradients of every input, for a loss that reaches all three outputs."""
    for t in leaves.values():
        t.grad = None
    outs = fn(**leaves)
    (outs[0].square().sum() + outs[2].sum()).backward()
    grads = [leaves[k].grad for k in sorted(leaves)]
    assert all(g is not None for g in grads)
    return [o.detach() for o in outs], grads  # type: ignore[misc]


def _assert_same(a: List[torch.Tensor], b: List[torch.Tensor], what: str) -> None:
    assert len(a) == len(b), f"{what}: {len(a)} vs {len(b)} tensors"
    for i, (x, y) in enumerate(zip(a, b)):
        assert x.shape == y.shape and x.dtype == y.dtype, f"{what} {i}: {x.shape}/{x.dtype} vs {y.shape}/{y.dtype}"
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5, msg=lambda m, i=i: f"{what} {i}: {m}")


@needs_custom_ops
@pytest.mark.parametrize("compiler", ["inductor", "aot_eager"])
def test_compile_fullgraph_equals_eager(compiler: str) -> None:
    """Before the custom ops, dynamo broke the graph inside the dispatch ("Missing bytecode handler"),
    so fullgraph=True raised."""
    leaves = _leaves()
    eager = _run(_block, leaves)
    torch._dynamo.reset()
    compiled = _run(torch.compile(_block, fullgraph=True, backend=compiler), leaves)
    _assert_same(eager[0], compiled[0], "output")
    _assert_same(eager[1], compiled[1], "gradient")
    assert not eager[0][1].requires_grad  # the last state gets no gradient (as upstream)


@needs_custom_ops
def test_compile_decode_step_updates_state() -> None:
    """causal_conv1d_update mutates conv_state: the compiled graph must do the same."""
    g = torch.Generator().manual_seed(2)
    x, w, b = torch.randn(2, 4, generator=g), torch.randn(4, 4, generator=g), torch.randn(4, generator=g)
    state = torch.randn(2, 4, 3, generator=g)
    s_eager, s_comp = state.clone(), state.clone()
    step = lambda x, s: ops.causal_conv1d_update(x, s, w, b, "silu")  # noqa: E731
    want = step(x, s_eager)
    torch._dynamo.reset()
    got = torch.compile(step, fullgraph=True, backend="aot_eager")(x, s_comp)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(s_comp, s_eager)
    assert not torch.equal(s_eager, state)


class _Block(torch.nn.Module):
    def __init__(self, dim: int = 4, N: int = 4) -> None:
        super().__init__()
        params = {**_conv_inputs(dim=dim), **_scan_inputs(dim=dim, N=N)}
        for k in ("weight", "bias", "A", "D", "delta_bias"):
            self.register_parameter(k, torch.nn.Parameter(params[k]))

    def forward(self, x: torch.Tensor, delta: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                z: torch.Tensor) -> torch.Tensor:
        xc = ops.causal_conv1d_fn(x, self.weight, self.bias, activation="silu")
        return ops.selective_scan_fn(xc, delta, self.A, B, C, self.D, z, self.delta_bias, True)


@needs_custom_ops
def test_export_module_with_both_ops() -> None:
    block = _Block()
    s = _scan_inputs()
    args = (_conv_inputs()["x"], s["delta"], s["B"], s["C"], s["z"])
    program = torch.export.export(block, args)
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert {"jetson_mamba.causal_conv1d_fwd.default", "jetson_mamba.selective_scan_fwd.default"} <= targets, targets
    torch.testing.assert_close(program.module()(*args), block(*args))


def _opcheck_cases() -> List[Tuple[str, Tuple[object, ...]]]:
    s = {k: v.requires_grad_() if v.is_floating_point() else v for k, v in _scan_inputs(L=12).items()}
    fixed_b = s["B"][:, 0, :, 0].detach()[0].unsqueeze(0).expand(4, -1).contiguous().requires_grad_()
    c = {k: v.clone().requires_grad_() for k, v in _conv_inputs(L=12).items()}
    dout = torch.randn(2, 4, 12)
    g = torch.Generator().manual_seed(3)  # SSD: x (b, L, h, p), dt, A (h,), B and C (b, L, g, n); L not whole chunks
    ssd = [torch.randn(2, 11, 4, 3, generator=g), torch.rand(2, 11, 4, generator=g), -torch.rand(4, generator=g),
           torch.randn(2, 11, 2, 5, generator=g), torch.randn(2, 11, 2, 5, generator=g)]
    ssd = [t.requires_grad_() for t in ssd]
    init = torch.randn(2, 4, 3, 5, generator=g).requires_grad_()
    seq_idx = torch.tensor([[0] * 6 + [1] * 5, [0] * 11], dtype=torch.int32)
    return [
        ("selective_scan_fwd", (s["u"], s["delta"], s["A"], s["B"], s["C"], s["D"], s["z"], s["delta_bias"], True)),
        ("selective_scan_fwd", (s["u"], s["delta"], s["A"], fixed_b, s["C"], None, None, None, False)),
        ("selective_scan_bwd", (s["u"].detach(), s["delta"].detach(), s["A"].detach(), s["B"].detach(),
                                s["C"].detach(), None, s["z"].detach(), None, True, dout, "torch")),
        ("causal_conv1d_fwd", (c["x"], c["weight"], c["bias"], None, c["initial_states"], True, True)),
        ("causal_conv1d_fwd", (c["x"].detach().contiguous().requires_grad_(), c["weight"], None, None, None,
                               False, False)),
        ("causal_conv1d_bwd", (c["x"].detach(), c["weight"].detach(), c["bias"].detach(), dout, None, None, None,
                               True)),
        ("causal_conv1d_update", (torch.randn(2, 4, 1), torch.randn(2, 4, 3), c["weight"].detach(), None, True,
                                  None, None)),
        ("ssd_chunk_scan_fwd", (*ssd, 4, init, seq_idx)),
        ("ssd_chunk_scan_fwd", (*ssd, 8, None, None)),
        ("ssd_chunk_scan_bwd", (*(t.detach() for t in ssd), 4, init.detach(), seq_idx, torch.randn(2, 11, 4, 3),
                                torch.randn(2, 4, 3, 5), "torch")),
        ("ssd_varlen_states", (ssd[0][:1].detach(), ssd[1][:1].detach(), ssd[2].detach(), ssd[3][:1].detach(), 4,
                               init[:1].detach(),
                               torch.tensor([0, 4, 4, 11], dtype=torch.int32))),
    ]


@needs_custom_ops
@pytest.mark.parametrize("case", range(len(_opcheck_cases())))
def test_opcheck(case: int) -> None:
    name, args = _opcheck_cases()[case]
    # ssd_chunk_scan_bwd differentiates the backend with torch.func, whose wrapped tensors opcheck's cross-checks
    # (dispatch modes that read storages) cannot inspect; test_mamba2_exports_and_compiles_... runs its fake.
    utils = ("test_autograd_registration",)
    utils = utils if name == "ssd_chunk_scan_bwd" else ("test_schema", "test_faketensor", "test_aot_dispatch_dynamic") + utils
    torch.library.opcheck(getattr(torch.ops.jetson_mamba, name), args, test_utils=utils)


def _mamba2_run(model: torch.nn.Module, u: torch.Tensor) -> List[torch.Tensor]:
    """Output, then the gradients of the input and of every parameter."""
    u = u.detach().requires_grad_()
    model.zero_grad()
    out = model(u)
    out.square().sum().backward()
    return [out.detach(), u.grad] + [p.grad for p in model.parameters()]  # type: ignore[list-item]


@needs_custom_ops
@pytest.mark.parametrize("mem_eff", [True, False])
def test_mamba2_exports_and_compiles_with_a_dynamic_seqlen(mem_eff: bool, choose_backend: Callable[[str], None]) -> None:
    """Mamba2's calls (TinyMamba2: the fused split-conv1d path and conv1d + chunk scan) exported once with a
    symbolic seqlen, then run at lengths that are not whole chunks (chunk_size 8), equal eager; and
    torch.compile(dynamic=True, fullgraph=True) forward and backward. Before the SSD custom op, export failed
    with "Constraints violated (L)": the portable SSD's padding (`if pad:`) and its loops over blocks and
    chunks depend on seqlen."""
    from test_ssd_mixer import TinyMamba2

    if INTERPRET:  # the interpreted re-run forces triton, which has no SSD kernel: conv on Triton, SSD on torch
        choose_backend("triton,torch")

    class Model(TinyMamba2):
        def forward(self, u: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            return super().forward(u, mem_eff)

    model = Model()
    g = torch.Generator().manual_seed(6)
    inputs = [torch.randn(2, L, 8, generator=g) for L in (16, 13, 29)]
    with torch.no_grad():
        program = torch.export.export(model, (inputs[0],), dynamic_shapes={"u": {1: torch.export.Dim("L", max=4096)}})
        ops_in = {str(n.target) for m in program.graph_module.modules() if isinstance(m, torch.fx.GraphModule)
                  for n in m.graph.nodes}  # with the autocast-off regions' subgraphs
        assert "jetson_mamba.ssd_chunk_scan_fwd.default" in ops_in, ops_in
        for u in inputs[1:]:
            torch.testing.assert_close(program.module()(u), model(u), rtol=1e-5, atol=1e-5)
    torch._dynamo.reset()
    compiled = torch.compile(model, dynamic=True, fullgraph=True, backend="aot_eager")
    for u in inputs[1:]:
        _assert_same(_mamba2_run(model, u), _mamba2_run(compiled, u), f"L={u.shape[1]}")


@needs_custom_ops
def test_varlen_states_compile_and_export_with_dynamic_seqlen_and_offsets(choose_backend: Callable[[str], None]) -> None:
    """Mamba2's packed prefill (cu_seqlens, return_varlen_states) through one fullgraph compile and one export
    with a symbolic seqlen: other lengths and other offsets equal eager without retracing. Before, the
    varlen states read cu_seqlens on the host (`.tolist()`), which fullgraph and export refuse."""
    from test_ssd import make_inputs
    from torch._dynamo.testing import CompileCounter

    if INTERPRET:
        choose_backend("triton,torch")

    def prefill(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                init: torch.Tensor, cu: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return ops.mamba_chunk_scan_combined(x, dt, A, B, C, 8, initial_states=init, dt_softplus=True,
                                             cu_seqlens=cu, return_final_states=True, return_varlen_states=True)

    def case(L: int, offsets: List[int]) -> Tuple[torch.Tensor, ...]:
        i = make_inputs(1, L, 4, 3, 2, 5, torch.float32, seed=L)
        return i["x"], i["dt"], i["A"], i["B"], i["C"], i["init"], torch.tensor(offsets, dtype=torch.int32)

    cases = [case(21, [0, 5, 5, 21]), case(37, [0, 16, 30, 37]), case(37, [2, 3, 3, 36])]
    L = torch.export.Dim("L", min=2, max=4096)
    dims = ({1: L}, {1: L}, None, {1: L}, {1: L}, None, None)

    class Prefill(torch.nn.Module):
        def forward(self, *args: torch.Tensor) -> Tuple[torch.Tensor, ...]:
            return prefill(*args)

    program = torch.export.export(Prefill(), cases[0], dynamic_shapes=(dims,))
    torch._dynamo.reset()
    counter = CompileCounter()
    compiled = torch.compile(prefill, dynamic=True, fullgraph=True, backend=counter)
    for args in cases:
        want = prefill(*args)
        for got in (program.module()(*args), compiled(*args)):
            for a, b in zip(got, want):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert counter.frame_count == 1  # the offsets are data: no recompile for new ones


def test_without_custom_ops_the_autograd_functions_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch < 2.4 (forced here): eager and torch.compile (with graph breaks) through the autograd.Functions,
    with the same values and gradients."""
    leaves = _leaves()
    monkeypatch.setattr(_library, "ENABLED", False)
    eager = _run(_block, leaves)
    assert type(ops.selective_scan_fn(*(leaves[k] for k in ("x", "delta", "A", "B", "C")))
                .grad_fn).__name__ == "SelectiveScanFnBackward"
    torch._dynamo.reset()
    compiled = _run(torch.compile(_block, backend="aot_eager"), leaves)
    _assert_same(eager[0], compiled[0], "output")
    _assert_same(eager[1], compiled[1], "gradient")


def test_custom_ops_need_torch_2_4_and_can_be_switched_off() -> None:
    old = types.SimpleNamespace(Library=object, impl=object)  # torch 2.0-2.3's torch.library
    assert not _library.supports_custom_ops(old)
    assert not _library.custom_ops_wanted(old, {})
    new = types.SimpleNamespace(custom_op=1, register_fake=1, register_autograd=1)
    assert _library.custom_ops_wanted(new, {})
    assert not _library.custom_ops_wanted(new, {_library.ENV_VAR: "0"})
    env = dict(os.environ, **{_library.ENV_VAR: "0"})
    code = "import jetson_mamba.ops._library as l, torch; print(l.ENABLED, hasattr(torch.ops.jetson_mamba, 'selective_scan_fwd'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


@pytest.mark.slow
@needs_custom_ops
@pytest.mark.skipif(INTERPRET, reason="this is the outer runner")
def test_compile_under_the_triton_interpreter() -> None:
    """The same compile tests with the Triton kernels inside the ops (interpreted on the CPU)."""
    pytest.importorskip("triton")
    out = pytest_interpreted(str(Path(__file__)), "-k",
                             "(compile_fullgraph or decode_step or export or opcheck) and not upstream", cwd=HERE)
    assert "18 passed" in out, out[-2000:]


UPSTREAM_MAMBA = """
import json, torch
from mamba_ssm import Mamba
torch.manual_seed(0)
m = Mamba(d_model=16, d_state=8, d_conv=4, expand=2)
x = torch.randn(2, 32, 16, requires_grad=True)
y = m(x)
y.square().sum().backward()
grads = [x.grad.clone()] + [p.grad.clone() for p in m.parameters()]
m.zero_grad()
x.grad = None
yc = torch.compile(m, fullgraph=True, backend="aot_eager")(x)
yc.square().sum().backward()
gc = [x.grad] + [p.grad for p in m.parameters()]
m.eval()
with torch.no_grad():
    ye = m(x.detach())
    program = torch.export.export(m, (x.detach(),))
    ops = sorted({str(n.target) for n in program.graph.nodes if str(n.target).startswith("jetson_mamba.")})
    yx = program.module()(x.detach())
print(json.dumps({"out": (y - yc).abs().max().item(), "grads": max((a - b).abs().max().item() for a, b in zip(grads, gc)),
                  "export": (ye - yx).abs().max().item(), "ops": ops}))
"""


def _patched_venv(pair_venv, mamba: str, conv: str) -> Path:  # type: ignore[no-untyped-def]
    """A sub-venv of these upstream releases with every runtime patch applied (portable kernels, ...)."""
    from jetson_mamba.compat import registry
    from jetson_mamba.compat.installed import runtime_plan
    from jetson_mamba.compat.runtime_patches import RUNTIME_PATCHES

    python = pair_venv(mamba, conv, "compile")
    registry.apply_plan(runtime_plan(str(python), list(RUNTIME_PATCHES))[1])
    return python


def _run_script(python: Path, code: str, tmp_path: Path, *args: str, **env: str) -> dict:  # type: ignore[type-arg]
    """Run `code` in the sub-venv on the automatic backend (plus `env`); its last stdout line is JSON."""
    import json

    script = tmp_path / "script.py"
    script.write_text(code)
    base = {k: v for k, v in os.environ.items() if k not in ("JETSON_MAMBA_BACKEND", _library.ENV_VAR)}
    done = subprocess.run([str(python), str(script), *args], capture_output=True, text=True, timeout=900,
                          env={**base, **env})
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.slow
@needs_custom_ops
def test_upstream_mamba_compiles_and_exports_through_the_standins(pair_venv, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """mamba-ssm's own Mamba (mamba_inner_fn -> the stand-ins, routed by portable-kernels): fullgraph
    compile with the eager values and gradients, and export. Before, dynamo followed the stand-ins into
    the dispatch and broke the graph (DELETE_DEREF, "Missing bytecode handler"). causal-conv1d 1.5.0
    here (the old-API stand-in); >= 1.5.1 wraps its own compiled call in a custom op with a mutated `out`,
    which dynamo refuses for Mamba's channel-last conv input ("non-contiguous out= tensor"), with the real
    extension as with ours, until the traceable-conv1d patch: the Mamba2 test below runs this on 1.6.0."""
    python = _patched_venv(pair_venv, "2.2.5", "1.5.0.post8")
    result = _run_script(python, UPSTREAM_MAMBA, tmp_path)
    assert result["out"] < 1e-5 and result["grads"] < 1e-4 and result["export"] < 1e-5, result
    assert result["ops"], result  # the exported graph holds our ops


UPSTREAM_MAMBA2 = """
import json, sys, torch
from mamba_ssm.modules.mamba2 import Mamba2
from mamba_ssm.utils.generation import InferenceParams

def traced_ops(program):
    # export puts Mamba2's autocast-off regions in subgraphs (wrap_with_autocast): search them all
    return sorted({str(n.target) for g in program.graph_module.modules() if isinstance(g, torch.fx.GraphModule)
                   for n in g.graph.nodes if str(n.target).startswith("jetson_mamba.")})

def run(m, x, fn):
    x.grad = None
    m.zero_grad()
    y = fn(x)
    y.square().sum().backward()
    return [y.detach(), x.grad.clone()] + [p.grad.clone() for p in m.parameters()]

def worst(a, b):
    return max((s - t).abs().max().item() for s, t in zip(a, b))

mode, saved = sys.argv[1], sys.argv[2]
result, eagers = {}, {}
for mem_eff in (True, False):  # fused mamba_split_conv1d_scan_combined; conv1d + chunk scan (generation's prefill)
    torch.manual_seed(0)
    m = Mamba2(d_model=32, d_state=16, d_conv=4, expand=2, headdim=16, ngroups=2, chunk_size=8, layer_idx=0,
               use_mem_eff_path=mem_eff)
    x = torch.randn(2, 20, 32, requires_grad=True)
    eager = run(m, x, m)
    key = f"mem_eff={mem_eff}"
    if mode == "off":  # custom ops switched off (torch < 2.4): eager runs the autograd.Functions, same numbers
        result[key] = worst(eager, torch.load(saved)[key])
        continue
    torch._dynamo.reset()
    compiled = run(m, x, torch.compile(m, fullgraph=True, backend="aot_eager"))
    m.eval()
    with torch.no_grad():
        program = torch.export.export(m, (x.detach(),))
        exported = (program.module()(x.detach()) - m(x.detach())).abs().max().item()
    result[key] = {"out": worst(eager[:1], compiled[:1]), "grads": worst(eager[1:], compiled[1:]),
                   "export": exported, "ops": traced_ops(program)}
    eagers[key] = eager
if mode == "on":
    torch.save(eagers, saved)  # the decode step (what generate(cg=True) graphs): conv update in place, state update
    m.eval()
    def decode(step):
        params = InferenceParams(max_seqlen=8, max_batch_size=2)
        params.key_value_memory_dict[0] = m.allocate_inference_cache(2, 8)
        with torch.no_grad():
            outs = [m(x[:, :4].detach(), inference_params=params)]
            for t in range(4, 7):
                params.seqlen_offset = t
                outs.append(step(x[:, t:t + 1].detach(), params))
        return [torch.cat(outs, 1), *params.key_value_memory_dict[0]]
    want = decode(lambda h, p: m(h, inference_params=p))
    torch._dynamo.reset()
    result["step"] = worst(want, decode(torch.compile(lambda h, p: m(h, inference_params=p), fullgraph=True,
                                                      backend="aot_eager")))
    def varlen(prefill):  # packed sequences (cu_seqlens + seq_idx), the cache filled per sequence
        params = InferenceParams(max_seqlen=32, max_batch_size=3)
        params.key_value_memory_dict[0] = m.allocate_inference_cache(3, 32)
        cu, seq_idx = torch.tensor([0, 5, 6, 19], dtype=torch.int32), torch.tensor([[0] * 5 + [1] + [2] * 13])
        with torch.no_grad():
            out = prefill(torch.randn(1, 19, 32, generator=torch.Generator().manual_seed(1)), cu, seq_idx.int(), params)
        return [out, *params.key_value_memory_dict[0]]
    packed = lambda u, cu, s, p: m(u, cu_seqlens=cu, seq_idx=s, inference_params=p)
    want = varlen(packed)
    torch._dynamo.reset()
    result["varlen"] = worst(want, varlen(torch.compile(packed, fullgraph=True, backend="aot_eager")))
print(json.dumps(result))
"""


@pytest.mark.slow
@needs_custom_ops
def test_upstream_mamba2_compiles_and_exports_through_the_dropins(pair_venv, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """mamba-ssm 2.3.2's own Mamba2 on the CPU (SSD, gated RMSNorm and state update routed to our drop-ins by
    portable-kernels, the conv to our stand-in), with causal-conv1d 1.6.0, both forward paths: fullgraph compile
    with the eager values and gradients, export holding our conv op, the decode step and the varlen prefill
    (cu_seqlens: its states were read on the host before) compiled; then with the
    custom ops off (torch < 2.4) the same eager numbers. Before the traceable-conv1d patch the unfused path
    (and upstream's Mamba, below) raised "Attempted to call op with non-contiguous `out=` tensor": causal-conv1d
    >= 1.5.1's own custom ops on the channel-last conv input."""
    python = _patched_venv(pair_venv, "2.3.2.post1", "1.6.0")
    saved = str(tmp_path / "eager.pt")
    result = _run_script(python, UPSTREAM_MAMBA2, tmp_path, "on", saved)
    for key in ("mem_eff=True", "mem_eff=False"):
        r = result[key]
        assert r["out"] < 1e-5 and r["grads"] < 1e-4 and r["export"] < 1e-5, result
        assert "jetson_mamba.causal_conv1d_fwd.default" in r["ops"], result
    assert result["step"] < 1e-5 and result["varlen"] < 1e-5, result
    off = _run_script(python, UPSTREAM_MAMBA2, tmp_path, "off", saved, **{_library.ENV_VAR: "0"})
    assert off == {"mem_eff=True": 0.0, "mem_eff=False": 0.0}, off
    mamba = _run_script(python, UPSTREAM_MAMBA, tmp_path)  # Mamba-1's fused path on causal-conv1d >= 1.5.1
    assert mamba["out"] < 1e-5 and mamba["grads"] < 1e-4 and mamba["export"] < 1e-5 and mamba["ops"], mamba


@pytest.mark.gpu
@needs_custom_ops
def test_upstream_mamba2_reduce_overhead_equals_eager_on_the_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Upstream's Mamba2 (installed mamba-ssm, its own Triton SSD) at batch 1 with our stand-in conv on the Triton
    backend: torch.compile(mode="reduce-overhead") replays the eager output. benchmarks/gpu/triton_check.sh puts
    the compiled wheels on PYTHONPATH; bench.workloads.Sides points upstream's modules at our stand-ins."""
    from jetson_mamba.bench.workloads import OURS, Sides, _import_upstream

    try:
        mamba2 = _import_upstream("mamba_ssm.modules.mamba2")
    except ImportError as error:
        pytest.skip(f"mamba_ssm is not importable: {error}")
    from jetson_mamba.ops.triton_utils import pin_autotuned_kernels

    pin_autotuned_kernels("mamba_ssm")  # one config per SSD kernel: a cold cache compiles minutes less
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    sides = Sides("triton", compiled=False)
    torch.manual_seed(0)
    model = mamba2.Mamba2(d_model=256, d_state=64, headdim=64, chunk_size=64, layer_idx=0, device="cuda").eval()
    x = torch.randn(1, 200, 256, device="cuda")
    with sides.side(OURS), torch.no_grad():
        want = model(x)
        torch._dynamo.reset()
        graphed = torch.compile(model, mode="reduce-overhead")
        for _ in range(3):  # warm-up, recording, then a replay
            got = graphed(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
