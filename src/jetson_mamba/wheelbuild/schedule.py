"""How the packages of one build share the machine: at the same time, the job budget split between them.

causal-conv1d and mamba-ssm do not need each other to compile (mamba-ssm's setup.py neither
imports nor requires causal-conv1d), and each alone leaves most of a big machine idle: causal-conv1d
has 4 translation units, one of which (`causal_conv1d_bwd.cu`) takes most of its time, and mamba-ssm
has 10. One after the other on 16 cores, the pair took the sum of both; side by side it takes the
slower one. Pure functions: tests check every decision without a compiler.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

_SOURCE = re.compile(r"""["']([\w./-]+\.(?:cu|cpp|cc|cxx))["']""")


def count_units(setup_py: str) -> int:
    """Translation units a setup.py compiles: the distinct .cu/.cpp paths it names (at least 1)."""
    return max(1, len(set(_SOURCE.findall(setup_py))))


@dataclass(frozen=True)
class Share:
    """One package's part of the machine."""

    name: str
    units: int  # translation units its setup.py compiles
    jobs: int  # its MAX_JOBS
    split_threads: int  # nvcc --split-compile per job

    def to_json(self) -> Dict[str, object]:
        return {"name": self.name, "units": self.units, "jobs": self.jobs, "split_threads": self.split_threads}


@dataclass(frozen=True)
class Schedule:
    parallel: bool  # all packages compile at the same time
    shares: Tuple[Share, ...]  # in the plan's order
    reason: str

    def to_json(self) -> Dict[str, object]:
        return {"parallel": self.parallel, "reason": self.reason, "shares": [s.to_json() for s in self.shares]}


def split_threads(cores: int, jobs: int, split_compile: bool) -> int:
    """The cores a package's jobs leave idle go to nvcc's optimizer threads (measured: a unit 1.8-2.2x
    faster with 4): early on the threads oversubscribe a little, but the slowest unit outlives the rest."""
    return max(1, cores // jobs) if split_compile else 1


def _divide(jobs: int, units: Sequence[int]) -> List[int]:
    """`jobs` split over packages: one each, then one at a time to the package with most units per job."""
    shares = [1] * len(units)
    for _ in range(jobs - len(units)):
        open_ = [i for i, u in enumerate(units) if shares[i] < u]
        if not open_:
            break
        best = max(open_, key=lambda i: (units[i] / shares[i], units[i]))
        shares[best] += 1
    return shares


def share_jobs(jobs: int, cores: int, split_compile: bool, units: Sequence[Tuple[str, int]]) -> Schedule:
    """Compile every package at once when each can have a job; `jobs` (what memory allows) is the
    ceiling for all compilers together, and no package gets more jobs than it has units."""
    cores = max(1, cores)
    if len(units) > 1 and jobs >= len(units):
        divided = _divide(jobs, [u for _, u in units])
        shares = tuple(Share(name, count, given, split_threads(cores, given, split_compile))
                       for (name, count), given in zip(units, divided))
        return Schedule(True, shares, f"independent at build time: {jobs} jobs shared by units")
    shares = tuple(Share(name, count, min(jobs, count), split_threads(cores, min(jobs, count), split_compile))
                   for name, count in units)
    reason = "one package" if len(units) <= 1 else f"{jobs} job(s) for {len(units)} packages: one at a time"
    return Schedule(False, shares, reason)
