"""The timing harness and the device table, without the CLI."""

from __future__ import annotations

import time

import pytest

from jetson_mamba.bench.devices import peak_gbps_for
from jetson_mamba.bench.shapes import custom_problems, default_problems, parse_shape
from jetson_mamba.bench.timing import measure, measure_rounds, rotation_count, summarize
from jetson_mamba.errors import UsageError


def test_summarize_median_and_percentiles() -> None:
    timing = summarize([5.0, 1.0, 3.0, 2.0, 4.0], "perf_counter")
    assert (timing.median_ms, timing.min_ms, timing.samples) == (3.0, 1.0, 5)
    assert timing.p10_ms == pytest.approx(1.4) and timing.p90_ms == pytest.approx(4.6)
    assert timing.spread == pytest.approx((4.6 - 1.4) / 3.0)
    with pytest.raises(ValueError):
        summarize([], "perf_counter")


def test_measure_times_each_call_after_warmup_and_rotates() -> None:
    calls = []

    def work(i: int) -> None:
        calls.append(i)
        time.sleep(0.004)

    timing = measure(work, "cpu", warmup=2, repeat=5)
    assert calls == list(range(2)) + list(range(5))  # warm-up calls, then the timed ones, each with its index
    assert timing.samples == 5 and timing.clock == "perf_counter"
    assert 3.5 <= timing.median_ms < 200


def test_measure_stops_a_slow_function_early() -> None:
    timing = measure(lambda i: time.sleep(0.02), "cpu", warmup=0, repeat=1000, max_time_s=0.1)
    assert 3 <= timing.samples < 50


def test_measure_rounds_leaves_a_slow_start_out_and_reports_the_rounds_spread() -> None:
    """reduce-overhead's row (bench.workloads): the calls that compile and capture are warm-up, never timed;
    the number is the median round's median, and the rounds' medians and their spread come with it."""
    calls: list = []

    def work(i: int) -> None:
        calls.append(i)
        # the first 4 calls: a compile and a capture (slow); then one round in the middle is disturbed
        time.sleep(0.05 if len(calls) <= 4 else 0.008 if 4 + 2 * 3 < len(calls) <= 4 + 3 * 3 else 0.002)

    rounds = measure_rounds(work, "cpu", warmup=4, repeat=3, rounds=5)
    assert len(calls) == 4 + 5 * 3  # one warm-up, then 5 rounds of 3 timed calls
    assert len(rounds.medians_ms) == 5 and rounds.timing.median_ms < 8  # no slow start in any number
    assert max(rounds.medians_ms) >= 8 and min(rounds.medians_ms) < 8  # the disturbed round shows ...
    assert rounds.spread > 0.5  # ... in the spread, not in the median


def test_rotation_covers_twice_the_cache() -> None:
    assert rotation_count(10 * 2**20, 50 * 2**20) == 8  # capped
    assert rotation_count(40 * 2**20, 50 * 2**20) == 3
    assert rotation_count(500 * 2**20, 50 * 2**20) == 1
    assert rotation_count(1000, 0) == 1  # CPU: no cache figure, no rotation


@pytest.mark.parametrize("name, gbps", [
    ("NVIDIA H200", 4800.0), ("NVIDIA GH200 480GB", 4000.0), ("NVIDIA H100 80GB HBM3", 3350.0),
    ("NVIDIA A100-SXM4-80GB", 2039.0), ("NVIDIA A100-PCIE-40GB", 1555.0), ("NVIDIA Jetson AGX Orin Developer Kit (Orin)", 204.8),
    ("NVIDIA Jetson Orin Nano Developer Kit (Orin)", 68.0), ("NVIDIA Jetson Orin NX 16GB (Orin)", 102.4),
    ("NVIDIA Jetson Nano Developer Kit (NVIDIA Tegra X1)", 25.6), ("Some Unknown GPU", None),
])
def test_peak_bandwidth_table(name: str, gbps: float) -> None:
    assert peak_gbps_for(name) == gbps


def test_default_shapes_match_the_baseline_on_gpu() -> None:
    gpu = {p.name: p for p in default_problems(on_gpu=True) if p.op == "selective_scan"}
    mamba = gpu["Mamba-130M layer"].scan
    assert (mamba.batch, mamba.dim, mamba.length, mamba.dstate, mamba.z) == (8, 1536, 2048, 16, True)
    yolo = gpu["Mamba-YOLO-T SS2D 80x80"].scan
    assert (yolo.batch, yolo.dim, yolo.length, yolo.bc, yolo.groups, yolo.z) == (8, 512, 6400, "grouped", 4, False)
    cpu = [p for p in default_problems(on_gpu=False) if p.scan is not None]
    assert all(p.scan.batch * p.scan.dim * p.scan.length <= 1536 * 64 for p in cpu)


def test_parse_shape_and_its_errors() -> None:
    assert parse_shape("B=2,D=64,L=100,N=4,G=4,z=0") == dict(batch=2, dim=64, length=100, dstate=4, groups=4, z=0)
    (scan,) = custom_problems(parse_shape("B=2,D=64,L=100,N=4,G=4,z=0"), ["selective_scan"])
    assert scan.scan.bc == "grouped" and scan.scan.z is False
    for bad, words in [("B=2,Q=3", "bad --shape entry"), ("B=x", "not an integer"), ("L=0", "must be positive")]:
        with pytest.raises(UsageError, match=words) as info:
            parse_shape(bad)
        assert info.value.fix
    with pytest.raises(UsageError, match="multiple of G"):
        custom_problems(parse_shape("D=30,G=4"), ["selective_scan"])
    with pytest.raises(UsageError, match="widths are 2 to 4"):
        custom_problems(parse_shape("W=5"), ["causal_conv1d"])


@pytest.mark.gpu
def test_measure_uses_cuda_events_on_a_gpu() -> None:
    import torch

    a = torch.randn(2048, 2048, device="cuda")
    timing = measure(lambda i: a @ a, "cuda", warmup=2, repeat=10)
    assert timing.clock == "cuda-events" and timing.samples == 10 and 0 < timing.median_ms < 1000


def test_ratios_against_the_fastest_and_the_compiled_kernel() -> None:
    from jetson_mamba.bench.runner import TIMED, BenchResult, _with_ratios

    def timed(backend: str, ms: float, dtype: str = "float32") -> BenchResult:
        return BenchResult("selective_scan", "p", dtype, "forward", backend, TIMED,
                           timing=summarize([ms], "cuda-events"))

    results = [timed("cuda", 1.2), timed("triton", 1.0), timed("torch", 12.0), timed("triton", 2.0, "bfloat16")]
    results = list(_with_ratios(results))
    assert [r.ratio for r in results] == pytest.approx([1.2, 1.0, 12.0, 1.0])
    assert [r.vs_cuda for r in results[:3]] == pytest.approx([1.0, 1.2, 0.1])
    assert results[3].vs_cuda is None  # no compiled time for bf16 in this group
