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


def make_wheel(directory: Path, name: str = "demo", version: str = "1.0", tag: str = "py3-none-any",
               files: Optional[Dict[str, bytes]] = None, unrecorded: Optional[Dict[str, bytes]] = None,
               dist_info_version: Optional[str] = None, metadata: Optional[bytes] = None,
               wheel_tag: Optional[str] = None, big: Optional[Tuple[str, int]] = None) -> Path:
    """A real wheel file as `pip wheel` lays it out, with RECORD hashing every member.

    The knobs make hostile variants: `unrecorded` members (in the zip, not in RECORD), a
    `dist_info_version` or `wheel_tag` that disagree, raw `metadata` bytes, and `big` = (member,
    bytes of zeros), streamed into the zip so the test itself never holds it in memory.
    """
    import base64
    import hashlib
    import zipfile

    dist_info = f"{name}-{dist_info_version or version}.dist-info"
    members = dict(files if files is not None else {f"{name}/__init__.py": b"VALUE = 1\n"})
    members[f"{dist_info}/METADATA"] = metadata if metadata is not None else \
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    members[f"{dist_info}/WHEEL"] = (f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                     f"Tag: {wheel_tag or tag}\n").encode()

    def entry(member: str, digest: bytes, size: int) -> str:
        return f"{member},sha256={base64.urlsafe_b64encode(digest).rstrip(b'=').decode()},{size}"

    lines = [entry(m, hashlib.sha256(d).digest(), len(d)) for m, d in members.items()]
    path = directory / f"{name}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for member, data in {**members, **(unrecorded or {})}.items():
            wheel.writestr(member, data)
        if big is not None:
            member, size = big
            digest = hashlib.sha256()
            block = bytes(1 << 20)
            with wheel.open(member, "w", force_zip64=True) as out:
                for _ in range(size >> 20):
                    out.write(block)
                    digest.update(block)
            lines.append(entry(member, digest.digest(), size))
        wheel.writestr(f"{dist_info}/RECORD", "\n".join(lines + [f"{dist_info}/RECORD,,"]) + "\n")
    return path
