"""Selection over hand-built machines and the real H200 wheels: one right reason per rejected wheel."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, List, Optional

import pytest
from packaging.version import Version

from jetson_mamba.archive import Manifest, WheelRecord, open_directory
from jetson_mamba.archive.install import missing_dependencies
from jetson_mamba.archive.select import Selection, Target, no_match_error, parse_requests, select_wheels
from jetson_mamba.archive.wheel import _label_facts
from jetson_mamba.errors import UsageError
from jetson_mamba.probe.model import (
    CudaInfo,
    GpuInfo,
    JetsonInfo,
    MachineInfo,
    PackageInfo,
    PackagesInfo,
    TorchInfo,
)

CONV = "causal_conv1d-1.6.0-cp312-cp312-linux_x86_64.whl"
MAMBA = "mamba_ssm-2.2.5-cp312-cp312-linux_x86_64.whl"


def machine(python: str = "3.12.3", arch: Optional[str] = "9.0", torch: Optional[str] = "2.11.0+cu130",
            torch_cuda: Optional[str] = "13.0", abi: bool = True, cpu: str = "x86_64",
            installed: Dict[str, str] = {"einops": "0.8.1", "transformers": "5.17.0"}) -> MachineInfo:  # noqa: B006
    jetson = JetsonInfo(model="Orin", soc="tegra234", l4t="36.4.0", jetpack="6.1", cuda_arch="8.7") \
        if cpu == "aarch64" else None
    return MachineInfo(
        system="Linux", machine=cpu, cpu_count=16, memory=None, jetson=jetson,
        gpu=GpuInfo(name="NVIDIA H200" if arch == "9.0" else "Orin", arch=arch, source="test") if arch else None,
        cuda=CudaInfo(home=None, nvcc=None, version="13.0", source="test"),
        torch=TorchInfo(python="/usr/bin/python3", python_version=python, version=torch, cuda=torch_cuda,
                        cxx11_abi=abi),
        packages=PackagesInfo(distributions={n: PackageInfo(n, v) for n, v in installed.items()}, extensions=()),
    )


def target(**kwargs: object) -> Target:
    info = machine(**kwargs)  # type: ignore[arg-type]
    return Target.from_machine(info, platforms=[f"manylinux_2_39_{info.machine}", f"linux_{info.machine}"])


@pytest.fixture(scope="module")
def h200(wheelhouse: Path) -> Manifest:
    return open_directory(wheelhouse)


def reasons(selection: Selection) -> Dict[str, str]:
    return {r.filename: r.check for r in selection.rejected}


def test_the_lab_machine_gets_both_wheels(h200: Manifest) -> None:
    selection = select_wheels(target(), h200)
    assert [c.record.filename for c in selection.chosen] == [CONV, MAMBA]  # dependency order
    assert selection.rejected == [] and selection.missing == []
    assert all("sm_90 machine code" in " ".join(c.notes) for c in selection.chosen)
    assert all("unknown" in c.notes[0] for c in selection.chosen)  # torch version: no label, said so


@pytest.mark.parametrize("kwargs, check, expected, actual", [
    ({"python": "3.11.7"}, "python", "cp311", "cp312-cp312"),
    ({"python": "3.11.7", "cpu": "aarch64", "arch": "8.7"}, "python", "cp311", "cp312"),  # python comes first
    ({"cpu": "aarch64", "arch": "8.7"}, "platform", "aarch64", "linux_x86_64"),
    ({"torch": None, "torch_cuda": None}, "torch", "installed", "no importable torch"),
    ({"abi": False}, "torch", "C++11 ABI=False", "C++11 ABI=True"),
    ({"torch_cuda": "12.6", "torch": "2.11.0+cu126"}, "cuda", "CUDA 12", "CUDA 13"),
    ({"torch_cuda": None, "torch": "2.11.0+cpu"}, "cuda", "CUDA 13 build of torch", "without CUDA"),
    ({"arch": "8.7"}, "gpu-arch", "sm_87", "sm_90"),
    ({"arch": "10.0"}, "gpu-arch", "sm_100", "sm_90"),
    ({"arch": None}, "gpu-arch", "a CUDA GPU", "no GPU was found"),
])
def test_each_wheel_gets_exactly_the_first_failing_reason(h200: Manifest, kwargs: Dict[str, object], check: str,
                                                          expected: str, actual: str) -> None:
    selection = select_wheels(target(**kwargs), h200)
    assert selection.chosen == [] and selection.missing == ["causal-conv1d", "mamba-ssm"]
    assert len(selection.rejected) == 2
    for rejection in selection.rejected:
        assert rejection.check == check
        assert expected in rejection.expected and actual in rejection.actual, rejection


def test_sm_90_code_runs_on_a_later_minor_but_not_a_new_major(h200: Manifest) -> None:
    assert len(select_wheels(target(arch="9.0"), h200).chosen) == 2
    assert reasons(select_wheels(target(arch="12.0"), h200)) == {CONV: "gpu-arch", MAMBA: "gpu-arch"}


def test_hash_mismatch_and_missing_file(h200: Manifest, tmp_path: Path) -> None:
    digests = {CONV: "0" * 64, MAMBA: None}
    selection = select_wheels(target(), h200, digests)
    assert reasons(selection) == {CONV: "hash", MAMBA: "hash"}
    by_name = {r.filename: r for r in selection.rejected}
    assert by_name[CONV].actual == "sha256 " + "0" * 64 and by_name[MAMBA].actual == "file missing"
    error = no_match_error(selection, target(), str(tmp_path))
    assert f"`jetson-mamba archive verify --archive {tmp_path}`" in str(error.fix)  # the command that runs
    remote = no_match_error(selection, target(), "http://127.0.0.1:8080/simple/")
    assert "`jetson-mamba archive verify --archive DIR` on the machine that serves it" in str(remote.fix)


def _labelled(record: WheelRecord, torch: str, label: str) -> WheelRecord:
    version = f"{record.version}+{label}"
    filename = record.filename.replace(f"-{record.version}-", f"-{version}-")
    return dataclasses.replace(record, version=version, filename=filename, torch=dict(record.torch, version=torch))


def test_torch_version_from_label_is_checked_and_the_best_version_wins(h200: Manifest) -> None:
    conv = h200.record(CONV)
    assert conv is not None
    old = _labelled(conv, "2.10", "cu130.torch2.10.sm90")
    good = _labelled(conv, "2.11", "cu130.torch2.11.sm90")
    newer = dataclasses.replace(good, version="1.6.1+cu130.torch2.11.sm90",
                                filename=good.filename.replace("1.6.0+", "1.6.1+"))
    selection = select_wheels(target(), Manifest(wheels=[old, good, newer]))
    assert [c.record.filename for c in selection.chosen] == [newer.filename]
    assert {r.filename: (r.check, r.actual) for r in selection.rejected} == {
        old.filename: ("torch", "built against torch 2.10"),
        good.filename: ("preference", f"{newer.filename} is preferred"),
    }
    assert not any("unknown" in note for note in selection.chosen[0].notes)


def test_upstream_release_label_of_another_torch_minor_is_rejected(h200: Manifest) -> None:
    """An upstream release wheel (`+cu13torch2.9cxx11abiTRUE`) is not taken for torch 2.11."""
    conv = h200.record(CONV)
    assert conv is not None
    label = "cu13torch2.9cxx11abiTRUE"
    facts = _label_facts(Version(f"{conv.version}+{label}"))
    other = dataclasses.replace(_labelled(conv, facts["torch"], label),
                                torch=dict(conv.torch, version=facts["torch"], cxx11_abi=facts["cxx11_abi"]))
    selection = select_wheels(target(), Manifest(wheels=[other]))
    assert not selection.chosen
    assert [(r.check, r.actual) for r in selection.rejected] == [("torch", "built against torch 2.9")]


def test_requested_specs_filter_and_explain(h200: Manifest) -> None:
    selection = select_wheels(target(), h200, requests=parse_requests(["mamba-ssm==2.2.4"]))
    assert selection.chosen == [] and selection.missing == ["mamba-ssm"]
    assert [(r.filename, r.check, r.expected) for r in selection.rejected] == [(MAMBA, "requested", "mamba-ssm==2.2.4")]
    only = select_wheels(target(), h200, requests=parse_requests(["causal-conv1d"]))
    assert [c.record.name for c in only.chosen] == ["causal-conv1d"] and only.rejected == []
    with pytest.raises(UsageError):
        parse_requests(["mamba ssm ==="])


def test_nothing_fits_error_lists_every_rejection_and_the_build_fix(h200: Manifest) -> None:
    orin = target(cpu="aarch64", arch="8.7", python="3.10.12")
    selection = select_wheels(orin, h200)
    error = no_match_error(selection, orin, "/srv/wheels")
    lines: List[str] = error.message.splitlines()
    assert len([line for line in lines if line.startswith("  - ")]) == 2
    assert "jetson-mamba build causal-conv1d==1.6.0 mamba-ssm==2.2.5 --arch 8.7" in str(error.fix)


def test_missing_runtime_dependencies_never_include_torch(h200: Manifest) -> None:
    selection = select_wheels(target(), h200)
    bare = machine(installed={})
    assert missing_dependencies(selection, bare) == ["einops", "transformers", "triton"]
    assert missing_dependencies(selection, machine()) == ["triton"]


def test_exact_machine_code_beats_compatible_code_and_pure_python(h200: Manifest, pure_wheels: Dict[str, Path]) -> None:
    from jetson_mamba.archive.wheel import read_wheel

    conv = h200.record(CONV)
    assert conv is not None
    pure = WheelRecord(**read_wheel(pure_wheels["causal_conv1d-1.6.0"]))
    sm80 = dataclasses.replace(_labelled(conv, "2.11", "cu130.torch2.11.sm80"),
                               gpu_archs={"sass": ["8.0"], "ptx": [], "binaries": {}})
    sm87 = dataclasses.replace(_labelled(conv, "2.11", "cu130.torch2.11.sm87"),
                               gpu_archs={"sass": ["8.7"], "ptx": [], "binaries": {}})
    orin = target(arch="8.7")
    for wheels in ([pure, sm87, sm80], [sm80, pure, sm87]):
        chosen = select_wheels(orin, Manifest(wheels=wheels)).chosen
        assert [c.record.filename for c in chosen] == [sm87.filename]
    ampere = select_wheels(orin, Manifest(wheels=[pure, sm80])).chosen[0]
    assert ampere.record is sm80 and "sm_80 machine code" in " ".join(ampere.notes)


@pytest.mark.parametrize("platform, check, expected, actual", [
    ("manylinux_2_34_aarch64", "platform", "glibc >= 2.34 (manylinux_2_34_aarch64)", "glibc 2.31"),
    ("manylinux_2_28_aarch64", None, None, None),
    ("manylinux2014_aarch64", None, None, None),
    ("manylinux_2_34_x86_64", "platform", "a aarch64 platform tag", "manylinux_2_34_x86_64"),
])
def test_a_wheel_for_a_newer_glibc_says_which_glibc(h200: Manifest, platform: str, check: Optional[str],
                                                    expected: Optional[str], actual: Optional[str]) -> None:
    """JetPack 5 has glibc 2.31: an aarch64 wheel for glibc 2.34 is rejected for its glibc, not its CPU."""
    conv = h200.record(CONV)
    assert conv is not None
    record = dataclasses.replace(conv, filename=CONV.replace("linux_x86_64", platform), gpu_archs=None,
                                 cuda={}, torch={}, tags=[f"cp38-cp38-{platform}"], requires_python=None)
    jetpack5 = Target.from_machine(machine(python="3.8.10", cpu="aarch64", arch="8.7"),
                                   platforms=[f"manylinux_2_{m}_aarch64" for m in range(31, 16, -1)] +
                                   ["manylinux2014_aarch64", "linux_aarch64"])
    assert jetpack5.glibc == (2, 31)
    selection = select_wheels(jetpack5, Manifest(wheels=[record]))
    if check is None:
        assert [c.record.filename for c in selection.chosen] == [record.filename] and selection.rejected == []
    else:
        assert [(r.check, r.expected.startswith(expected), r.actual) for r in selection.rejected] == [
            (check, True, actual)], selection.rejected
