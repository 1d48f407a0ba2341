"""`jetson-mamba doctor`: describe the machine and diagnose known failure modes."""

from __future__ import annotations

import argparse
from typing import Sequence

from rich.table import Table

from jetson_mamba.cli._python import checked_python
from jetson_mamba.cli.output import console, err_console, plain, print_json
from jetson_mamba.compat.findings import Finding
from jetson_mamba.compat.installed import patches_in_effect
from jetson_mamba.compat.report import DoctorReport, doctor_report
from jetson_mamba.probe import probe_machine
from jetson_mamba.results import document

NAME = "doctor"
HELP = "describe this machine (Jetson, GPU, CUDA, torch, Mamba packages) and diagnose known problems"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default="/", help="read the Jetson and /proc files under this directory")
    parser.add_argument("--python", default=None, help="probe this interpreter's torch and packages")


def _machine_table(report: DoctorReport) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    jetson = report.jetson
    if jetson:
        table.add_row("Jetson", plain(f"{jetson.model or '?'} ({jetson.soc or '?'}), L4T {jetson.l4t or '?'}, "
                                f"JetPack {jetson.jetpack or '?'}"))
    gpu = report.gpu
    table.add_row("GPU", plain(f"{gpu.name} sm_{(gpu.arch or '?').replace('.', '')} (from {gpu.source})" if gpu
                               else "none found"))
    cuda = report.cuda
    table.add_row("CUDA toolkit", plain(f"{cuda.version} at {cuda.home}" if cuda.nvcc else "not found"))
    torch = report.torch
    if torch.version:
        flavour = f"CUDA {torch.cuda}" if torch.cuda else "CPU-only"
        table.add_row("torch", plain(f"{torch.version} ({flavour}, C++11 ABI {torch.cxx11_abi}, "
                                     f"GPU {'visible' if torch.cuda_available else 'not visible'}) in {torch.python}"))
    else:
        table.add_row("torch", plain(f"not importable ({torch.error or 'not installed'})"))
    table.add_row("triton", plain(torch.triton or "not installed"))
    host = report.machine
    if host.memory:
        m = host.memory
        table.add_row("memory", plain(f"{m.total_mb} MB RAM ({m.available_mb} MB available), {m.swap_total_mb} MB swap, "
                                      f"{host.cpu_count} cores"))
    for name in ("mamba-ssm", "causal-conv1d", "selective-scan", "einops", "transformers"):
        version = report.packages.distributions.get(name)
        if version:
            table.add_row(name, plain(version))
    for e in report.packages.extensions:
        archs = ", ".join(f"sm_{a.replace('.', '')}" for a in e.archs) if e.archs is not None else "unknown"
        state = "imports" if e.importable else f"fails: {e.error}"
        table.add_row(plain(e.module), plain(f"{state}; GPU code: {archs}"))
    return table


def _print_findings(findings: Sequence[Finding]) -> None:
    if not findings:
        console.print("[green]No problems found.[/]")
        return
    colours = {"error": "red", "warning": "yellow", "info": "cyan"}
    for f in findings:
        console.print(f"[bold {colours[f.severity]}]{f.severity}[/] [dim]{plain(f.id)}[/] {plain(f.message)}")
        console.print(f"    [bold]fix:[/] {plain(f.fix)}")


def run(args: argparse.Namespace) -> int:
    args.python = checked_python(args.python)
    if args.json:
        machine = probe_machine(args.root, args.python)
    else:
        with err_console.status("probing the machine (torch is imported in a subprocess)..."):
            machine = probe_machine(args.root, args.python)
    report = doctor_report(machine, patches_in_effect(machine))
    if args.json:
        print_json(document(report))
    else:
        console.print(_machine_table(report))
        if report.packages.patches_applied:
            console.print(f"[bold]patches applied[/] {plain(', '.join(report.packages.patches_applied))}")
        console.print()
        _print_findings(report.findings)
    return 1 if report.has_errors else 0
