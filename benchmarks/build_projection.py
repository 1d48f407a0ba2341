"""Project a build's wall time on another machine from measured per-unit compile times.

Input: the JSON of `jetson-mamba build --json` (each result carries ninja's per-unit seconds).
On a shared, loaded machine ninja's wall times overstate the work, so `--cpu-seconds` (user+sys
of the whole build, e.g. from `/usr/bin/time -v`) rescales them to CPU time. The target runs
`--jobs` compilers at once with cores `--slowdown` times slower than this machine's; units are
scheduled longest first (what ninja gets close to), so a package takes at least its slowest unit.

    python benchmarks/build_projection.py build.json --cpu-seconds 1234 --jobs 12 --slowdown 2.5
"""

from __future__ import annotations

import argparse
import heapq
import json
from pathlib import Path
from typing import Dict, List, Optional


def makespan(seconds: List[float], jobs: int) -> float:
    """Wall time of independent units on `jobs` workers, longest first."""
    workers = [0.0] * max(1, jobs)
    for unit in sorted(seconds, reverse=True):
        heapq.heappush(workers, heapq.heappop(workers) + unit)
    return max(workers)


def project(results: List[Dict], jobs: int, slowdown: float, cpu_seconds: Optional[float]) -> Dict[str, float]:
    wall_total = sum(s for r in results for _, s in r["unit_seconds"])
    scale = (cpu_seconds / wall_total if cpu_seconds and wall_total else 1.0) * slowdown
    return {f"{r['name']} {r['version']}": makespan([s * scale for _, s in r["unit_seconds"]], jobs)
            for r in results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--slowdown", type=float, default=1.0, help="target core time / this core's time")
    parser.add_argument("--cpu-seconds", type=float, default=None)
    args = parser.parse_args()
    results = json.loads(args.report.read_text())["results"]
    projected = project(results, args.jobs, args.slowdown, args.cpu_seconds)
    for name, seconds in projected.items():
        print(f"{name}: {seconds:.0f} s")
    print(f"both, one after the other: {sum(projected.values()):.0f} s")


if __name__ == "__main__":
    main()
