"""Pinning autotuned Triton kernels to one config (what `verify` does to mamba_ssm's SSD kernels)."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import textwrap
import types
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")

from jetson_mamba.ops.triton_utils import pin_autotuned_kernels  # noqa: E402

CHECKS = Path(__file__).resolve().parents[1] / "compat"  # ssd_dd_check.import_ssd_combined


def _configs() -> list:
    return [triton.Config({"BM": 128, "BN": 64}, num_stages=3, num_warps=8),
            triton.Config({"BM": 32, "BN": 32}, num_stages=2, num_warps=2),
            triton.Config({"BM": 64, "BN": 32}, num_stages=2, num_warps=4)]


def test_pins_the_smallest_config_also_behind_heuristics(monkeypatch: pytest.MonkeyPatch) -> None:
    import triton.language as tl

    def kernel(x, BM: tl.constexpr, BN: tl.constexpr, EVEN: tl.constexpr):
        pass

    plain = triton.autotune(_configs(), key=["x"])(triton.jit(kernel))
    wrapped = triton.heuristics({"EVEN": lambda args: True})(triton.autotune(_configs(), key=["x"])(triton.jit(kernel)))
    outside = triton.autotune(_configs(), key=["x"])(triton.jit(kernel))
    class Hostile:  # like mamba_ssm's torch.distributed stand-in on a torch without distributed
        def __getattr__(self, name: str) -> None:
            raise RuntimeError(f"no {name} here")

    for name, value in (("pkg_pin", {"proxy": Hostile()}),
                        ("pkg_pin.kernels", {"a": plain, "b": wrapped, "a_again": plain}),
                        ("pkg_pinned_not", {"c": outside})):
        module = types.ModuleType(name)
        vars(module).update(value)
        monkeypatch.setitem(sys.modules, name, module)
    assert pin_autotuned_kernels("pkg_pin") == 2
    assert [c.kwargs for c in plain.configs] == [{"BM": 32, "BN": 32}] and plain.configs[0].num_warps == 2
    assert [c.kwargs for c in wrapped.fn.configs] == [{"BM": 32, "BN": 32}]
    assert len(outside.configs) == 3  # another package's kernels are left alone
    assert pin_autotuned_kernels("pkg_pin") == 0  # already one config each


def test_pins_the_real_mamba_ssm_ssd_kernels(shared: Path, tmp_path: Path) -> None:
    """mamba-ssm 2.2.4's Triton modules, imported from its sdist (no compiled parts needed)."""
    sdist = shared / "sdists" / "mamba_ssm-2.2.4.tar.gz"
    if not sdist.is_file():
        pytest.skip("no mamba_ssm-2.2.4 sdist in ../shared/sdists")
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(tmp_path)
    package = next(tmp_path.glob("*/mamba_ssm"))
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(CHECKS)!r})
        from ssd_dd_check import import_ssd_combined
        import_ssd_combined({str(package)!r})
        from jetson_mamba.ops.triton_utils import pin_autotuned_kernels
        print(pin_autotuned_kernels("mamba_ssm"))
        from triton.runtime.autotuner import Autotuner
        left = [v for m in list(sys.modules.values()) if m and m.__name__.startswith("mamba_ssm")
                for v in vars(m).values() if isinstance(v, Autotuner) and len(v.configs) != 1]
        print(len(left))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    pinned, left = (int(v) for v in done.stdout.split())
    assert pinned >= 15 and left == 0, done.stdout
