"""Timing one callable: warm-up, then per-call samples (CUDA events on a GPU, perf_counter on the CPU).

Single timings lie (clock ramp-up, JIT, caches), so every number is the median of many calls after
warm-up, with the 10th-90th percentile spread next to it. Inputs rotate through several copies so
that on a GPU a small problem is not served from L2 cache call after call.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, List, Sequence


@dataclass(frozen=True)
class Timing:
    """Milliseconds per call."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    min_ms: float
    samples: int
    clock: str  # "cuda-events" or "perf_counter"

    @property
    def spread(self) -> float:
        """(p90 - p10) / median: how noisy the median is."""
        return (self.p90_ms - self.p10_ms) / self.median_ms if self.median_ms > 0 else 0.0


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    position = q * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def summarize(samples_ms: Sequence[float], clock: str) -> Timing:
    """Median, 10th/90th percentile and minimum of per-call times."""
    if not samples_ms:
        raise ValueError("no timing samples")
    ordered = sorted(samples_ms)
    return Timing(
        median_ms=statistics.median(ordered),
        p10_ms=_percentile(ordered, 0.1),
        p90_ms=_percentile(ordered, 0.9),
        min_ms=ordered[0],
        samples=len(ordered),
        clock=clock,
    )


def rotation_count(bytes_per_call: int, cache_bytes: int, limit: int = 8) -> int:
    """How many input copies to cycle through so that their total exceeds twice the cache."""
    if bytes_per_call <= 0 or cache_bytes <= 0:
        return 1
    return max(1, min(limit, math.ceil(2 * cache_bytes / bytes_per_call)))


def measure(fn: Callable[[int], Any], device: Any, warmup: int = 3, repeat: int = 20,
            min_time_s: float = 0.0, max_time_s: float = 10.0) -> Timing:
    """Time `fn(i)` (i = call number, for rotating inputs) after `warmup` untimed calls.

    Takes at least `repeat` samples, more while the total is under `min_time_s`, and stops
    early (keeping at least 3 samples) once `max_time_s` is spent, so a slow backend on a
    big shape cannot hold up the whole run.
    """
    import torch

    cuda = torch.device(device).type == "cuda"
    for i in range(warmup):
        fn(i)
    if cuda:
        torch.cuda.synchronize(device)
    samples: List[float] = []
    started = time.perf_counter()
    i = 0
    while True:
        if cuda:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn(i)
            end.record()
            end.synchronize()
            samples.append(begin.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn(i)
            samples.append((time.perf_counter() - t0) * 1e3)
        i += 1
        spent = time.perf_counter() - started
        if len(samples) >= 3 and spent > max_time_s:
            break
        if len(samples) >= repeat and spent >= min_time_s:
            break
    return summarize(samples, "cuda-events" if cuda else "perf_counter")


@dataclass(frozen=True)
class Rounds:
    """Several rounds of `measure` of one callable: the round with the median median, and how far apart the
    rounds' medians lie."""

    timing: Timing  # the median round
    medians_ms: Sequence[float]  # every round's median, in order

    @property
    def spread(self) -> float:
        """(slowest - fastest round median) / the median round's median: run-to-run noise of the number."""
        return (max(self.medians_ms) - min(self.medians_ms)) / self.timing.median_ms if self.timing.median_ms else 0.0


def measure_rounds(fn: Callable[[int], Any], device: Any, warmup: int, repeat: int, rounds: int = 5,
                   max_time_s: float = 10.0) -> Rounds:
    """`rounds` measurements of `fn` after one warm-up of `warmup` calls: for a number that one long
    warm-up must settle first (torch.compile's mode="reduce-overhead": the compile, an eager run, the CUDA
    graph's capture, the Triton autotuners' first calls) and whose single medians moved from run to run.
    Each round takes `repeat` samples; `max_time_s` is shared by all rounds."""
    for i in range(warmup):  # not through measure: its time limit would cut a long compile's warm-up short
        fn(i)
    timings = [measure(fn, device, warmup=0, repeat=repeat, max_time_s=max_time_s / rounds) for _ in range(rounds)]
    by_median = sorted(timings, key=lambda t: t.median_ms)
    return Rounds(by_median[(len(by_median) - 1) // 2], [t.median_ms for t in timings])
