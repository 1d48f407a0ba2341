"""Re-running test files in a fresh process under Triton's interpreter (TRITON_INTERPRET is read when
triton is imported, so the outer pytest cannot switch it on): our Triton kernels on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def pytest_interpreted(*args: str, cwd: Path) -> str:
    """`pytest -q -x *args` with TRITON_INTERPRET=1 on the Triton backend; asserts that it passed and
    returns its output (callers check how many cases ran)."""
    env = dict(os.environ, TRITON_INTERPRET="1", JETSON_MAMBA_BACKEND="triton", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=str(cwd))
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    return proc.stdout
