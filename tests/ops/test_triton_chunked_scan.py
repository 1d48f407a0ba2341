"""The sequence-parallel (chunked) Triton scan forward: when it is picked, and that it computes the
one-pass results (out, out * silu(z), last state, the stand-ins' chunk states x) against float64.

The kernels run under TRITON_INTERPRET=1 in a subprocess (`test_chunked_suite_under_the_interpreter`),
on a GPU in-process; the choice (plan_chunk) is plain Python and runs everywhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

import pytest
import torch

from jetson_mamba.ops.selective_scan import triton_chunked as chunked
from jetson_mamba.ops.selective_scan.naive import selective_scan_ref

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
GPU = torch.cuda.is_available() and not INTERPRET
DEVICE = "cuda" if GPU else "cpu"
needs_triton = pytest.mark.skipif(
    not (INTERPRET or GPU), reason="on CPU these run under TRITON_INTERPRET=1 (the subprocess test below)")
TOL = {torch.float32: 2e-5, torch.bfloat16: 3e-2}


def test_batch_one_yolo_scan_is_chunked_on_an_h200() -> None:
    """Mamba-YOLO's scan at batch 1 (K*D = 512 channels, L = 6400): 64 one-pass programs for 132 SMs."""
    chunk = chunked.plan_chunk(1, 512, 6400, sms=132)
    assert chunked.MIN_CHUNK <= chunk <= chunked.MAX_CHUNK and chunk & (chunk - 1) == 0
    assert chunked.MAX_CHUNK % chunk == 0  # x's 2048-step ends fall on chunk ends
    assert 6400 // chunk >= 8  # enough chunks to fill the GPU


@pytest.mark.parametrize("batch, dim, L, sms, setting", [
    (8, 2048, 2048, 132, None),  # batch 8: the one-pass grid already fills the GPU
    (8, 512, 6400, 132, None),   # Mamba-YOLO at batch 8: 512 programs
    (1, 512, 100, 132, "1"),     # too short for two chunks, even when forced
    (1, 512, 6400, 132, "0"),    # switched off
])
def test_one_pass_where_it_fills_the_gpu(batch: int, dim: int, L: int, sms: int, setting: Optional[str]) -> None:
    assert chunked.plan_chunk(batch, dim, L, sms, setting) == 0


def test_forced_chunks_without_a_gpu() -> None:
    """The interpreter has no SM count: JETSON_MAMBA_SCAN_CHUNKED=1 still chunks (two chunks or more)."""
    chunk = chunked.plan_chunk(1, 8, 700, sms=0, setting="1")
    assert 0 < chunk < 700


def _inputs(batch: int, dim: int, L: int, N: int, bc: str, dtype: torch.dtype) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(batch * 1000 + dim * 10 + L)

    def r(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    shapes = {"grouped": (batch, 4 if dim % 4 == 0 else 2, N, L), "variable": (batch, N, L), "fixed": (dim, N)}
    return dict(u=r(batch, dim, L).to(dtype), delta=r(batch, dim, L, scale=0.5).to(dtype),
                A=-torch.rand(dim, N, generator=g) - 0.2, B=r(*shapes[bc]).to(dtype),
                C=r(*shapes["grouped" if bc == "grouped" else "variable"]).to(dtype), D=r(dim),
                z=r(batch, dim, L).to(dtype), delta_bias=r(dim, scale=0.1))


def _close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(actual).all(), f"{what}: non-finite (an element never written?)"
    err = (actual.double() - expected.double()).abs().max().item() / (expected.abs().max().item() + 1e-12)
    assert err <= TOL[dtype], f"{what}: relative error {err:.3g} > {TOL[dtype]}"


@needs_triton
@pytest.mark.parametrize("batch, dim, L, N, bc, dtype, with_z", [
    (1, 8, 300, 4, "grouped", torch.float32, True),     # Mamba-YOLO family (K=4 groups), L not a chunk multiple
    (1, 8, 256, 16, "grouped", torch.float32, False),   # dstate 16, L a chunk multiple
    (2, 6, 200, 3, "variable", torch.float32, True),    # odd dstate, channels not a block multiple
    (1, 4, 150, 4, "fixed", torch.float32, True),       # fixed B
    (1, 8, 200, 4, "grouped", torch.bfloat16, True),
])
def test_chunked_forward_matches_float64(monkeypatch: pytest.MonkeyPatch, nan_empty: None, batch: int, dim: int, L: int, N: int,
                                         bc: str, dtype: torch.dtype, with_z: bool) -> None:
    from jetson_mamba.ops.selective_scan import triton as scan

    monkeypatch.setenv(chunked.ENV_VAR, "1")
    calls = []
    real = chunked.forward
    monkeypatch.setattr(chunked, "forward", lambda *a, **k: calls.append(a[-2]) or real(*a, **k))
    t = {k: v.to(DEVICE) for k, v in _inputs(batch, dim, L, N, bc, dtype).items()}
    z = t["z"] if with_z else None
    out, out_z, last = scan.selective_scan_forward(t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], z,
                                                   t["delta_bias"], True)
    assert calls and 0 < calls[0] < L, "the chunked path was not taken"
    r = {k: v.double().cpu() for k, v in t.items()}
    ref, ref_last = selective_scan_ref(r["u"], r["delta"], r["A"], r["B"], r["C"], r["D"], None, r["delta_bias"],
                                       True, return_last_state=True)
    _close(out.cpu(), ref, dtype, "out")
    _close(last.cpu(), ref_last, torch.float32 if dtype == torch.float32 else dtype, "last state")
    if with_z:
        _close(out_z.cpu(), ref * torch.nn.functional.silu(r["z"]), dtype, "out_z")
    else:
        assert out_z is None


@needs_triton
def test_chunked_chunk_states_match_the_torch_backend(monkeypatch: pytest.MonkeyPatch, nan_empty: None) -> None:
    """The stand-ins' x (decay product and state at every `every` steps, and at the end) from the carry pass."""
    from jetson_mamba.ops.selective_scan import torch as portable
    from jetson_mamba.ops.selective_scan import triton as scan

    monkeypatch.setenv(chunked.ENV_VAR, "1")
    t = {k: v.to(DEVICE) for k, v in _inputs(1, 8, 520, 4, "grouped", torch.float32).items()}
    args = (t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["z"], t["delta_bias"], True, 256)
    _o, _oz, x = scan.selective_scan_forward_x(*args)
    r = tuple(a.double().cpu() if isinstance(a, torch.Tensor) else a for a in args)
    _close(x.cpu(), portable.selective_scan_forward_x(*r)[2], torch.float32, "x")


@pytest.mark.slow
@pytest.mark.skipif(INTERPRET or GPU, reason="this is the outer runner (CPU only)")
def test_chunked_suite_under_the_interpreter() -> None:
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", JETSON_MAMBA_BACKEND="triton", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", str(Path(__file__)),
           "-k", "match"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=str(Path(__file__).parent))
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "6 passed" in proc.stdout, proc.stdout[-2000:]
