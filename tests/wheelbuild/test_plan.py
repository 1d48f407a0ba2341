"""Planning decisions (archs, specs, jobs, labels, env) with no compiler: subprocesses are forbidden here."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path
from typing import Optional

import pytest

from jetson_mamba.compat.knowledge import TESTED_PAIR
from jetson_mamba.errors import UsageError
from jetson_mamba.probe.model import CudaInfo, GpuInfo, MachineInfo, MemoryInfo, PackagesInfo, TorchInfo
from jetson_mamba.wheelbuild.plan import (
    PACKAGES,
    Toolchain,
    choose_jobs,
    for_target_cuda,
    local_label,
    make_build_plan,
    parse_arch,
    parse_archs,
    parse_specs,
)

NVCC13_ARCHS = ("7.5", "8.0", "8.6", "8.7", "8.8", "8.9", "9.0", "10.0", "10.3", "11.0", "12.0", "12.1")


@pytest.fixture(autouse=True)
def no_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"planning started a process: {args}")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(subprocess, "run", refuse)


def toolchain(archs: tuple = NVCC13_ARCHS, torch: Optional[str] = "2.14.1+cu130", cuda: str = "13.0",
              ccache: Optional[str] = None) -> Toolchain:
    return Toolchain(python="/venv/bin/python", cuda_home="/usr/local/cuda", nvcc="/usr/local/cuda/bin/nvcc",
                     cuda_version=cuda, nvcc_archs=archs, compress_mode=True, torch_version=torch,
                     torch_include="/venv/torch/include", torch_cxx_std=20, ccache=ccache)


def machine(cores: int, available_mb: int, swap_free_mb: int, gpu_arch: Optional[str] = None) -> MachineInfo:
    return MachineInfo(
        system="Linux", machine="aarch64", cpu_count=cores,
        memory=MemoryInfo(total_mb=available_mb + 500, available_mb=available_mb, swap_total_mb=swap_free_mb,
                          swap_free_mb=swap_free_mb),
        jetson=None, gpu=GpuInfo(name="Orin", arch=gpu_arch, source="jetson-soc-table") if gpu_arch else None,
        cuda=CudaInfo(home="/usr/local/cuda", nvcc="/usr/local/cuda/bin/nvcc", version="13.0", source="test"),
        torch=TorchInfo(python="/venv/bin/python", python_version="3.10", version="2.14.1", cuda="13.0"),
        packages=PackagesInfo(distributions={}, extensions=()))


@pytest.mark.parametrize("text", ["8.7", "sm_87", "87", "compute_87", " SM_87 "])
def test_arch_spellings(text: str) -> None:
    assert parse_arch(text) == "8.7"


def test_arch_list_is_sorted_and_deduplicated() -> None:
    assert parse_archs("9.0,sm_87;87 12.1 sm_100", toolchain()) == ("8.7", "9.0", "10.0", "12.1")


@pytest.mark.parametrize("text", ["8.3", "sm_99", "ampere", "9", ""])
def test_unknown_arch_is_a_usage_error_with_the_fix(text: str) -> None:
    with pytest.raises(UsageError) as error:
        parse_archs(text, toolchain())
    assert error.value.fix and "8.7" in error.value.fix


@pytest.mark.parametrize("text", ["7.2", "sm_53", "6.2,8.7"])
def test_archs_nvcc13_dropped_are_rejected(text: str) -> None:
    with pytest.raises(UsageError) as error:
        parse_archs(text, toolchain())
    assert "nvcc 13.0" in error.value.message and "sm_50..sm_72" in error.value.message
    assert "CUDA 12" in error.value.fix


def test_cuda12_toolkit_accepts_xavier() -> None:
    cuda12 = toolchain(archs=("5.0", "5.3", "6.2", "7.0", "7.2", "7.5", "8.0", "8.7", "9.0"), cuda="12.6")
    assert parse_archs("sm_72", cuda12) == ("7.2",)


def test_default_specs_are_the_tested_pair_in_dependency_order() -> None:
    assert [(s.name, s.version) for s in parse_specs([])] == list(TESTED_PAIR)
    specs = parse_specs(["mamba_ssm==2.2.5", "Causal-Conv1d==1.6.0"])
    assert [str(s) for s in specs] == ["causal-conv1d==1.6.0", "mamba-ssm==2.2.5"]
    assert parse_specs(["mamba-ssm"])[0].version is None


@pytest.mark.parametrize("text,why", [("flash-attn==2.0", "builds only"), ("mamba-ssm>=2.2", "exact"),
                                      ("mamba ssm", "parse")])
def test_bad_specs(text: str, why: str) -> None:
    with pytest.raises(UsageError, match=why):
        parse_specs([text])


def test_jobs_on_a_4gb_nano_stay_at_one() -> None:
    jobs, reason, warnings = choose_jobs(machine(4, available_mb=2600, swap_free_mb=1900), None)
    assert jobs == 1 and "2600 MB" in reason and warnings == []


def test_jobs_warn_when_even_one_compiler_does_not_fit() -> None:
    jobs, _reason, warnings = choose_jobs(machine(4, available_mb=1200, swap_free_mb=0), None)
    assert jobs == 1 and "swapon" in warnings[0]


def test_jobs_on_a_64gb_orin_use_every_core() -> None:
    assert choose_jobs(machine(12, available_mb=58000, swap_free_mb=0), None)[0] == 12


def test_jobs_limited_by_memory_not_cores() -> None:
    assert choose_jobs(machine(16, available_mb=9000, swap_free_mb=0), None)[0] == 4


def test_requested_jobs_win_and_must_be_positive() -> None:
    assert choose_jobs(machine(2, 1000, 0), 6)[:2] == (6, "--jobs")
    with pytest.raises(UsageError):
        choose_jobs(machine(2, 1000, 0), 0)


def test_label_names_toolkit_torch_and_archs() -> None:
    assert local_label(toolchain(torch="2.11.0+cu130"), ["9.0"]) == "cu130.torch2.11.sm90"
    assert local_label(toolchain(cuda="12.6", torch="2.5.0a0+872d972e41.nv24.08"), ["8.7", "9.0"]) == \
        "cu126.torch2.5.sm87.sm90"


def test_plan_defaults_to_the_probed_gpu_and_sets_the_build_env() -> None:
    plan = make_build_plan(machine(12, 58000, 0, gpu_arch="8.7"), toolchain(ccache="/usr/bin/ccache"), [], None, None)
    assert plan.archs == ("8.7",) and plan.label == "cu130.torch2.14.sm87" and plan.cxx_std == 20
    env = plan.env(PACKAGES["mamba-ssm"])
    assert env["MAMBA_FORCE_BUILD"] == "TRUE" and env["MAX_JOBS"] == "12" and env["NVCC_THREADS"] == "1"
    assert env["PYTORCH_NVCC"] == "/usr/bin/ccache /usr/local/cuda/bin/nvcc"
    command = plan.command(Path("/tree"), Path("/out"))
    assert command[:4] == ["/venv/bin/python", "-m", "pip", "wheel"]
    assert {"--no-build-isolation", "--no-deps", "--no-index"} <= set(command)
    assert not any("torch" in part for part in command)


def test_split_compile_gives_each_job_the_cores_the_jobs_leave(monkeypatch: pytest.MonkeyPatch) -> None:
    """16 cores, 4 jobs: each nvcc optimizes its unit on 4 threads (NVCC_APPEND_FLAGS, read by nvcc itself)."""
    monkeypatch.setenv("NVCC_APPEND_FLAGS", "-Xptxas=-O3")
    tools = dataclasses.replace(toolchain(), split_compile=True)
    plan = make_build_plan(machine(16, 120000, 0, gpu_arch="9.0"), tools, [], None, 4)
    assert plan.split_threads == 4 and plan.to_json()["split_threads"] == 4
    assert plan.env(PACKAGES["causal-conv1d"])["NVCC_APPEND_FLAGS"] == "-Xptxas=-O3 --split-compile=4"
    assert make_build_plan(machine(16, 120000, 0, gpu_arch="9.0"), tools, [], None, 16).split_threads == 1
    assert "NVCC_APPEND_FLAGS" not in make_build_plan(machine(16, 120000, 0, gpu_arch="9.0"), tools, [], None, 16).env(
        PACKAGES["causal-conv1d"])
    old_nvcc = make_build_plan(machine(16, 120000, 0, gpu_arch="9.0"), toolchain(), [], None, 4)
    assert old_nvcc.split_threads == 1 and "NVCC_APPEND_FLAGS" not in old_nvcc.env(PACKAGES["causal-conv1d"])


def test_plan_without_a_gpu_asks_for_arch() -> None:
    with pytest.raises(UsageError, match="no GPU") as error:
        make_build_plan(machine(2, 8000, 0), toolchain(), [], None, None)
    assert "--arch" in error.value.fix


def test_a_jetson_arch_built_on_x86_says_the_wheels_cannot_run_on_the_jetson() -> None:
    x86 = dataclasses.replace(toolchain(), machine="x86_64", platform_tag="linux_x86_64")
    plan = make_build_plan(machine(16, 64000, 0), x86, [], "8.7,9.0", None)
    [warning] = [w for w in plan.warnings if "Jetson" in w]
    assert "sm_87 (Orin) is a Jetson GPU" in warning and "sm_90" not in warning
    assert "this host is x86_64" in warning and "tagged linux_x86_64" in warning
    assert "on the Jetson itself" in warning and "--prepare-only" in warning and "aarch64 toolchain" in warning
    assert "Jetson" not in " ".join(make_build_plan(machine(16, 64000, 0), x86, [], "9.0", None).warnings)
    thor = make_build_plan(machine(16, 64000, 0), x86, [], "11.0", None).warnings
    assert any("sm_110 (Thor)" in w for w in thor)
    arm = dataclasses.replace(toolchain(), machine="aarch64", platform_tag="linux_aarch64")
    assert "Jetson" not in " ".join(make_build_plan(machine(12, 30000, 0), arm, [], "8.7", None).warnings)

NVCC118_ARCHS = ("3.5", "5.0", "5.2", "5.3", "6.0", "6.1", "6.2", "7.0", "7.2", "7.5", "8.0", "8.6", "8.7", "8.9", "9.0")


def test_nvcc11_with_a_cxx20_torch_is_refused_for_a_real_build() -> None:
    """nvcc 11 stops at C++17; torch 2.14's headers demand C++20: compiling that pair cannot work."""
    with pytest.raises(UsageError, match=r"nvcc 11.8 accepts at most C\+\+17, but torch 2.14.1") as error:
        make_build_plan(machine(8, 30000, 0), toolchain(NVCC118_ARCHS, cuda="11.8"), [], "7.2", None)
    assert "--prepare-only" in error.value.fix and "CUDA 12" in error.value.fix


def test_prepared_tree_for_nvcc11_is_cxx17_with_a_warning() -> None:
    plan = make_build_plan(machine(8, 30000, 0), toolchain(NVCC118_ARCHS, cuda="11.8"), [], "7.2", None, prepare_only=True)
    assert plan.cxx_std == 17 and plan.archs == ("7.2",)
    assert any("JetPack 5's torch 2.0/2.1" in w and "C++20" in w for w in plan.warnings)


def test_cuda_version_describes_the_target_toolkit() -> None:
    """`--cuda-version 11.4` (JetPack 5): that nvcc's archs, no --compress-mode, no local nvcc or CUDA_HOME."""
    target = for_target_cuda(toolchain(), "11.4")
    assert target.nvcc is None and target.cuda_home is None and target.cuda_version == "11.4"
    assert not target.compress_mode and not target.split_compile
    # nvcc 11.4 spans sm_35..sm_87; of those, the archs jetson-mamba knows (sm_35/37 are not among them)
    assert target.nvcc_archs == ("5.0", "5.2", "5.3", "6.0", "6.1", "6.2", "7.0", "7.2", "7.5", "8.0", "8.6", "8.7")
    plan = make_build_plan(machine(8, 30000, 0), target, [], "5.3,6.2,7.2", None, prepare_only=True)
    assert plan.archs == ("5.3", "6.2", "7.2") and plan.cxx_std == 17 and "CUDA_HOME" not in plan.env(PACKAGES["mamba-ssm"])
    assert for_target_cuda(toolchain(), "12.8").compress_mode
    assert "7.2" not in for_target_cuda(toolchain(), "13.0").nvcc_archs
    with pytest.raises(UsageError, match="cannot compile for sm_90"):
        make_build_plan(machine(8, 30000, 0), target, [], "9.0", None, prepare_only=True)


@pytest.mark.parametrize("text", ["11", "eleven", "11.4.1x", ""])
def test_bad_cuda_version_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="--cuda-version"):
        for_target_cuda(toolchain(), text)


def test_cuda10_cannot_compile_the_cxx17_sources() -> None:
    """JetPack 4 (Nano, TX2) has nvcc 10.2, which stops at C++14."""
    with pytest.raises(UsageError, match=r"nvcc 10.2 accepts at most C\+\+14"):
        make_build_plan(machine(4, 3000, 0), for_target_cuda(toolchain(), "10.2"), [], "5.3", None, prepare_only=True)
