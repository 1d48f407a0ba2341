"""How packages share a build machine: at the same time when the job budget allows, jobs by units."""

from __future__ import annotations

from pathlib import Path

import pytest

from jetson_mamba.wheelbuild.schedule import count_units, share_jobs


@pytest.mark.parametrize("sdist, units", [("causal_conv1d-1.7.0", 4), ("mamba_ssm-2.3.2.post1", 10),
                                          ("causal_conv1d-1.6.0", 4), ("mamba_ssm-2.2.5", 10)])
def test_units_are_read_from_the_real_setup_py(shared: Path, tmp_path: Path, sdist: str, units: int) -> None:
    import tarfile

    with tarfile.open(shared / "sdists" / f"{sdist}.tar.gz") as archive:
        member = archive.extractfile(f"{sdist}/setup.py")
        assert member is not None
        assert count_units(member.read().decode()) == units


def test_the_pair_on_16_cores_compiles_at_once_one_job_per_unit() -> None:
    schedule = share_jobs(16, 16, True, [("causal-conv1d", 4), ("mamba-ssm", 10)])
    assert schedule.parallel
    assert [(s.name, s.jobs, s.split_threads) for s in schedule.shares] == [("causal-conv1d", 4, 4),
                                                                           ("mamba-ssm", 10, 1)]


def test_a_tight_memory_budget_is_shared_by_units_per_job_and_never_exceeded() -> None:
    for jobs in range(2, 14):
        shares = share_jobs(jobs, 16, False, [("causal-conv1d", 4), ("mamba-ssm", 10)]).shares
        assert sum(s.jobs for s in shares) == jobs and all(s.jobs >= 1 for s in shares)
        assert all(s.jobs <= s.units for s in shares)
    assert [s.jobs for s in share_jobs(2, 2, True, [("causal-conv1d", 4), ("mamba-ssm", 10)]).shares] == [1, 1]
    assert [s.jobs for s in share_jobs(7, 8, True, [("causal-conv1d", 4), ("mamba-ssm", 10)]).shares] == [2, 5]


def test_one_job_or_one_package_builds_one_at_a_time_with_the_cores_for_its_units() -> None:
    single = share_jobs(1, 16, True, [("causal-conv1d", 4), ("mamba-ssm", 10)])
    assert not single.parallel and [s.jobs for s in single.shares] == [1, 1]
    alone = share_jobs(16, 16, True, [("causal-conv1d", 4)])
    assert not alone.parallel and (alone.shares[0].jobs, alone.shares[0].split_threads) == (4, 4)
    assert share_jobs(16, 16, False, [("causal-conv1d", 4)]).shares[0].split_threads == 1
