"""The conformance runner: upstream's own test files, unmodified but for their device lines, run
against jetson-mamba's stand-ins (tests/conformance; docs in README "Conformance").

The slow tests are CI's conformance run on the CPU: every suite on the torch backend and on the
Triton backend under TRITON_INTERPRET=1 (one test per file), each on its fixed sample (suites.ci_sample:
every test function and every value of each parameter at least once; under the interpreter, sizes above
the file's interpret_caps are listed as not covered). Every case must pass or be skipped with a reason;
nothing is marked as an expected failure.
"""

from __future__ import annotations

import difflib
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from jetson_mamba.conformance import SUITES, run_suite, suite
from jetson_mamba.conformance.report import merge_shards, table, text
from jetson_mamba.conformance.runner import Family, SuiteResult, prepare, read_test_file
from jetson_mamba.conformance.suites import Case, Suite, cost, rewrite, sample, skip_reason, uncovered


@pytest.mark.parametrize("name", [s.name for s in SUITES])
def test_rewrite_changes_only_device_lines(shared: Path, name: str) -> None:
    chosen = next(s for s in SUITES if s.name == name)
    original = read_test_file(shared, chosen)
    new, edits = rewrite(original, "cpu")
    diff = list(difflib.ndiff(original.splitlines(), new.splitlines()))
    removed = [line[2:].strip() for line in diff if line.startswith("- ")]
    added = [line[2:].strip() for line in diff if line.startswith("+ ")]
    assert edits >= 1 and len(removed) == len(added) == edits
    assert {line.replace("'", '"') for line in removed} == {'device = "cuda"'}
    assert {line.replace("'", '"') for line in added} == {'device = "cpu"'}
    assert rewrite(original, "cuda") == (original, edits)


def _grid() -> List[Case]:
    """test_causal_conv1d's real parametrisation (1.7.0): 10,368 cases."""
    values = {"dim": [64, 4128], "seqlen": [1, 2, 8, 16, 32, 64, 128, 129, 130, 151, 256, 372, 512, 784, 1024, 1134,
                                            2048, 4096],
              "width": [2, 3, 4], "has_bias": [False, True], "silu_activation": [False, True],
              "itype": ["torch.float32", "torch.float16", "torch.bfloat16"], "channel_last": [False, True],
              "has_initial_states": [False, True], "return_final_states": [False, True]}
    cases = []
    for combo in itertools.product(*values.values()):
        params = dict(zip(values, combo))
        nodeid = "test.py::test_causal_conv1d[" + "-".join(map(str, combo)) + "]"
        cases.append(Case(nodeid, "test_causal_conv1d", {k: repr(v) if not isinstance(v, str) else v
                                                          for k, v in params.items()}, cost(params)))
    return cases


def test_cover_cap_leaves_out_only_big_values() -> None:
    cases = _grid()
    chosen = sample(cases, 0, 4128 * 16, cover_caps={"": 4128 * 16})
    assert len(chosen) <= 30
    missing = {v.split(": ")[1].split("=")[0] for v in uncovered(cases, chosen)}
    assert missing == {"seqlen"}  # 372 and up exist only above the cap at dim 64; every flag, dtype, width is in


def test_a_zero_cover_cap_keeps_the_cheapest_case() -> None:
    cases = _grid()
    chosen = sample(cases, 0, 0, cover_caps={"test_causal_conv1d": 0})
    assert len(chosen) == 1 and next(c for c in cases if c.nodeid in chosen).cost == min(c.cost for c in cases)


@pytest.mark.parametrize("stride", [0, 96, 1000])
def test_sample_covers_every_value_and_is_deterministic(stride: int) -> None:
    cases = _grid()
    chosen = sample(cases, stride, 4128 * 512 * 4)
    assert uncovered(cases, chosen) == []
    assert chosen == sample(list(reversed(cases)), stride, 4128 * 512 * 4)
    assert len(chosen) <= (len(cases) // stride if stride else 0) + 18  # 18 seqlen values: a cover needs 18
    without_4096 = {c.nodeid for c in cases if c.nodeid in chosen and c.params["seqlen"] != "4096"}
    assert uncovered(cases, without_4096) == ["test_causal_conv1d: seqlen=4096"]  # the check itself can fail


def test_each_suite_gets_its_own_release_of_a_package(shared: Path, tmp_path: Path) -> None:
    # one work folder for all suites (as the CLI uses): 1.7.0's file once ran against 1.6.0's Python
    paths = {name: prepare(tmp_path, suite(name), shared, "cpu", "torch", None)[1]
             for name in ("causal-conv1d-1.6.0", "causal-conv1d-1.7.0")}
    ref_170 = (paths["causal-conv1d-1.7.0"][0] / "causal_conv1d" / "causal_conv1d_interface.py").read_text()
    ref_160 = (paths["causal-conv1d-1.6.0"][0] / "causal_conv1d" / "causal_conv1d_interface.py").read_text()
    new_ref = "seq_idx does not support return_final_states"  # causal_conv1d_ref takes seq_idx from 1.7.0
    assert new_ref in ref_170 and new_ref not in ref_160


def test_skip_rules_name_their_reason() -> None:
    complex_a = {"wtype": "torch.complex64", "itype": "torch.float32"}
    for backend in ("torch", "triton"):
        assert "complex" in (skip_reason("mamba-selective-scan", "test_selective_scan", complex_a, backend, "cuda") or "")
    assert skip_reason("mamba-selective-scan", "test_selective_scan", complex_a, "cuda", "cuda") is None
    assert skip_reason("mamba-selective-scan", "test_selective_scan", {"wtype": "torch.float32"}, "torch", "cpu") is None
    for name in ("causal-conv1d-1.6.0", "causal-conv1d-1.7.0"):
        assert "race" in (skip_reason(name, "test_causal_conv1d_race_condition", {}, "cuda", "cuda") or "")
    assert skip_reason("mamba-ssd", "test_chunk_state_varlen", {}, "triton", "cuda") is None
    assert skip_reason("mamba-ssd", "test_chunk_state_varlen", {}, "triton", "cpu")
    # causal-conv1d's update tests (batch 64 x dim >= 2048) run everywhere, the interpreter included (its update
    # kernel takes 1024 channels a program there: 128 programs a case, not 32,768)
    update = ("causal-conv1d-1.7.0", "test_causal_conv1d_update_with_padding", {"dim": "2048"})
    assert all(skip_reason(*update, backend, device) is None
               for backend, device in (("triton", "cpu"), ("torch", "cpu"), ("triton", "cuda")))


def test_group_counts_are_not_sizes() -> None:
    # varBC_groups splits B and C into groups of the same total size: with it as a factor, the interpreter's
    # cover could not reach varBC_groups=2 at seqlen 128 without also taking seqlen 256 (twice the time)
    assert cost({"seqlen": 128, "varBC_groups": 2}) == cost({"seqlen": 128, "varBC_groups": 1}) == 128
    assert cost({"dim": 2048, "ngroups": 4, "dstate": 16, "has_z": True}) == 2048 * 16


def _usage_error(*args: str) -> dict:
    """`jetson-mamba conformance ARGS --json`'s error document, which must come with exit code 2."""
    proc = subprocess.run([sys.executable, "-m", "jetson_mamba", "conformance", *args, "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    return json.loads(proc.stdout)


def test_cli_names_the_known_suites_for_an_unknown_one() -> None:
    error = _usage_error("--file", "nope")
    assert "nope" in error["message"] and "causal-conv1d-1.7.0" in error["fix"]


def test_cli_refuses_a_bad_shard() -> None:
    error = _usage_error("--shard", "4/3")
    assert "4/3" in error["message"] and "--shard K/N" in error["fix"]


def _collect(shared: Path, work: Path, chosen_name: str, shard: object) -> List[dict]:
    """The plugin's records for one upstream file, collected (not run) with the CI sample and `shard`."""
    chosen = suite(chosen_name)
    test_file, paths = prepare(work, chosen, shared, "cpu", "torch", None)
    results = test_file.parent / f"results-{str(shard).replace('/', '-')}.jsonl"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(p) for p in paths] + [os.environ.get("PYTHONPATH", "")]),
               JETSON_MAMBA_BACKEND="torch",
               JETSON_MAMBA_CONFORMANCE=json.dumps({"suite": chosen.name, "backend": "torch", "device": "cpu",
                                                    "sample": "ci", "results": str(results), "shard": shard}))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider",
                           "-p", "jetson_mamba.conformance.plugin", test_file.name], cwd=test_file.parent, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return [json.loads(line) for line in results.read_text().splitlines()]


@pytest.mark.slow
def test_shards_add_up_to_the_unsharded_selection(shared: Path, tmp_path: Path) -> None:
    # causal-conv1d 1.7.0's real file (~13,000 cases, the CI sample and the not-applicable race tests)
    whole = _collect(shared, tmp_path, "causal-conv1d-1.7.0", None)
    cases = {r["case"] for r in whole if "case" in r}
    selected = {r["case"] for r in whole if r.get("selected")}
    assert len(cases) > 10000 and 50 < len(selected) < len(cases)
    seen: List[str] = []
    chosen: List[str] = []
    for k in (1, 2, 3):
        part = _collect(shared, tmp_path, "causal-conv1d-1.7.0", [k, 3])
        mine = [r["case"] for r in part if "case" in r]
        assert len(mine) > len(cases) / 5  # a stable hash splits the cases evenly
        seen += mine
        chosen += [r["case"] for r in part if r.get("selected")]
        assert [r for r in part if "uncovered" in r] == [r for r in whole if "uncovered" in r]
    assert sorted(seen) == sorted(cases) and sorted(chosen) == sorted(selected)  # a partition, same sample


def test_merged_shards_add_their_counts() -> None:
    def part(k: int, passed: int, failed: int) -> SuiteResult:
        family = Family(passed=passed, failed=failed, failures=[(f"t.py::f[{k}]", "boom")] * failed)
        return SuiteResult("causal-conv1d-1.7.0", "triton", "cuda", "full", {"f": family}, seconds=10.0 * k,
                           shard=f"{k}/3")
    alone = SuiteResult("causal-conv1d-1.7.0", "torch", "cuda", "full", {"f": Family(passed=7)})
    merged = {r.backend: r for r in merge_shards([part(1, 4, 0), part(2, 5, 1), part(3, 6, 0), alone])}
    assert (merged["triton"].total("passed"), merged["triton"].total("failed")) == (15, 1)
    assert merged["triton"].shard == "1,2,3/3" and merged["triton"].seconds == 30.0 and merged["torch"] is alone
    assert merged["triton"].error is None and not merged["triton"].ok  # one failure
    incomplete = merge_shards([part(1, 4, 0), part(3, 6, 0), part(3, 6, 0)])[0]
    assert incomplete.total("passed") == 10 and incomplete.error == "shards 2 of 3 missing" and not incomplete.ok


SIZES = ("dim", "seqlen")


# causal-conv1d 1.7.0's test file is 1.6.0's with tests added (test below): under the interpreter, the
# 1.7.0 run covers its cases; `jetson-mamba conformance --backend triton --file causal-conv1d-1.6.0` and the
# GPU run include it.
# Nothing to interpret on the CPU in four mamba files (the torch run checks they skip, each with its reason):
# ssd, layernorm-gated and generation test mamba_ssm's own Triton kernels and CUDA graphs (suites.RULES),
# determinism's tests skip themselves ("CUDA required"); each costs ~25 s of start-up.
INTERPRETED = [s for s in SUITES if s.name not in ("causal-conv1d-1.6.0", "mamba-ssd", "mamba-layernorm-gated",
                                                   "mamba-generation", "mamba-determinism")]


def test_conv_170_tests_are_160s_plus_new_ones(shared: Path) -> None:
    old, new = (read_test_file(shared, next(s for s in SUITES if s.name == n))
                for n in ("causal-conv1d-1.6.0", "causal-conv1d-1.7.0"))
    diff = list(difflib.ndiff(old.splitlines(), new.splitlines()))
    assert not [line for line in diff if line.startswith("- ")] and [line for line in diff if line.startswith("+ ")]


def _check(shared: Path, tmp_path: Path, backend: str, suites: List[Suite], least_passed: int) -> None:
    pytest.importorskip("einops")
    pytest.importorskip("triton")
    results = [run_suite(chosen, backend, "cpu", "ci", shared, tmp_path) for chosen in suites]
    print("\n" + text(results) + "\n" + table(results))
    for result in results:
        assert result.error is None, f"{result.suite}: {result.error}"
        # the interpreter's sample leaves out only big sizes (suites.Suite.interpret_caps), and says which
        missed = [v for v in result.uncovered if backend == "torch" or v.split(": ")[-1].split("=")[0] not in SIZES]
        assert missed == [], f"{result.suite}: the sample misses {missed}"
        for name, family in result.families.items():
            assert family.passed or family.skipped, f"{result.suite} {name}: nothing ran"
            # a function with cases left out of the sample ran some (never a family skipped as a whole)
            assert family.passed or not family.not_sampled, f"{result.suite} {name}: none of its sampled cases ran"
            assert all(reason for reason in family.skip_reasons), f"{result.suite} {name}: a skip without a reason"
    failed = {f"{r.suite} {name}": family.failures[:3] for r in results for name, family in r.families.items()
              if family.failed}
    assert not failed, f"upstream's tests fail on the {backend} backend: {failed}"
    assert sum(r.total("passed") for r in results) >= least_passed


@pytest.mark.slow
def test_upstream_suites_pass_on_the_torch_backend(shared: Path, tmp_path: Path) -> None:
    _check(shared, tmp_path, "torch", list(SUITES), 100)


@pytest.mark.slow
@pytest.mark.parametrize("name", [s.name for s in INTERPRETED])
def test_upstream_suites_pass_on_the_triton_backend_interpreted(shared: Path, tmp_path: Path, name: str) -> None:
    _check(shared, tmp_path, "triton", [suite(name)], 0)


@pytest.mark.slow
def test_upstream_selective_scan_passes_on_the_sequence_parallel_scan_interpreted(
        shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The chunked scan (forward in one launch, the default; backward in five) is picked by the GPU's SM
    count, which the interpreter has none of: forced here, so that upstream's selective-scan file runs on it
    too, not only on the one-pass kernels (~2 min; the whole file passed once, 16 cases, in 797 s)."""
    from jetson_mamba.ops.selective_scan import triton_chunked

    monkeypatch.setenv(triton_chunked.ENV_VAR, "1")
    monkeypatch.delenv(triton_chunked.LOOKBACK_VAR, raising=False)
    _check(shared, tmp_path, "triton", [suite("mamba-selective-scan")], 6)
