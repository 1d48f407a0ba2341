"""Archives of real wheels, a real index server, and the CLI run as a user runs it.

The pure-Python wheels of the real upstream sdists come from the session fixture `upstream_wheels`
(`tests/conftest.py`, cached by the sdists' digests), so CI builds them once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

import pytest
from archive_helpers import free_port

from jetson_mamba.archive import add_wheel


@pytest.fixture(scope="session")
def pure_wheels(upstream_wheels: Dict[Tuple[str, str], Path]) -> Dict[str, Path]:
    """"mamba_ssm-2.2.5" etc. -> the pure-Python wheel of the real sdist."""
    return {f"{name}-{version}": path for (name, version), path in upstream_wheels.items()}


@pytest.fixture(scope="session")
def pure_archive(tmp_path_factory: pytest.TempPathFactory, pure_wheels: Dict[str, Path]) -> Path:
    """An archive (read-only for tests) with causal-conv1d 1.6.0 and mamba-ssm 2.2.5."""
    archive = tmp_path_factory.mktemp("pure-archive")
    for key in ("causal_conv1d-1.6.0", "mamba_ssm-2.2.5"):
        add_wheel(pure_wheels[key], archive, provenance={"source": f"../shared/sdists/{key}.tar.gz"})
    return archive


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[Path], Tuple[str, Path]]]:
    """Start `jetson-mamba serve DIR` on a free 127.0.0.1 port; returns (index URL, its request log file)."""
    servers: List[Tuple[subprocess.Popen, Any]] = []

    def start(archive: Path) -> Tuple[str, Path]:
        port = free_port()
        log_path = tmp_path / f"serve-{port}.log"
        log = open(log_path, "w+")
        process = subprocess.Popen([sys.executable, "-m", "jetson_mamba", "serve", str(archive), "--host", "127.0.0.1",
                                    "--port", str(port)], stdout=subprocess.DEVNULL, stderr=log,
                                   env={**os.environ, "JETSON_MAMBA_SERVE_LOG": "1"})
        servers.append((process, log))
        url = f"http://127.0.0.1:{port}/simple/"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise AssertionError(f"serve did not start: {log.read()}") from None
                time.sleep(0.2)
        return url, log_path

    yield start
    for process, log in servers:
        process.terminate()
        process.wait(timeout=30)
        log.close()
