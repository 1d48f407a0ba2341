"""jetson-mamba on aarch64 Python with JetPack's glibc: Debian arm64 roots under qemu (scripts/arm64-proxy.sh).

bullseye has glibc 2.31 (JetPack 5's Ubuntu 20.04) and Python 3.9, bookworm glibc 2.36 (JetPack 6 has 2.35)
and Python 3.11; their venvs hold the aarch64 CPU builds of torch from the package index. CI runs a sample
(conftest.SAMPLE: `select` and `patch` on bullseye); JETSON_MAMBA_ARM64=1 runs every scenario on both roots.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Dict

import pytest

from jetson_mamba.probe.jetson import read_jetson

Arm64 = Callable[[str, str], Dict[str, Any]]
ROOTS = Path(__file__).resolve().parents[1] / "probe" / "roots"
FACTS = {"bullseye": ("3.9.", "glibc 2.31", "2.8"), "bookworm": ("3.11.", "glibc 2.36", "2.9")}
FP32 = 1e-4  # portable kernels in fp32 against the unfused paths (as in tests/compat)

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("suite", ["bullseye", "bookworm"])]


def _assert_root(report: Dict[str, Any], suite: str) -> None:
    python, glibc, torch = FACTS[suite]
    facts = report["facts"]
    assert facts["machine"] == "aarch64" and facts["python"].startswith(python) and facts["glibc"] == glibc, facts
    assert facts["torch"].startswith(torch), facts


def test_doctor_reads_the_jetson_roots_on_aarch64(arm64: Arm64, suite: str) -> None:
    report = arm64(suite, "doctor")
    _assert_root(report, suite)
    assert sorted(report["roots"]) == sorted(p.name for p in ROOTS.iterdir())
    for name, result in report["roots"].items():
        assert result["rc"] in (0, 1) and isinstance(result["output"], dict), result  # 1: an error finding
        doctor = result["output"]
        expected = read_jetson(ROOTS / name)  # the same files read by x86_64 Python (pinned in tests/probe)
        assert doctor["jetson"] == (dataclasses.asdict(expected) if expected else None), name
        assert doctor["torch"]["python_version"] == report["facts"]["python"]
        assert doctor["torch"]["version"] == report["facts"]["torch"] and doctor["torch"]["cuda"] is None
    orin = report["roots"]["orin-nx-jp5"]["output"]
    assert (orin["jetson"]["jetpack"], orin["gpu"]["arch"], orin["machine"]["arch"]) == ("5.1.2", "8.7", "aarch64")
    plain = report["plain"]
    assert plain["rc"] in (0, 1) and plain["output"]["jetson"] is None and plain["output"]["machine"]["arch"] == "aarch64"


# filename stem -> (bullseye, bookworm): "chosen" or the check that rejects it, and a word its reason must hold
SELECTION = {
    "cp39-ml217": (("chosen", ""), ("python", "cp39-cp39")),
    "cp311-ml217": (("python", "cp311-cp311"), ("chosen", "")),
    "ml228": (("chosen", ""), ("chosen", "")),
    "ml234": (("platform", "glibc 2.31"), ("chosen", "")),  # like tilelang's glibc >= 2.34 aarch64 wheels
    "x86-ml217": (("platform", "x86_64"), ("platform", "x86_64")),
    "cp38-jetpack5": (("python", "cp38-cp38"), ("python", "cp38-cp38")),
    "needs-py310": (("python", "Requires-Python >=3.10"), ("chosen", "")),
    "label-cuda": (("cuda", "without CUDA"), ("cuda", "without CUDA")),
    "label-old-torch": (("torch", "built against torch 2.5"), ("torch", "built against torch 2.5")),
    "label-this-torch": (("chosen", ""), ("chosen", "")),
}


def test_archive_selection_with_aarch64_wheel_names(arm64: Arm64, suite: str) -> None:
    report = arm64(suite, "select")
    _assert_root(report, suite)
    assert report["added"]["rc"] == 0, report["added"]
    glibc = report["facts"]["glibc"].split()[1].replace(".", "_")
    assert f"manylinux_{glibc}_aarch64" in report["platform_tags"]  # the newest manylinux tag is the root's glibc
    everything = report["dry_run_all"]
    assert everything["rc"] == 8, everything  # some distributions have no fitting wheel: no-matching-wheel
    selection = everything["output"]["selection"]
    verdicts = {c["name"]: ("chosen", "") for c in selection["chosen"]}
    verdicts.update({r["name"]: (r["check"], f"expected {r['expected']}, actual {r['actual']}")
                     for r in selection["rejected"]})
    column = 0 if suite == "bullseye" else 1
    assert sorted(verdicts) == sorted(SELECTION)
    for name, expected in SELECTION.items():
        check, word = expected[column]
        assert verdicts[name][0] == check and word in verdicts[name][1], (name, verdicts[name])
    assert sorted(selection["missing"]) == sorted(n for n, e in SELECTION.items() if e[column][0] != "chosen")
    one = report["dry_run_one"]
    assert one["rc"] == 0 and [c["name"] for c in one["output"]["selection"]["chosen"]] == ["ml228"], one


@pytest.mark.parametrize("pair", ["2.2.4+1.6.0", "2.3.2.post1+1.7.0", "main+1.7.0"])
def test_patch_import_modules_and_byte_exact_revert(arm64: Arm64, suite: str, pair: str) -> None:
    report = arm64(suite, "patch")
    _assert_root(report, suite)
    steps = report["pairs"][pair]
    if pair.startswith("main") and suite == "bullseye":  # main declares requires-python >= 3.10
        assert steps["install"]["rc"] != 0 and "requires a different Python" in steps["install"]["stderr"], steps
        return
    assert steps["install"]["rc"] == 0, steps["install"]
    assert steps["check_before"]["rc"] == 1 and not steps["check_before"]["output"]["clean"], steps["check_before"]
    assert steps["patch"]["rc"] == 0 and steps["patch"]["output"]["written"], steps["patch"]
    assert steps["check_after"]["rc"] == 0 and steps["check_after"]["output"]["clean"], steps["check_after"]
    modules = steps["modules"]["output"]
    assert steps["modules"]["rc"] == 0 and isinstance(modules, dict), steps["modules"]
    assert modules["import"]["ok"], modules["import"]
    assert modules["modules"]["ok"], modules["modules"]
    assert max(modules["modules"]["errors"].values()) < FP32, modules["modules"]
    restored = steps["revert"]["output"]["files"]
    assert steps["revert"]["rc"] == 0 and {f["action"] for f in restored} == {"restored"}
    assert len(restored) == len(steps["patch"]["output"]["written"])
    digests = steps["sha256"]
    assert digests["patched"] != digests["upstream"]
    assert digests["reverted"] == digests["upstream"], digests["differing_after_revert"]


def test_verify_quick_and_mamba_yolo_on_the_torch_backend(arm64: Arm64, suite: str) -> None:
    report = arm64(suite, "verify")
    _assert_root(report, suite)
    verify = report["verify"]
    assert verify["rc"] == 0 and verify["output"]["ok"], verify
    summary = verify["output"]["summary"]
    assert summary["failed"] == 0 and summary["passed"] >= 40, summary
    yolo = report["yolo"]
    assert "error" not in yolo, yolo
    # the Detect head's three levels (strides 8, 16, 32): 64 box-distribution + 80 class channels
    assert yolo["shapes"] == [[1, 144, 8, 8], [1, 144, 4, 4], [1, 144, 2, 2]] and yolo["finite"], yolo
