"""Helpers for the archive tests: the CLI as a user runs it, environment state to compare."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

# pip without this machine's configured mirrors: what it installs can only come from our index.
CLEAN_PIP = {"PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": "", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def cli(*args: str, env: Optional[Dict[str, str]] = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m jetson_mamba ARGS` as a user runs it."""
    return subprocess.run([sys.executable, "-m", "jetson_mamba", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def cli_json(*args: str, env: Optional[Dict[str, str]] = None) -> Tuple[int, Dict[str, Any]]:
    done = cli(*args, "--json", env=env)
    try:
        return done.returncode, json.loads(done.stdout)
    except ValueError:
        raise AssertionError(f"no JSON from {args}: {done.stdout}\n{done.stderr}") from None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def dist_state(python: Path, names: Tuple[str, ...] = ("mamba_ssm", "causal_conv1d")) -> Dict[str, Any]:
    """Version and sha256 of every file of each distribution in `python`'s environment, plus the patch record."""
    script = r"""
import hashlib, json, os, sys, sysconfig
import importlib.metadata as md
out = {}
for name in sys.argv[1:]:
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        out[name] = None
        continue
    files = {}
    for f in dist.files or []:
        path = dist.locate_file(f)
        if os.path.isfile(path) and "__pycache__" not in str(f):
            files[str(f)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    out[name] = {"version": dist.version, "files": files}
record = os.path.join(sysconfig.get_paths()["purelib"], ".jetson-mamba-patches")
out["patch-record"] = sorted(
    (os.path.relpath(os.path.join(d, f), record), hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest())
    for d, _, fs in os.walk(record) for f in fs)
print(json.dumps(out))
"""
    done = subprocess.run([str(python), "-c", script, *names], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)
