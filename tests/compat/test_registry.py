"""The patch engine on a small synthetic package: plan, apply, idempotence, revert, refusals."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Dict

import pytest

from jetson_mamba.compat import registry
from jetson_mamba.compat.registry import Patch, PatchTarget, Replace
from jetson_mamba.errors import PatchError, PermissionDeniedError

UPSTREAM = "import os\n\ndef f():\n    return old_call(1, 2)\n\ndef g():\n    return old_call(3, 4)\n"

PATCH = Patch(
    name="demo-bridge",
    distribution="demo",
    summary="route old_call through the bridge",
    files=("demo/mod.py",),
    transform=registry.replacing(
        "demo-bridge",
        Replace(r"^import os\n", f"import os\n# {registry.marker('demo-bridge')}\nfrom bridge import new_call\n"),
        Replace(r"old_call\(", "new_call(", count=2),
    ),
)


def _target(root: Path, hashes: Dict[str, str]) -> PatchTarget:
    return PatchTarget("demo", "1.0", root, hashes)


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "mod.py").write_text(UPSTREAM)
    return tmp_path


def test_apply_is_idempotent_and_revert_is_byte_exact(site: Path) -> None:
    target = _target(site, {"demo/mod.py": registry.sha256(UPSTREAM.encode())})
    plan = registry.patch_plan([target], [PATCH], registry.INSTALLED)
    assert not plan.clean and [s.status for s in plan.statuses] == [registry.NEEDED]
    assert "+from bridge import new_call" in registry.unified_diff(plan.changes[0])
    registry.apply_plan(plan)
    patched = (site / "demo" / "mod.py").read_text()
    assert patched.count("new_call(") == 2 and "old_call" not in patched
    assert registry.applied_patches(site) == {"demo/mod.py": ["demo-bridge"]}

    again = registry.patch_plan([target], [PATCH], registry.INSTALLED)
    assert again.clean and not again.changes and again.statuses[0].status == registry.APPLIED

    reverted = registry.revert(site)
    assert [r.action for r in reverted] == ["restored"]
    assert (site / "demo" / "mod.py").read_bytes() == UPSTREAM.encode()
    assert not (site / registry.RECORD_DIR).exists()
    assert registry.revert(site) == []


def test_file_mode_is_kept(site: Path) -> None:
    path = site / "demo" / "mod.py"
    os.chmod(path, 0o640)
    registry.apply_plan(registry.patch_plan([_target(site, {})], [PATCH], registry.TREE))
    assert path.stat().st_mode & 0o777 == 0o640
    registry.revert(site)
    assert path.stat().st_mode & 0o777 == 0o640


def test_unknown_content_is_refused_and_nothing_changes(site: Path) -> None:
    path = site / "demo" / "mod.py"
    path.write_text(UPSTREAM + "# edited by hand\n")
    target = _target(site, {"demo/mod.py": registry.sha256(UPSTREAM.encode())})
    with pytest.raises(PatchError, match="neither the file demo 1.0 installed") as info:
        registry.patch_plan([target], [PATCH], registry.INSTALLED)
    assert "force-reinstall" in (info.value.fix or "")
    assert path.read_text().endswith("# edited by hand\n")


def test_half_recognised_file_is_refused(site: Path) -> None:
    (site / "demo" / "mod.py").write_text(UPSTREAM.replace("return old_call(3, 4)", "return 0"))
    with pytest.raises(PatchError, match="does not look like any version"):
        registry.patch_plan([_target(site, {})], [PATCH], registry.TREE)


def test_not_needed_when_the_pattern_is_absent(site: Path) -> None:
    (site / "demo" / "mod.py").write_text("x = 1\n")
    plan = registry.patch_plan([_target(site, {})], [PATCH], registry.TREE)
    assert plan.clean and plan.statuses[0].status == registry.NOT_NEEDED and not plan.changes


def test_changed_after_patching_blocks_revert(site: Path) -> None:
    registry.apply_plan(registry.patch_plan([_target(site, {})], [PATCH], registry.TREE))
    path = site / "demo" / "mod.py"
    path.write_text(path.read_text() + "# later edit\n")
    with pytest.raises(PatchError, match="changed after jetson-mamba patched it"):
        registry.revert(site)
    assert path.read_text().endswith("# later edit\n")


def test_reinstalled_upstream_file_is_left_alone_by_revert(site: Path) -> None:
    registry.apply_plan(registry.patch_plan([_target(site, {})], [PATCH], registry.TREE))
    (site / "demo" / "mod.py").write_text(UPSTREAM)  # what pip --force-reinstall does
    assert [r.action for r in registry.revert(site)] == ["already-upstream"]
    assert (site / "demo" / "mod.py").read_text() == UPSTREAM


def test_upgraded_package_is_left_alone_by_revert_and_patched_afresh(site: Path) -> None:
    registry.apply_plan(registry.patch_plan([_target(site, {})], [PATCH], registry.INSTALLED))
    upgraded = UPSTREAM.replace("(3, 4)", "(3, 5)")
    (site / "demo" / "mod.py").write_text(upgraded)  # pip installed a new version over it
    info = site / "demo-1.1.dist-info"
    info.mkdir()
    digest = base64.urlsafe_b64encode(hashlib.sha256(upgraded.encode()).digest()).rstrip(b"=").decode()
    (info / "RECORD").write_text(f"demo/mod.py,sha256={digest},{len(upgraded)}\n")
    target = _target(site, registry.installed_hashes(site, "Demo"))
    assert target.upstream_sha256 == {"demo/mod.py": registry.sha256(upgraded.encode())}
    assert registry.patch_plan([target], [PATCH], registry.INSTALLED).changes[0].original == upgraded.encode()
    assert [r.action for r in registry.revert(site)] == ["already-upstream"]
    assert (site / "demo" / "mod.py").read_text() == upgraded and registry.applied_patches(site) == {}


def test_read_only_target_gives_permission_error_and_changes_nothing(site: Path, monkeypatch) -> None:
    plan = registry.patch_plan([_target(site, {})], [PATCH], registry.TREE)
    if os.geteuid() == 0:  # root may write anywhere: emulate a read-only site-packages
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, m: False if str(p).startswith(str(site)) else real(p, m))
    else:
        os.chmod(site / "demo", 0o555)
    try:
        with pytest.raises(PermissionDeniedError) as info:
            registry.apply_plan(plan)
    finally:
        os.chmod(site / "demo", 0o755)
    assert "not writable" in info.value.message and "sudo" in (info.value.fix or "")
    assert (site / "demo" / "mod.py").read_text() == UPSTREAM
    assert not (site / registry.RECORD_DIR).exists()


def test_record_hash_conversion() -> None:
    assert registry.record_hash_to_hex("sha256=" + "A" * 43) == "00" * 32
    assert registry.record_hash_to_hex("md5=abc") is None


def test_file_changed_after_planning_is_refused_and_nothing_is_written(site: Path) -> None:
    """Planning reads the files, writing happens later: a change in between (pip, another run) refuses."""
    target = _target(site, {"demo/mod.py": registry.sha256(UPSTREAM.encode())})
    plan = registry.patch_plan([target], [PATCH], registry.INSTALLED)
    meddled = UPSTREAM + "# edited meanwhile\n"
    (site / "demo" / "mod.py").write_text(meddled)
    with pytest.raises(PatchError, match="changed while jetson-mamba was planning"):
        registry.apply_plan(plan)
    assert (site / "demo" / "mod.py").read_text() == meddled
    assert not (site / registry.RECORD_DIR).exists()


def test_two_runs_planned_together_patch_once(site: Path) -> None:
    """Two runs that planned the same change: the second finds it done and writes nothing."""
    target = _target(site, {"demo/mod.py": registry.sha256(UPSTREAM.encode())})
    first = registry.patch_plan([target], [PATCH], registry.INSTALLED)
    second = registry.patch_plan([target], [PATCH], registry.INSTALLED)
    assert [c.path for c in registry.apply_plan(first)] == ["demo/mod.py"]
    patched = (site / "demo" / "mod.py").read_bytes()
    record = (site / registry.RECORD_DIR / registry.RECORD_FILE).read_bytes()
    assert registry.apply_plan(second) == []
    assert (site / "demo" / "mod.py").read_bytes() == patched
    assert (site / registry.RECORD_DIR / registry.RECORD_FILE).read_bytes() == record
    assert [r.action for r in registry.revert(site)] == ["restored"]
    assert (site / "demo" / "mod.py").read_bytes() == UPSTREAM.encode()


def test_a_run_waits_for_the_one_holding_the_lock(site: Path) -> None:
    """apply blocks while another process holds the directory lock, then proceeds."""
    import fcntl
    import threading

    target = _target(site, {"demo/mod.py": registry.sha256(UPSTREAM.encode())})
    plan = registry.patch_plan([target], [PATCH], registry.INSTALLED)
    fd = os.open(str(site), os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    worker = threading.Thread(target=registry.apply_plan, args=(plan,))
    try:
        worker.start()
        worker.join(0.5)
        assert worker.is_alive() and (site / "demo" / "mod.py").read_text() == UPSTREAM
    finally:
        os.close(fd)
    worker.join(10)
    assert not worker.is_alive() and "new_call" in (site / "demo" / "mod.py").read_text()
    assert not list(site.glob("*.lock")) and not list((site / registry.RECORD_DIR).glob("*lock*"))
