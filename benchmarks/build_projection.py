"""Project a build's wall time on another machine from measured per-unit compile times.

Input: the JSON of `jetson-mamba build --json` (each result carries ninja's per-unit seconds).
On a shared, loaded machine ninja's wall times overstate the work, so `--scale` rescales them
(e.g. the ratio of an unloaded measurement of one unit or package to its loaded one). The target runs
`--jobs` compilers at once with cores `--slowdown` times slower than this machine's; units are
scheduled longest first (what ninja gets close to), so a package takes at least its slowest unit.

    python benchmarks/build_projection.py build.json --scale 0.1036 --jobs 12 --slowdown 2.5
"""

from __future__ import annotations

import argparse
import heapq
import json
from pathlib import Path
from typing import Dict, List


def makespan(seconds: List[float], jobs: int) -> float:
    """Wall time of independent units on `jobs` workers, longest first."""
    workers = [0.0] * max(1, jobs)
    for unit in sorted(seconds, reverse=True):
        heapq.heappush(workers, heapq.heappop(workers) + unit)
    return max(workers)


def project(results: List[Dict], jobs: int, factor: float) -> Dict[str, float]:
    """Projected compile wall time per package: units times `factor`, on `jobs` workers."""
    return {f"{r['name']} {r['version']}": makespan([s * factor for _, s in r["unit_seconds"]], jobs)
            for r in results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--slowdown", type=float, default=1.0, help="target core time / this core's time")
    parser.add_argument("--scale", type=float, default=1.0, help="unloaded / measured unit time on this machine")
    args = parser.parse_args()
    results = json.loads(args.report.read_text())["results"]
    projected = project(results, args.jobs, args.scale * args.slowdown)
    for name, seconds in projected.items():
        print(f"{name}: {seconds:.0f} s")
    print(f"both, one after the other: {sum(projected.values()):.0f} s")


if __name__ == "__main__":
    main()
