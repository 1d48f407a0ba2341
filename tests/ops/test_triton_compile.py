"""The Triton kernels compile, through ptxas, for Jetson Orin (sm_87) and Hopper (sm_90), without a GPU.

The interpreter (test_triton_interpreted.py) checks the numbers but not that the compiler accepts
the kernels; this compiles the main variants ahead of time for each target, so a kernel that
needs a Hopper-only feature or more shared memory than an Orin SM has fails here.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any, Dict

import pytest
import torch

pytest.importorskip("triton")
if os.environ.get("TRITON_INTERPRET") == "1":
    pytest.skip("the interpreter builds no compiled kernels", allow_module_level=True)

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402
from triton.tools.disasm import get_sass  # noqa: E402

from jetson_mamba.ops.causal_conv1d import triton as conv  # noqa: E402
from jetson_mamba.ops.selective_scan import triton as scan  # noqa: E402
from jetson_mamba.ops.selective_scan import triton_chunked as chunked  # noqa: E402
from jetson_mamba.ops.triton_utils import jit_function  # noqa: E402

ORIN_SMEM = 164 * 1024
HALF = {"u_ptr", "delta_ptr", "z_ptr", "out_ptr", "outz_ptr", "B_ptr", "C_ptr", "dout_ptr", "du_ptr",
        "ddelta_ptr", "dz_ptr", "x_ptr", "dx_ptr", "w_ptr", "init_ptr", "final_ptr", "dfinal_ptr", "dinit_ptr"}
INT = {"seq_ptr", "cache_ptr", "idx_ptr", "sync_ptr"}


def compile_for(kernel: Any, arch: int, consts: Dict[str, Any], num_warps: int, aligned: bool = False,
                data: str = "bf16") -> Any:
    """Compile `kernel` (autotuned/heuristics wrappers peeled off) for sm_`arch`, `data` (bf16 or fp32)
    tensors, unit time stride.

    `aligned`: pointers and integer arguments divisible by 16, as Triton specializes them at a launch
    on typical shapes (L = 2048, contiguous tensors), so vector loads show as they would there.
    Every constexpr needs a value in `consts`: one left out would compile as a run-time i32 and keep
    both sides of its branches (the conv backward's DET left out kept the deterministic stores beside
    the atomics: 15 shared loads in the rows backward, where a launch's kernel has 10)."""
    fn = jit_function(kernel)
    missing = [p.name for p in fn.params if p.is_constexpr and p.name not in consts]
    assert not missing, f"constexpr parameters without a value: {missing}"
    signature: Dict[str, str] = {}
    constexprs: Dict[Any, Any] = {}
    attrs: Dict[Any, Any] = {}
    for i, param in enumerate(fn.params):
        name = param.name
        if name in consts:
            signature[name] = "constexpr"
            constexprs[(i,)] = consts[name]
            continue
        if name.endswith("_ptr"):
            signature[name] = f"*{data}" if name in HALF else "*i32" if name in INT else "*fp32"
        else:
            signature[name] = "i32"
        if aligned:
            attrs[(i,)] = [["tt.divisibility", 16]]
    return triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget("cuda", arch, 32),
                          options={"num_warps": num_warps})


SCAN = dict(B_VAR=True, C_VAR=True, B_UNIFORM=True, C_UNIFORM=True, HAS_D=True, HAS_Z=True, HAS_BIAS=True,
            SOFTPLUS=True, BN=16, s_ul=1, s_dl=1, s_zl=1, s_Bl=1, s_Cl=1)
SCAN_BWD = dict(SCAN, DET=False, B_SLOTS=1, C_SLOTS=1, CHUNKED=False)
CONV = dict(W=4, HAS_BIAS=True, HAS_SEQ=False, HAS_INIT=True, SILU=True)
CONV_BWD = dict(W=4, HAS_BIAS=True, SILU=True, DET=False)  # the default mode: atomics


def _scan_cfg(table: Any) -> Dict[str, Any]:
    bd, t, _w = table[0]
    return {"BD": bd, "T": t}


def _conv_cfg(table: Any) -> Dict[str, Any]:
    bd, bl, _w = table[0]
    return {"BD": bd, "BL": bl}


VARIANTS = {
    "scan-fwd": (scan._fwd, dict(SCAN, **_scan_cfg(scan._FWD_CONFIGS), s_ol=1, HAS_X=False),
                 scan._FWD_CONFIGS[0][2]),
    # a batch-1 candidate, the longest slab, writing the stand-ins' chunk states x
    "scan-fwd-narrow-x": (scan._fwd, dict(SCAN, BD=2, T=32, s_ol=1, HAS_X=True), 1),
    "scan-bwd": (scan._bwd, dict(SCAN_BWD, **_scan_cfg(scan._BWD_CONFIGS), s_gl=1, HAS_OUTZ=True),
                 scan._BWD_CONFIGS[0][2]),
    # the chunked backward's pass (triton_chunked: batch 1, program axis 2 = a chunk)
    "scan-bwd-chunked": (scan._bwd, dict(SCAN_BWD, **_scan_cfg(scan._BWD_CONFIGS), s_gl=1, HAS_OUTZ=True,
                                         CHUNKED=True), scan._BWD_CONFIGS[0][2]),
    # the chunked forward: its passes 1 and 3, the carry, and all three in one launch (look-back)
    "scan-chunk": (chunked._chunk_kernel, dict(SCAN, BD=8, T=8, s_ol=1, OUTPUT=True), 1),
    "scan-carry": (chunked._carry_kernel, dict(HAS_X=True, REVERSE=False, BD=8, BN=16), 1),
    "scan-lookback": (chunked._lookback_kernel, dict(SCAN, BD=8, T=8, s_ol=1, HAS_X=True), 1),
    # deterministic mode, B's groups straddling channel blocks (3 group slots per block)
    "scan-bwd-det": (scan._bwd_det, dict(SCAN_BWD, **_scan_cfg(scan._BWD_CONFIGS), s_gl=1, HAS_OUTZ=True, DET=True,
                                         B_UNIFORM=False, B_SLOTS=3), scan._BWD_CONFIGS[0][2]),
    "conv-fwd": (conv._fwd["first"], dict(CONV, HAS_FINAL=True, **_conv_cfg(conv._FWD_CONFIGS["first"]), s_xl=1), 4),
    "conv-bwd": (conv._bwd["last"], dict(CONV, DET=False, HAS_DFINAL=True, **_conv_cfg(conv._BWD_CONFIGS["last"]),
                                         s_xd=1), 4),
    "conv-fwd-rows": (conv._fwd_rows, dict(W=4, HAS_BIAS=True, HAS_INIT=True, HAS_FINAL=True, SILU=True, RW=8,
                                           BD=conv._FWD_ROWS_CONFIGS[0][0], R=conv._FWD_ROWS_CONFIGS[0][1]), 4),
    "conv-bwd-rows": (conv._bwd_rows, dict(CONV_BWD, RW=8, BD=conv._BWD_ROWS_CONFIGS[0][0],
                                           R=conv._BWD_ROWS_CONFIGS[0][1], S=conv._BWD_ROWS_CONFIGS[0][2]), 4),
    "conv-bwd-steps": (conv._bwd_steps, dict(CONV_BWD, BD=conv._BWD_STEPS_CONFIGS[0][0],
                                             T=conv._BWD_STEPS_CONFIGS[0][1]), conv._BWD_STEPS_CONFIGS[0][2]),
    "conv-update": (conv._conv_update_kernel, dict(W=4, HAS_BIAS=True, SILU=True, CIRCULAR=True, HAS_IDX=True,
                                                   BD=64), 2),
}
# the conv backwards in deterministic mode too (partial sums per program instead of atomics)
VARIANTS.update({f"{name}-det": (kernel, dict(consts, DET=True), warps)
                 for name, (kernel, consts, warps) in list(VARIANTS.items()) if name.startswith("conv-bwd")})


@functools.lru_cache(maxsize=None)
def variant_sass(variant: str) -> str:
    """sm_90 SASS of a VARIANTS entry, aligned as at a typical launch (compiled once per test session)."""
    kernel, consts, num_warps = VARIANTS[variant]
    return get_sass(compile_for(kernel, 90, consts, num_warps, aligned=True).asm["cubin"])


@pytest.mark.slow
@pytest.mark.parametrize("arch", [87, 90], ids=["sm_87-orin", "sm_90-hopper"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_kernel_compiles_for(variant: str, arch: int) -> None:
    kernel, consts, num_warps = VARIANTS[variant]
    compiled = compile_for(kernel, arch, consts, num_warps)
    assert compiled.asm.get("cubin"), "no cubin produced"
    assert f".target sm_{arch}" in compiled.asm["ptx"]
    assert compiled.metadata.shared <= ORIN_SMEM, f"{compiled.metadata.shared} bytes of shared memory"


ROWS_CANDIDATES = [pytest.param("conv-fwd-rows", c, id=f"conv-fwd-rows-{c}") for c in conv._FWD_ROWS_CONFIGS] + \
                  [pytest.param("conv-bwd-rows", c, id=f"conv-bwd-rows-{c}") for c in conv._BWD_ROWS_CONFIGS]


@pytest.mark.parametrize("data", ["bf16", "fp32"])
@pytest.mark.parametrize("variant, config", ROWS_CANDIDATES)
def test_rows_kernels_read_rows_with_vector_loads(variant: str, config: Any, data: str) -> None:
    """The point of the rows kernels, at every candidate config: x and dout rows come in as 16-byte
    loads (8 bf16 or 4 fp32 steps: the row width the wrapper passes), the steps next to them as 8- or
    16-byte loads, and the shifted windows are built in registers. The 2-byte loads left are the W
    weights (and the forward's final states); the general kernel needs 28 of them for the same tile.
    Only the backward's W + 1 reductions over rows (dweight, dbias) touch shared memory: a tile with
    fewer rows than threads put the windows through it too (34 shared loads instead of 5), and so did
    rows of 8 fp32 steps, split across two threads (66 barriers in the backward, 21 in the forward)."""
    from jetson_mamba.ops.causal_conv1d.triton import _row_width

    kernel, consts, _ = VARIANTS[variant]
    *tile, num_warps = config
    row_width = _row_width(torch.empty(0, dtype=torch.bfloat16 if data == "bf16" else torch.float32))
    consts = dict(consts, **dict(zip(("BD", "R", "S"), tile)), RW=row_width,
                  **({"HAS_INIT": False} if "fwd" in variant else {}))
    sass = get_sass(compile_for(kernel, 90, consts, num_warps, aligned=True, data=data).asm["cubin"])
    loads = re.findall(r"\bLDG\.E[.\w]*", sass)
    vector = [op for op in loads if op in ("LDG.E.64", "LDG.E.128")]
    width = consts["W"]
    assert loads.count("LDG.E.U16") <= width + 1, loads
    assert loads.count("LDG.E.128") >= (1 if "fwd" in variant else 2), loads  # this row of x (and of dout)
    if "fwd" in variant:
        assert len(vector) == 2 and not re.search(r"\b(LDS|STS|SHFL|BAR)\b", sass), loads  # this row, the row before
    else:
        assert len(vector) == 5, loads  # x: the row before, this one, the one after; dout: this one and the next
        # each of the W + 1 reductions over rows reads shared memory once per warp step (1-2); the old
        # table's first candidate, whose windows went through shared memory, had 34 shared loads
        shared_loads = len(re.findall(r"\bLDS\b", sass))
        assert shared_loads <= 2 * (width + 1), f"{shared_loads} shared loads: the tile's rows go through shared memory"


def _steps_sass(config: Any, data: str, steps: int) -> str:
    kernel, consts, _ = VARIANTS["conv-bwd-steps"]
    bd, _steps, num_warps = config
    return get_sass(compile_for(kernel, 90, dict(consts, BD=bd, T=steps), num_warps, aligned=True,
                                data=data).asm["cubin"])


@pytest.mark.parametrize("data", ["bf16", "fp32"])
@pytest.mark.parametrize("config", conv._BWD_STEPS_CONFIGS, ids=str)
def test_channel_last_backward_reads_vectors_per_step(config: Any, data: str) -> None:
    """The channel-last backward (every candidate): each step's rows of x and dout come in as 16-byte
    vectors where the tile gives a thread 8 bf16 or 4 fp32 channels (8-byte ones below that). The
    general kernel it replaces for this case read W shifted tiles per pre-activation and computed each
    W times."""
    bd, steps, num_warps = config
    loads = re.findall(r"\bLDG\.E[.\w]*", _steps_sass(config, data, steps))
    per_thread = bd // (32 * num_warps) * (2 if data == "bf16" else 4)  # bytes of one row per thread
    vectors = [op for op in loads if op in ("LDG.E.64", "LDG.E.128")]
    rows = steps * 2 + 10  # x and dout at every step, plus the 7 + 3 rows at the block's edges
    assert len(vectors) >= rows * max(per_thread // 16, 1), (len(vectors), loads[:12])


@pytest.mark.parametrize("data", ["bf16", "fp32"])
def test_channel_last_backward_keeps_its_windows_in_registers(data: str) -> None:
    """Shared memory only in the epilogue (the weight gradients' atomics take another layout): the
    barriers do not grow with the steps, as they would if the windows went through shared memory."""
    config = conv._BWD_STEPS_CONFIGS[0]
    barriers = [len(re.findall(r"\bBAR\b", _steps_sass(config, data, t))) for t in (8, 16)]
    assert barriers[0] == barriers[1], f"barriers {barriers} at 8 and 16 steps: windows in shared memory"


@pytest.mark.parametrize("variant", ["scan-bwd", "conv-bwd", "conv-bwd-rows", "conv-bwd-steps"])
def test_gradient_atomics_are_relaxed(variant: str) -> None:
    """The backward kernels sum gradients with atomics that nothing reads before the kernel ends. Left at
    tl.atomic_add's default (acq_rel), each one is fenced: MEMBAR.ALL.GPU before it (waits for every
    memory operation in flight) and CCTL.IVALL after it (drops the SM's L1), once per tile in the scan
    backward's loop. Relaxed, they are fire-and-forget reductions (RED)."""
    sass = variant_sass(variant)
    assert re.search(r"\bREDG?\b|\bRED\.", sass), "no atomic reduction left in the kernel"
    fences = re.findall(r"\b(MEMBAR\.\w+\.GPU|CCTL\.IVALL)\b", sass)
    assert not fences, f"{len(fences)} fences around the gradient atomics"


def test_scan_backward_reverse_scan_stays_in_registers() -> None:
    """The backward's adjoint recurrence runs backwards in time. With associative_scan(reverse=True)
    Triton (3.6 and 3.8) moved the values across lanes: 884 shuffles in the kernel, 640 of them that
    scan's, although each thread holds its whole time axis. Flipped, scanned forwards and flipped back,
    it needs none; what remains (~250) are the sums over states and channels."""
    shuffles = len(re.findall(r"\bSHFL\.", variant_sass("scan-bwd")))
    assert shuffles < 400, f"{shuffles} lane shuffles in the scan backward"


@pytest.mark.parametrize("variant", ["scan-fwd", "scan-bwd"])
def test_softplus_takes_the_hardware_log2(variant: str) -> None:
    """tl.log compiles to a software logarithm (~25 instructions, no MUFU); with Goldberg's division the
    softplus was ~37 SASS instructions per element, a third of the forward's loop (848 -> 637 with
    lg2.approx). The kernels' softplus goes through the special function unit."""
    assert "MUFU.LG2" in variant_sass(variant)


def test_lookback_publishes_after_a_barrier_and_waits_with_an_acquire() -> None:
    """The one-launch chunked forward hands each chunk's end state to the next chunk's program through
    global memory. Its PTX must publish as CUTLASS's semaphore does (every thread's stores, bar.sync, then
    one release exchange of the flag) and wait with an acquire load of the flag followed by bar.sync, and
    read the state with L1-bypassing loads: another order would let a program read a stale state only
    sometimes, which no single GPU run proves absent."""
    kernel, consts, num_warps = VARIANTS["scan-lookback"]
    ptx = compile_for(kernel, 90, consts, num_warps, aligned=True).asm["ptx"]
    # the memory operations and barriers in order, predicates (@%pN) dropped
    ops = [m.group(1) for m in re.finditer(r"^\s*(?:@%p\d+\s+)?((?:bar\.sync|atom|ld\.global|st\.global)\S*)",
                                           ptx, re.M)]
    release = [i for i, op in enumerate(ops) if "atom.global.gpu.release.exch" in op]
    assert len(release) == 1, "one release exchange publishes a chunk"
    assert ops[release[0] - 1].startswith("bar.sync"), ops[release[0] - 3:release[0] + 1]
    assert any(op.startswith("st.global") for op in ops[release[0] - 4:release[0]]), "no state stored before it"
    acquire = [i for i, op in enumerate(ops) if ".acquire" in op]
    assert len(acquire) == 1, "one acquire read of the previous chunk's flag"
    assert ops[acquire[0] + 1].startswith("bar.sync"), "the other threads wait for the flag's value"
    carried = [op for op in ops[acquire[0] + 1:release[0]] if op.startswith("ld.global")]
    assert carried and all(op.startswith("ld.global.cg") for op in carried), carried
