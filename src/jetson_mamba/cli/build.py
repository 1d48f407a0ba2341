"""`jetson-mamba build`: wheels for exactly the target GPU, from sdists or a checkout, in minutes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import List

from rich.table import Table

from jetson_mamba.cli.output import console, err_console, plain, print_json
from jetson_mamba.errors import UsageError
from jetson_mamba.wheelbuild.plan import BuildPlan

NAME = "build"
HELP = "compile mamba-ssm / causal-conv1d wheels for exactly this GPU (or --arch), patched for CUDA 13 and torch 2.14"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("specs", nargs="*", metavar="SPEC",
                        help="packages to build, e.g. causal-conv1d==1.6.0 mamba-ssm==2.2.5 "
                             "(default: the tested pair, in dependency order)")
    parser.add_argument("--arch", default=None,
                        help="GPU archs, e.g. 8.7 or sm_87,sm_90 (default: this machine's GPU)")
    parser.add_argument("--source", action="append", default=[], type=Path, metavar="PATH",
                        help="a local sdist, a directory of sdists, an unpacked sdist or a git checkout "
                             "(repeatable; default: download the sdist)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="parallel compiler processes in all, shared by the packages that compile at the same "
                             "time (default: from cores and free RAM + swap, ~2.1 GB each)")
    parser.add_argument("--out", type=Path, default=Path("wheelhouse"), help="where the wheels go (default: ./wheelhouse)")
    parser.add_argument("--archive", type=Path, default=None, metavar="DIR",
                        help="also add each wheel, with its provenance, to this wheel archive")
    parser.add_argument("--prepare-only", type=Path, default=None, metavar="DIR",
                        help="write the patched source trees and the exact build commands to DIR; compile nothing")
    parser.add_argument("--cuda-version", default=None, metavar="X.Y",
                        help="with --prepare-only: the CUDA toolkit the trees will be compiled with elsewhere "
                             "(e.g. 11.4 on JetPack 5), which decides the archs and C++ standard "
                             "(default: this machine's nvcc)")


def _plan_lines(plan: BuildPlan, ccache_note: str) -> List[str]:
    toolchain = plan.toolchain
    # --cuda-version names a toolkit on another machine: there is no nvcc path to show
    nvcc = toolchain.nvcc or ("the target machine's" if toolchain.cuda_version else "not found")
    return [
        f"packages: {', '.join(str(s) for s in plan.specs)}",
        f"archs:    {', '.join('sm_' + a.replace('.', '') for a in plan.archs)}  (label +{plan.label})",
        f"jobs:     {plan.jobs} in all  ({plan.jobs_reason}; packages that compile at the same time share them)"
        + (f"; nvcc --split-compile={plan.split_threads} per job" if plan.split_threads > 1 else ""),
        f"toolkit:  nvcc {toolchain.cuda_version or '?'} ({nvcc}), "
        f"torch {toolchain.torch_version or 'not found'}, C++{plan.cxx_std}, "
        f"{'--compress-mode=size' if toolchain.compress_mode else 'no --compress-mode'}",
        ccache_note,
    ]


def run(args: argparse.Namespace) -> int:
    from jetson_mamba.probe import probe_machine
    from jetson_mamba.wheelbuild.executor import build_all, prepare_only, work_root
    from jetson_mamba.wheelbuild.plan import for_target_cuda, make_build_plan
    from jetson_mamba.wheelbuild.toolchain import probe_toolchain

    machine = probe_machine()
    toolchain = probe_toolchain(machine)
    if args.cuda_version is not None:
        if args.prepare_only is None:
            raise UsageError("--cuda-version only describes a toolkit on another machine",
                             "add --prepare-only DIR, or point CUDA_HOME at that toolkit to compile here")
        toolchain = for_target_cuda(toolchain, args.cuda_version)
    plan = make_build_plan(machine, toolchain, args.specs, args.arch, args.jobs, prepare_only=args.prepare_only is not None)
    ccache_note = (f"reuse:    ccache {toolchain.ccache} (PYTORCH_NVCC and CXX go through it), and the objects "
                   f"in {work_root()}" if toolchain.ccache else
                   f"reuse:    unchanged sources reuse the objects in {work_root()} (install ccache to share "
                   "them across versions)")
    # on stderr even with --json: a CI log shows the plan, and stdout keeps one JSON document
    for line in _plan_lines(plan, ccache_note):
        err_console.print(plain(line), soft_wrap=True)
    for warning in plan.warnings:
        err_console.print(f"[yellow]warning:[/] {plain(warning)}", soft_wrap=True)
    if args.prepare_only is not None:
        prepared = prepare_only(plan, args.source, args.prepare_only)
        if args.json:
            print_json({"plan": plan.to_json(), "prepare_only": True, "results": [r.to_json() for r in prepared]})
            return 0
        for r in prepared:
            console.print(f"[bold]{plain(r.name)} {plain(r.version)}[/]: patched tree {plain(str(r.tree))}"
                          f"{' (reused)' if r.reused_tree else ''}\n  patches: {plain(', '.join(r.patches))}"
                          f"\n  build it with: sh {plain(str(r.log))}")
        return 0
    report = build_all(plan, machine, args.source, args.out, args.archive, err_console)
    if args.json:
        print_json({"plan": plan.to_json(), "prepare_only": False, **report.to_json()})
        return 0
    results = report.results
    table = Table(title=f"built for {', '.join('sm_' + a.replace('.', '') for a in plan.archs)}")
    for column in ("package", "wheel", "size", "time", "compiled", "patches"):
        table.add_column(column)
    for r in results:
        table.add_row(plain(f"{r.name} {r.version}"), plain(r.wheel), f"{r.size / 1e6:.1f} MB", f"{r.seconds:.0f} s",
                      f"{r.compiled_units} units" if r.compiled_units else "none (all objects up to date)",
                      f"{len(r.patches)}{' (tree reused)' if r.reused_tree else ''}")
    console.print(table)
    slowest = report.slowest()
    if slowest is not None:
        console.print(f"slowest unit: {plain(slowest['package'])} {plain(slowest['unit'])} {slowest['seconds']:.1f} s "
                      f"of {report.seconds:.0f} s wall ({'packages at the same time' if report.schedule.parallel else 'one package at a time'})",
                      soft_wrap=True)
    for r in results:
        console.print(f"log: {plain(str(r.log))}", soft_wrap=True)
    for warning in plan.warnings:
        err_console.print(f"[yellow]warning:[/] {plain(warning)}", soft_wrap=True)
    return 0
