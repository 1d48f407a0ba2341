"""How conformance results read: a markdown table (benchmarks/RESULTS.md), a plain-text report, and
the error that makes the command exit non-zero. Pure functions of SuiteResults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from jetson_mamba.conformance.runner import Family, SuiteResult
from jetson_mamba.conformance.suites import BACKENDS, parse_shard
from jetson_mamba.errors import VerificationError

COLUMNS = ("passed", "failed", "skipped", "not_sampled", "not_run")


def table(results: Sequence[SuiteResult]) -> str:
    """Markdown: one row per file, backend and test function, then the skip reasons."""
    lines = ["| file | backend | device | test function | passed | failed | skipped | not sampled | not run |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for result in results:
        for name, family in sorted(result.families.items()):
            counts = " | ".join(str(getattr(family, key)) for key in COLUMNS)
            lines.append(f"| {result.suite} | {result.backend} | {result.device} | {name} | {counts} |")
        totals = " | ".join(f"**{result.total(key)}**" for key in COLUMNS)
        status = (f"{result.seconds:.0f} s" + (f", shards {result.shard}" if result.shard else "")
                  + (f", {result.error}" if result.error else ""))
        lines.append(f"| {result.suite} | {result.backend} | {result.device} | **all** ({status}) | {totals} |")
    reasons = sorted({(r.suite, n, reason) for r in results for n, f in r.families.items() for reason in f.skip_reasons})
    if reasons:
        lines += ["", "Skipped, with the reasons given (`not applicable:` = jetson-mamba's list; others are upstream's):"]
        lines += [f"- {suite} `{name}`: {reason}" for suite, name, reason in reasons]
    return "\n".join(lines) + "\n"


def merge_shards(results: Sequence[SuiteResult]) -> List[SuiteResult]:
    """The shards of each run (same file, backend, device, sample and N) added into one result; a
    shard given twice counts once (the later), a missing shard is an error. Unsharded results pass."""
    out: List[SuiteResult] = [r for r in results if not r.shard]
    groups: Dict[Tuple[str, str, str, str, int], Dict[int, SuiteResult]] = {}
    for result in results:
        if result.shard:
            k, n = parse_shard(result.shard)
            groups.setdefault((result.suite, result.backend, result.device, result.sample, n), {})[k] = result
    for (name, backend, device, sample, n), shards in groups.items():
        order = sorted(shards)
        total = SuiteResult(name, backend, device, sample, shard=f"{','.join(map(str, order))}/{n}",
                            uncovered=shards[order[0]].uncovered,  # of the whole sample: the same in every shard
                            seconds=max(s.seconds for s in shards.values()),
                            restarts=sum(s.restarts for s in shards.values()),
                            log="; ".join(shards[k].log for k in order))
        for k in order:
            for family_name, family in shards[k].families.items():
                total.families.setdefault(family_name, Family()).add(family)
        missing = sorted(set(range(1, n + 1)) - set(order))
        errors = [f"shard {k}/{n}: {shards[k].error}" for k in order if shards[k].error]
        errors += [f"shards {', '.join(map(str, missing))} of {n} missing"] if missing else []
        total.error = "; ".join(errors) or None
        out.append(total)
    return out


def merged_table(paths: Sequence[Path]) -> str:
    """One table from several `conformance --json` outputs, shards added together (files that are
    not JSON are named, not fatal)."""
    results, unreadable = [], []
    for path in paths:
        try:
            data = json.loads(path.read_text())
        except ValueError:
            unreadable.append(path.name)
            continue
        results += [SuiteResult.from_dict(r) for r in data.get("results", [])]
    results = merge_shards(results)
    order = {name: i for i, name in enumerate(BACKENDS)}
    results.sort(key=lambda r: (r.suite, order.get(r.backend, len(order))))
    failures = [f"- FAILED [{r.backend}] {r.suite} {nodeid.split('::')[-1]}: {message[:300]}"
                for r in results for _, family in sorted(r.families.items()) for nodeid, message in family.failures[:3]]
    tail = [f"(not JSON, left out: {', '.join(unreadable)})"] if unreadable else []
    return table(results) + "\n".join(["", *failures, *tail]) + "\n"


def text(results: Sequence[SuiteResult], failures_per_family: int = 5) -> str:
    """Per file and backend: totals, each test function's counts, its first failures."""
    out: List[str] = []
    for result in results:
        totals = ", ".join(f"{result.total(key)} {key.replace('_', ' ')}" for key in COLUMNS)
        shard = f", shard {result.shard}" if result.shard else ""
        out.append(f"{result.suite} [{result.backend}, {result.device}, sample {result.sample}{shard}]: "
                   f"{'OK' if result.ok else 'FAILED'}: {totals} ({result.seconds:.0f} s"
                   f"{f', {result.restarts} restarts' if result.restarts else ''}; log {result.log})")
        if result.error:
            out.append(f"  error: {result.error}")
        for name, family in sorted(result.families.items()):
            counts = ", ".join(f"{getattr(family, key)} {key.replace('_', ' ')}" for key in COLUMNS
                               if getattr(family, key))
            out.append(f"  {name}: {counts}")
            for reason, count in sorted(family.skip_reasons.items()):
                out.append(f"    skipped {count}: {reason}")
            for nodeid, message in family.failures[:failures_per_family]:
                out.append(f"    FAILED {nodeid.split('::')[-1]}: {message}")
            if len(family.failures) > failures_per_family:
                out.append(f"    ... and {len(family.failures) - failures_per_family} more failures")
        if result.uncovered:
            out.append(f"  parameter values the sample missed: {', '.join(result.uncovered)}")
    return "\n".join(out) + "\n"


def failure_error(results: Sequence[SuiteResult]) -> VerificationError:
    bad = [r for r in results if not r.ok]
    names = "; ".join(f"{r.suite} [{r.backend}]: {r.total('failed')} failed" + (f", {r.error}" if r.error else "")
                      for r in bad)
    return VerificationError(f"upstream's tests fail on jetson-mamba's kernels: {names}",
                             "read the failures above (each file's pytest log is named there); rerun one file with "
                             "`jetson-mamba conformance --file NAME --backend NAME`")
