"""Every doctor rule on hand-built machine descriptions (the rules are pure functions)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from jetson_mamba.compat.findings import PATCH_CAUSAL_CONV1D_BRIDGE, PATCH_SSD_DD, Finding, diagnose_machine
from jetson_mamba.compat.knowledge import recommended_max_jobs
from jetson_mamba.compat.report import doctor_report
from jetson_mamba.compat.runtime_patches import MAMBA3_LAZY
from jetson_mamba.probe.jetson import read_jetson
from jetson_mamba.probe.model import (
    CudaInfo,
    ExtensionInfo,
    FatbinArchs,
    GpuInfo,
    JetsonInfo,
    MachineInfo,
    MemoryInfo,
    PackageInfo,
    PackagesInfo,
    TorchInfo,
)
from jetson_mamba.results import document


def packages(versions: Dict[str, str], extensions: tuple = ()) -> PackagesInfo:
    return PackagesInfo(distributions={n: PackageInfo(n, v) for n, v in versions.items()}, extensions=extensions)


def healthy_orin(**changes) -> MachineInfo:
    machine = MachineInfo(
        system="Linux", machine="aarch64", cpu_count=12,
        memory=MemoryInfo(total_mb=62000, available_mb=56000, swap_total_mb=31000, swap_free_mb=31000),
        jetson=JetsonInfo("NVIDIA Jetson AGX Orin Developer Kit", "tegra234", "36.4.0", "6.1", "8.7"),
        gpu=GpuInfo("Orin", "8.7", "torch.cuda"),
        cuda=CudaInfo("/usr/local/cuda", "/usr/local/cuda/bin/nvcc", "12.6", "/usr/local/cuda"),
        torch=TorchInfo(python="/usr/bin/python3", python_version="3.10.12", version="2.5.0a0+872d972e41.nv24.08",
                        cuda="12.6", cuda_available=True, cxx11_abi=True, jetpack_build=True,
                        distributed_available=True, triton="3.1.0"),
        packages=packages({"mamba-ssm": "2.2.5", "causal-conv1d": "1.6.0", "transformers": "4.46.0"}, (
            ExtensionInfo("selective_scan_cuda", "/x/selective_scan_cuda.so", True, archs=FatbinArchs(("8.7",), ())),
            ExtensionInfo("causal_conv1d_cuda", "/x/causal_conv1d_cuda.so", True, archs=FatbinArchs(("8.7",), ())),
        )),
    )
    return replace(machine, **changes)


def ids(findings: List[Finding], severity: Optional[str] = None) -> List[str]:
    return [f.id for f in findings if severity is None or f.severity == severity]


def test_healthy_orin_has_no_findings() -> None:
    assert diagnose_machine(healthy_orin(), applied_patches=[PATCH_SSD_DD]) == []


def test_mamba2_d_gradient_warns_before_2_3_until_patched() -> None:
    found = next(f for f in diagnose_machine(healthy_orin()) if f.id == "mamba2-d-gradient")
    assert found.severity == "warning" and "BLOCK_SIZE_N" in found.message and "jetson-mamba patch" in found.fix
    fixed_upstream = healthy_orin(packages=packages({"mamba-ssm": "2.3.2.post1", "causal-conv1d": "1.6.0"}))
    assert "mamba2-d-gradient" not in ids(diagnose_machine(fixed_upstream))


def test_pinned_pair_is_an_error_until_patched() -> None:
    machine = healthy_orin(packages=packages({"mamba-ssm": "2.2.4", "causal-conv1d": "1.6.0"}, healthy_orin().packages.extensions))
    found = diagnose_machine(machine)
    assert ids(found, "error") == ["incompatible-pair"]
    assert "incompatible function arguments" in found[0].message and "jetson-mamba patch" in found[0].fix
    assert diagnose_machine(machine, applied_patches=[PATCH_CAUSAL_CONV1D_BRIDGE, PATCH_SSD_DD]) == []


def test_reverse_pair() -> None:
    machine = healthy_orin(packages=packages({"mamba-ssm": "2.3.2.post1", "causal-conv1d": "1.4.0"}))
    assert "cpp_functions" in next(f for f in diagnose_machine(machine) if f.id == "incompatible-pair").message


def test_local_version_labels_compare_by_public_version() -> None:
    machine = healthy_orin(packages=packages({"mamba-ssm": "2.2.5+cu126.torch2.5.sm87", "causal-conv1d": "1.6.0+cu126"},
                                             healthy_orin().packages.extensions))
    assert diagnose_machine(machine, applied_patches=[PATCH_SSD_DD]) == []


def test_extension_without_this_arch() -> None:
    ext = ExtensionInfo("selective_scan_cuda", "/x.so", True, archs=FatbinArchs(("9.0",), ()))
    found = diagnose_machine(healthy_orin(packages=packages({"mamba-ssm": "2.2.5"}, (ext,))))
    missing = next(f for f in found if f.id == "extension-missing-arch")
    assert missing.severity == "error" and "sm_90" in missing.message and "no kernel image" in missing.message
    assert missing.fix == "jetson-mamba build --arch 8.7"


def test_ptx_of_an_older_arch_is_enough() -> None:
    ext = ExtensionInfo("selective_scan_cuda", "/x.so", True, archs=FatbinArchs((), ("8.0",)))
    assert "extension-missing-arch" not in ids(diagnose_machine(healthy_orin(packages=packages({"mamba-ssm": "2.2.5"}, (ext,)))))


def test_import_errors_are_explained() -> None:
    cases = {
        "ImportError: /x/selective_scan_cuda.so: undefined symbol: _ZN3c104cuda9SetDeviceEi": "another torch version",
        "ImportError: libc10.so: cannot open shared object file: No such file or directory": "torch libraries",
        "ImportError: libcudart.so.13: cannot open shared object file": "CUDA runtime",
    }
    for error, meaning in cases.items():
        ext = ExtensionInfo("selective_scan_cuda", "/x.so", False, error=error)
        found = next(f for f in diagnose_machine(healthy_orin(packages=packages({}, (ext,)))) if f.id == "extension-import-error")
        assert meaning in found.message, error


def test_missing_toolkit_and_triton_and_cpu_torch() -> None:
    machine = healthy_orin(
        cuda=CudaInfo(None, None, None, "not found"),
        torch=replace(healthy_orin().torch, cuda=None, cuda_available=False, triton=None, jetpack_build=False,
                      version="2.5.0"),
    )
    found = diagnose_machine(machine)
    assert ids(found, "error") == ["torch-cpu-only"]
    assert {"cuda-toolkit-missing", "triton-missing"} <= set(ids(found, "warning"))
    assert "JetPack PyTorch" in found[0].fix


def test_triton_fix_names_the_release_torch_requires_and_a_mismatch_is_found() -> None:
    torch = replace(healthy_orin().torch, version="2.5.0a0+872d972e41.nv24.08", triton=None)
    missing = next(f for f in diagnose_machine(healthy_orin(torch=torch)) if f.id == "triton-missing")
    assert "`pip install triton==3.1.0`" in missing.fix
    mismatched = replace(torch, triton="3.3.1")
    found = next(f for f in diagnose_machine(healthy_orin(torch=mismatched)) if f.id == "triton-mismatch")
    assert "triton 3.3.1" in found.message and "triton==3.1.0" in found.fix
    assert "triton-mismatch" not in ids(diagnose_machine(healthy_orin(torch=replace(torch, triton="3.1.0"))), "warning")
    unknown = replace(torch, version="9.9.0", triton=None)
    assert "Requires-Dist" in next(f for f in diagnose_machine(healthy_orin(torch=unknown)) if f.id == "triton-missing").fix


def test_distributed_missing_matters_when_mamba_is_installed() -> None:
    torch = replace(healthy_orin().torch, distributed_available=False,
                    distributed_missing=("ProcessGroup", "all_gather_into_tensor"))
    assert ids(diagnose_machine(healthy_orin(torch=torch)), "error") == ["torch-distributed-missing"]
    assert ids(diagnose_machine(healthy_orin(torch=torch, packages=packages({})))) == ["torch-distributed-missing"]
    assert ids(diagnose_machine(healthy_orin(torch=torch, packages=packages({}))), "warning") == ["torch-distributed-missing"]


def test_transformers5_with_mamba_22x() -> None:
    base = healthy_orin()
    broken = replace(base, packages=packages({"mamba-ssm": "2.2.5", "causal-conv1d": "1.6.0",
                                              "transformers": "5.17.0"}, base.packages.extensions))
    found = next(f for f in diagnose_machine(broken) if f.id == "transformers5-import")
    assert "GreedySearchDecoderOnlyOutput" in found.message
    fixed_upstream = replace(base, packages=packages({"mamba-ssm": "2.3.2.post1", "causal-conv1d": "1.6.0",
                                                      "transformers": "5.17.0"}))
    assert "transformers5-import" not in ids(diagnose_machine(fixed_upstream))


def test_nano_memory_limits_build_jobs() -> None:
    nano = healthy_orin(cpu_count=4, memory=MemoryInfo(3956, 2832, 0, 0))
    found = next(f for f in diagnose_machine(nano) if f.id == "build-memory")
    assert found.severity == "warning" and "MAX_JOBS=1" in found.message and "swapon" in found.fix
    assert recommended_max_jobs(12, 56000, 31000) == 12
    assert recommended_max_jobs(4, 2832, 0) == 1


def test_heavy_dependencies_on_aarch64_only() -> None:
    orin = healthy_orin(packages=packages({"mamba-ssm": "2.3.2.post1", "causal-conv1d": "1.6.0"}))
    assert "mamba-heavy-dependencies" in ids(diagnose_machine(orin))
    assert "mamba-heavy-dependencies" not in ids(diagnose_machine(replace(orin, machine="x86_64")))
    # the probe found Mamba-3's module and every dependency imports: nothing to warn about
    imported = {module: None for module in ("tilelang", "tvm_ffi", "quack", "cutlass")}
    mamba3 = replace(orin, packages=replace(orin.packages, mamba3=True, mamba3_imports=imported))
    assert not {"mamba-heavy-dependencies", "mamba3-unavailable"} & set(ids(diagnose_machine(mamba3)))


def test_no_torch_is_a_warning_with_the_jetpack_hint() -> None:
    torch = TorchInfo(python="/usr/bin/python3", python_version=None, version=None, cuda=None, error="ModuleNotFoundError")
    found = diagnose_machine(healthy_orin(torch=torch, packages=packages({})))
    assert ids(found) == ["torch-missing"] and "never installs torch" in found[0].fix


def test_errors_come_first() -> None:
    machine = healthy_orin(cuda=CudaInfo(None, None, None, "not found"),
                           packages=packages({"mamba-ssm": "2.2.4", "causal-conv1d": "1.6.0"}))
    severities = [f.severity for f in diagnose_machine(machine)]
    assert severities == sorted(severities, key=["error", "warning", "info"].index)


def test_mamba3_pieces_say_why_and_how() -> None:
    """mamba-ssm main's Mamba-3: tilelang missing on JetPack 5's glibc, tvm-ffi 0.1.12's crash, quack missing."""
    orin = healthy_orin()
    jetpack5 = replace(orin, torch=replace(orin.torch, glibc="2.31"), packages=replace(
        packages({"mamba-ssm": "2.3.2.post1", "apache-tvm-ffi": "0.1.12"}), mamba3=True, mamba3_imports={
            "tilelang": "ModuleNotFoundError: No module named 'tilelang'",
            "tvm_ffi": "AttributeError: module 'tvm_ffi' has no attribute 'register_global_func'",
            "quack": "ModuleNotFoundError: No module named 'quack'", "cutlass": None}))
    found = [f for f in diagnose_machine(jetpack5) if f.id == "mamba3-unavailable"]
    assert len(found) == 3, found
    assert "mamba-heavy-dependencies" not in ids(diagnose_machine(jetpack5))  # the same dependencies, said once
    tilelang, tvm, quack = found
    assert "glibc >= 2.34" in tilelang.message and "glibc 2.31" in tilelang.message and "JetPack 6" in tilelang.fix
    assert "issue 986" in tvm.message and "apache-tvm-ffi<0.1.12" in tvm.fix
    assert "step()" in quack.message and "pip install --no-deps quack-kernels" in quack.fix
    # JetPack 6 (glibc 2.35): tilelang is merely not installed
    jetpack6 = replace(jetpack5, torch=replace(orin.torch, glibc="2.35"))
    assert "pip install --no-deps tilelang" in [f for f in diagnose_machine(jetpack6) if f.id == "mamba3-unavailable"][0].fix
    assert "mamba3-unavailable" not in ids(diagnose_machine(orin))  # released mamba-ssm has no Mamba-3


def test_a_crashing_mamba3_import_asks_for_the_patch_only_until_it_is_applied() -> None:
    orin = healthy_orin()
    crashed = replace(orin, packages=replace(packages({"mamba-ssm": "2.3.2.post1"}), mamba3=True,
                                             mamba3_imports={"*": "exit status -11"}))
    [found] = [f for f in diagnose_machine(crashed) if f.id == "mamba3-unavailable"]
    assert "exit status -11" in found.message and found.fix.startswith("`jetson-mamba patch`")
    [found] = [f for f in diagnose_machine(crashed, [MAMBA3_LAZY]) if f.id == "mamba3-unavailable"]
    assert "jetson-mamba patch" not in found.fix and found.fix.startswith("reinstall the failing one of tilelang")


def test_missing_extensions_are_not_told_to_patch_once_routed() -> None:
    """With `portable-kernels` in effect the kernels already run on the portable backends: only the build is
    left to offer (verify's diagnosis of a patched install offered `jetson-mamba patch` again)."""
    from jetson_mamba.compat.runtime_patches import PORTABLE

    machine = healthy_orin(packages=packages({"mamba-ssm": "2.2.5", "causal-conv1d": "1.5.2"}))
    fixes = [f.fix for f in diagnose_machine(machine) if f.id == "extension-not-compiled"]
    assert len(fixes) == 2 and all("jetson-mamba patch" in fix for fix in fixes)
    routed = [f.fix for f in diagnose_machine(machine, applied_patches=[PORTABLE]) if f.id == "extension-not-compiled"]
    assert routed == ["for the compiled kernels: jetson-mamba build --arch 8.7"] * 2


ROOTS = Path(__file__).parents[1] / "probe" / "roots"
MAMBA3_GPU = ("mamba3-gpu-arch", "mamba3-blackwell-stages", "mamba3-shared-memory")


def _board(root: str, cuda: str, **gpu: object) -> MachineInfo:
    """A Jetson fixture root's SoC facts (read as the probe reads them) with mamba-ssm main installed."""
    jetson = read_jetson(ROOTS / root, cuda)
    assert jetson is not None and jetson.cuda_arch
    installed = replace(packages({"mamba-ssm": "2.3.2.post1"}), mamba3=True,
                        mamba3_imports={m: None for m in ("tilelang", "tvm_ffi", "quack", "cutlass")})
    return healthy_orin(jetson=jetson, packages=installed,
                        gpu=GpuInfo(jetson.model, jetson.cuda_arch, "jetson-soc-table", **gpu))


def _mamba3_gpu(machine: MachineInfo) -> Dict[str, Finding]:
    return {f.id: f for f in diagnose_machine(machine) if f.id in MAMBA3_GPU}


def test_mamba3_gpu_requirements_per_jetson() -> None:
    """What upstream main's Mamba-3 kernels need of the GPU (compat.findings._mamba3_gpu cites the lines)."""
    assert _mamba3_gpu(_board("orin-agx-jp6", "12.6")) == {}  # sm_87, 163 KiB a block: everything fits
    xavier = _mamba3_gpu(_board("xavier-nx-jp4", "10.2"))
    assert set(xavier) == {"mamba3-gpu-arch", "mamba3-shared-memory"}
    assert "7.2" in xavier["mamba3-gpu-arch"].message and "Mamba-2" in xavier["mamba3-gpu-arch"].fix
    assert "allows 96 KiB (the table for compute capability 7.2)" in xavier["mamba3-shared-memory"].message
    thor = _mamba3_gpu(_board("thor-jp7", "13.0"))  # sm_110: Blackwell, missed by upstream's `major in (10, 12)`
    assert set(thor) == {"mamba3-blackwell-stages"} and "(10, 11, 12)" in thor["mamba3-blackwell-stages"].fix
    assert _mamba3_gpu(_board("thor-jp7", "12.8")) == {}  # sm_101 under CUDA 12.8: upstream's check covers it
    # the probe's own measurement wins over the table (a MIG slice or a driver limit could be smaller)
    small = _mamba3_gpu(_board("orin-agx-jp6", "12.6", smem_per_block=48 << 10))
    assert set(small) == {"mamba3-shared-memory"} and "48 KiB (torch.cuda)" in small["mamba3-shared-memory"].message
    # released mamba-ssm (no Mamba-3 module): nothing to say
    assert _mamba3_gpu(replace(_board("xavier-nx-jp4", "10.2"), packages=packages({"mamba-ssm": "2.2.5"}))) == {}


def test_doctor_report_is_the_document_doctor_prints() -> None:
    """The typed report holds the findings with the patches in effect; `--json` is its document, key for key."""
    machine = healthy_orin(packages=packages({"mamba-ssm": "2.2.4", "causal-conv1d": "1.6.0"}, (
        ExtensionInfo("selective_scan_cuda", "/x/s.so", True, archs=FatbinArchs(("8.7",), ("8.7",))),
        ExtensionInfo("causal_conv1d_cuda", "/x/c.so", False, error="ImportError: undefined symbol"))))
    broken = doctor_report(machine, set())
    assert broken.has_errors and [f.id for f in broken.findings] == ids(diagnose_machine(machine))
    patched = doctor_report(machine, {PATCH_SSD_DD, PATCH_CAUSAL_CONV1D_BRIDGE})
    assert "incompatible-pair" not in ids(list(patched.findings))  # an applied fix is not offered again
    with pytest.raises(dataclasses.FrozenInstanceError):
        patched.findings = ()  # type: ignore[misc]

    data = json.loads(json.dumps(document(patched)))  # plain JSON: tuples are lists, nothing needs default=str
    assert list(data) == ["schema_version", "machine", "jetson", "gpu", "cuda", "torch", "packages", "findings"]
    assert data["machine"] == {"system": "Linux", "arch": "aarch64", "cpu_count": 12,
                               "memory": dataclasses.asdict(machine.memory)}
    assert data["jetson"] == dataclasses.asdict(machine.jetson) and data["torch"] == json.loads(
        json.dumps(dataclasses.asdict(machine.torch)))
    assert data["packages"] == {
        "distributions": {"causal-conv1d": "1.6.0", "mamba-ssm": "2.2.4"},
        "extensions": [
            {"module": "selective_scan_cuda", "path": "/x/s.so", "importable": True, "error": None,
             "archs": ["8.7"], "ptx": ["8.7"]},
            {"module": "causal_conv1d_cuda", "path": "/x/c.so", "importable": False,
             "error": "ImportError: undefined symbol", "archs": None, "ptx": None}],
        "source": "importlib.metadata",
        "patches_applied": sorted([PATCH_SSD_DD, PATCH_CAUSAL_CONV1D_BRIDGE])}
    assert data["findings"] == [dataclasses.asdict(f) for f in patched.findings]
