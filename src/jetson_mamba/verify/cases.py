"""Problem shapes and fresh random inputs for the kernel checks (and the benchmarks, which time the same).

Inputs follow upstream's tests: delta small and positive, A negative (a stable scan), fp32 weights
(A, D, delta_bias, fixed B/C), activations in the dtype under test. A new seed per run means a
kernel cannot pass by being right on one lucky input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple


@dataclass(frozen=True)
class ScanCase:
    """One selective-scan problem: u, delta, z (batch, dim, length); B/C fixed, variable or grouped."""

    batch: int
    dim: int
    length: int
    dstate: int
    bc: str = "variable"  # "fixed" (dim, N), "variable" (batch, N, L), "grouped" (batch, groups, N, L)
    groups: int = 1
    z: bool = True
    D: bool = True
    delta_bias: bool = True
    softplus: bool = True
    delta_scale: float = 0.5  # delta ~ U(0, delta_scale)

    @property
    def label(self) -> str:
        bc = f"grouped B/C G={self.groups}" if self.bc == "grouped" else f"{self.bc} B/C"
        parts = [bc] + [name for name, on in (("z", self.z), ("D", self.D), ("delta_bias", self.delta_bias),
                                              ("softplus", self.softplus)) if on]
        if self.delta_scale != 0.5:
            parts.append(f"delta < {self.delta_scale:g}")
        return ", ".join(parts) + f", {self.batch}x{self.dim}x{self.length} N={self.dstate}"


@dataclass(frozen=True)
class ConvCase:
    """One causal depthwise conv1d problem: x (batch, dim, length), weight (dim, width)."""

    batch: int
    dim: int
    length: int
    width: int
    bias: bool = True
    silu: bool = True
    channel_last: bool = False
    initial_states: bool = False
    final_states: bool = False
    seq_idx: bool = False  # packed sequences (Mamba2's varlen path): taps across a boundary read zero
    strided: bool = False  # x a slice of a wider tensor, as upstream's tests and Mamba2's xBC split make it

    @property
    def label(self) -> str:
        parts = [f"width {self.width}"] + [name for name, on in (
            ("bias", self.bias), ("silu", self.silu), ("channel-last", self.channel_last),
            ("strided x", self.strided), ("initial states", self.initial_states),
            ("final states", self.final_states), ("seq_idx", self.seq_idx)) if on]
        return ", ".join(parts) + f", {self.batch}x{self.dim}x{self.length}"


# The one table of selective-scan cases. "quick" and "full" are what `verify` (and `bench`'s gate) check;
# "edge" are the small, odd shapes tests/ops/test_selective_scan.py checks against the float64 reference
# in every dtype, each under one of the torch backend's chunk plans (with "quick"; too small for `verify`
# to add anything).
SCAN_CASES: Dict[str, Tuple[ScanCase, ...]] = {
    # two small cases covering z/no-z and variable/grouped B/C
    "quick": (ScanCase(2, 6, 37, 4), ScanCase(2, 8, 20, 4, bc="grouped", groups=4, z=False)),
    "full": (
        ScanCase(2, 24, 300, 16),
        ScanCase(2, 24, 1, 16),  # a single step
        ScanCase(1, 13, 129, 4, bc="fixed", D=False, delta_bias=False, softplus=False),  # dim not % 8
        ScanCase(2, 16, 100, 1, z=False),
        ScanCase(2, 16, 255, 64, bc="grouped", groups=2),
        ScanCase(2, 16, 160, 16, bc="grouped", groups=4, z=False),  # VMamba / Mamba-YOLO SS2D layout
        # Two 2048-step chunks: the compiled backward restarts from x; the chunk states the stand-ins
        # return. Mamba-sized steps (dt ~ 0.001), so the decay over a chunk stays within fp32's range.
        ScanCase(1, 5, 2100, 4, bc="fixed", z=False, delta_bias=False, softplus=False, delta_scale=0.002),
    ),
    "edge": (
        ScanCase(2, 5, 1, 1),  # one step, one state
        ScanCase(1, 6, 37, 4, bc="fixed", z=False, delta_bias=False, softplus=False),
        ScanCase(2, 4, 130, 16, D=False),
        ScanCase(1, 12, 70, 64, bc="grouped", groups=3, delta_bias=False),  # 64 states, 3 groups of 4
        ScanCase(2, 8, 66, 4, bc="grouped", groups=2, z=False, D=False, softplus=False),
        ScanCase(1, 3, 9, 16, bc="grouped"),  # one group
    ),
}


def scan_cases(quick: bool) -> List[ScanCase]:
    """What `verify` checks: quick, or the full set with the odd cases (SCAN_CASES)."""
    return list(SCAN_CASES["quick" if quick else "full"])


def conv_cases(quick: bool) -> List[ConvCase]:
    """Quick: both layouts, and the channel-last paths of Mamba2 (states for chunked prefill, seq_idx for
    packed sequences) on a strided x, as causal-conv1d's own Python and tests call them."""
    if quick:
        return [ConvCase(2, 8, 19, 4), ConvCase(2, 8, 19, 3, bias=False, silu=False, channel_last=True),
                ConvCase(2, 8, 19, 4, channel_last=True, strided=True, initial_states=True, final_states=True),
                ConvCase(2, 8, 19, 4, channel_last=True, strided=True, seq_idx=True)]
    return [
        ConvCase(2, 64, 300, 4),
        ConvCase(2, 24, 1, 4),
        ConvCase(1, 13, 77, 2, bias=False, silu=False),
        ConvCase(2, 40, 150, 3, strided=True),
        ConvCase(2, 64, 257, 3, channel_last=True),
        ConvCase(2, 64, 130, 4, channel_last=True, initial_states=True, final_states=True),
        ConvCase(2, 64, 130, 4, channel_last=True, strided=True, initial_states=True, final_states=True),
        ConvCase(2, 32, 3, 4, channel_last=True, initial_states=True, final_states=True),
        ConvCase(2, 32, 3, 2, channel_last=True, strided=True, final_states=True, bias=False),
        ConvCase(3, 64, 300, 4, channel_last=True, strided=True, seq_idx=True),
        ConvCase(2, 24, 151, 2, channel_last=True, strided=True, seq_idx=True, silu=False),
    ]


def scan_inputs(case: ScanCase, dtype: Any, device: Any, generator: Any) -> Dict[str, Optional[Any]]:
    """Fresh inputs for `case`: activations in `dtype`, weights in fp32."""
    import torch

    def randn(*shape: int, dt: Any = dtype) -> Any:
        return torch.randn(*shape, generator=generator, dtype=torch.float32).to(device=device, dtype=dt)

    def rand(*shape: int, dt: Any = dtype) -> Any:
        return torch.rand(*shape, generator=generator, dtype=torch.float32).to(device=device, dtype=dt)

    b, d, l, n = case.batch, case.dim, case.length, case.dstate
    if case.bc == "fixed":
        bc_shape, bc_dtype = (d, n), torch.float32
    elif case.bc == "variable":
        bc_shape, bc_dtype = (b, n, l), dtype
    else:
        bc_shape, bc_dtype = (b, case.groups, n, l), dtype
    return {
        "u": randn(b, d, l),
        "delta": case.delta_scale * rand(b, d, l),
        "A": -0.5 * rand(d, n, dt=torch.float32) - 0.1,
        "B": randn(*bc_shape, dt=bc_dtype),
        "C": randn(*bc_shape, dt=bc_dtype),
        "D": randn(d, dt=torch.float32) if case.D else None,
        "z": randn(b, d, l) if case.z else None,
        "delta_bias": 0.5 * rand(d, dt=torch.float32) if case.delta_bias else None,
    }


def conv_inputs(case: ConvCase, dtype: Any, device: Any, generator: Any) -> Dict[str, Optional[Any]]:
    """Fresh inputs for `case`; channel-last x is (batch, dim, length) with stride 1 along dim."""
    import torch

    def randn(*shape: int) -> Any:
        return torch.randn(*shape, generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)

    b, d, l, w = case.batch, case.dim, case.length, case.width
    start, wide = (4, d + 8) if case.strided else (0, d)  # a strided x: channels 4 .. d+3 of a wider tensor
    x = randn(b, l, wide).transpose(1, 2) if case.channel_last else randn(b, wide, l)
    x = x[:, start:start + d]
    initial = randn(b, w - 1, d).transpose(1, 2) if case.initial_states else None
    return {
        "x": x,
        "weight": randn(d, w),
        "bias": randn(d) if case.bias else None,
        "initial_states": initial,
    }


def conv_seq_idx(case: ConvCase, device: Any, generator: Any) -> Optional[Any]:
    """(batch, length) int32 sequence ids for a seq_idx case, as upstream's varlen test makes them: each row
    split at 1 to 4 random points into sequences 0, 1, ...; None otherwise."""
    import torch

    if not case.seq_idx:
        return None
    rows = []
    for _ in range(case.batch):
        cuts = torch.zeros(case.length, dtype=torch.int32)
        if case.length > 1:
            n = int(torch.randint(1, 5, (1,), generator=generator))
            cuts[torch.randperm(case.length - 1, generator=generator)[:n] + 1] = 1
        rows.append(cuts.cumsum(0, dtype=torch.int32))
    return torch.stack(rows).to(device)
