"""The package as it would be published: sdist and wheel build, pass `twine check --strict`, and carry
the license, the metadata and only the package (no tests, no benchmarks)."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from email.parser import HeaderParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_sdist_and_wheel_pass_twine_and_carry_license_and_metadata(tmp_path: Path) -> None:
    built = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    wheel, = tmp_path.glob("jetson_mamba-*.whl")
    sdist, = tmp_path.glob("jetson_mamba-*.tar.gz")
    check = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata_name, = (n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = HeaderParser().parsestr(archive.read(metadata_name).decode())
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names)
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/"))]
    assert "License :: OSI Approved :: Apache Software License" in metadata.get_all("Classifier")
    assert metadata["Author"] or metadata["Author-email"]
    extras = set(metadata.get_all("Provides-Extra"))
    assert "serve" not in extras, "serve uses the standard library only; the extra installed an unused server"
    requires = metadata.get_all("Requires-Dist")
    assert not [r for r in requires if r.split(";")[0].strip().startswith(("torch", "torchvision", "numpy"))], requires
    with tarfile.open(sdist) as archive:
        assert any(member.endswith("/LICENSE") for member in archive.getnames())
