"""What a fleet device runs to use a served archive: pip commands and a `pip.conf`, one per GPU arch (pure).

pip refuses plain http from a host that is not loopback ("not a trusted or secure host") unless
told `--trusted-host HOST`, so every command and `pip.conf` here names it. Plain pip cannot tell GPUs
apart, so each arch gets its own index (`/sm87/simple/`, see `index`); `/simple/` lists every wheel.
The wheels declare `torch` as a dependency: commands pass `--no-deps` so pip never resolves it (a
device keeps its own torch), and pin each project to the archive's newest version (`==2.2.5` also
matches `2.2.5+cu126.sm87`), so with `--extra-index-url` a newer sdist elsewhere cannot win.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from packaging.utils import parse_wheel_filename
from packaging.version import Version

from jetson_mamba.probe.jetson import JETSON_ARCH_FAMILY

# arch -> the Jetson GPUs that have it, for the reader ("8.7": "Jetson Orin").
_JETSON = {arch: f"Jetson {family}" for arch, family in JETSON_ARCH_FAMILY.items()}


def url_host(host: str) -> str:
    """An IPv6 address in a URL (and in pip's --trusted-host) needs brackets: [::1]."""
    return f"[{host}]" if ":" in host else host


def fleet_hosts(bound: str, addresses: Sequence[str], hostname: str) -> List[str]:
    """The names other machines can use, best first: the bound address itself, or (bound to every interface,
    `0.0.0.0`/`::`) this machine's addresses that are not loopback, link-local or unspecified, then its name."""
    if bound not in ("0.0.0.0", "::", ""):
        return [bound]
    hosts: List[str] = []
    for address in addresses:
        try:
            parsed = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            continue
        if bound == "0.0.0.0" and parsed.version == 6:
            continue  # an IPv4 socket does not answer on IPv6
        if parsed.is_loopback or parsed.is_link_local or parsed.is_unspecified or address in hosts:
            continue
        hosts.append(address)
    if hostname and hostname != "localhost" and hostname not in hosts:
        hosts.append(hostname)
    return hosts or [hostname or "HOST"]


def _newest(files: Sequence[str]) -> Tuple[str, ...]:
    """`name==version` for each project's newest public version among wheel file names."""
    newest: Dict[str, Version] = {}
    for filename in files:
        name, version, _build, _tags = parse_wheel_filename(filename)
        public = Version(version.public)
        if name not in newest or public > newest[name]:
            newest[name] = public
    return tuple(f"{name}=={version}" for name, version in sorted(newest.items()))


@dataclass(frozen=True)
class FleetIndex:
    """One index a device can point pip at: an arch's (`/sm87/simple/`) or every wheel's (`/simple/`)."""

    arch: Optional[str]  # "8.7"; None for /simple/
    url: str
    host: str  # for --trusted-host (bracketed when IPv6)
    specs: Tuple[str, ...]  # "causal-conv1d==1.6.0", "mamba-ssm==2.2.5"

    @property
    def label(self) -> str:
        if self.arch is None:
            return "every wheel"
        jetson = _JETSON.get(self.arch)
        return f"sm_{self.arch.replace('.', '')}" + (f" ({jetson})" if jetson else "")

    def pip(self, option: str = "--index-url") -> str:
        """The pip command; `--extra-index-url` keeps the device's other index (the pins keep ours winning)."""
        return f"pip install --no-deps {option} {self.url} --trusted-host {self.host} {' '.join(self.specs)}".rstrip()

    @property
    def pip_conf(self) -> str:
        """A pip.conf (`/etc/pip.conf`, `~/.config/pip/pip.conf`) that makes a device's plain `pip install` use it."""
        return f"[global]\nindex-url = {self.url}\ntrusted-host = {self.host}\n"

    def to_json(self) -> Dict[str, Any]:
        return {"arch": self.arch, "url": self.url, "trusted_host": self.host, "specs": list(self.specs),
                "pip": self.pip(), "pip_extra_index": self.pip("--extra-index-url"), "pip_conf": self.pip_conf}


@dataclass(frozen=True)
class Fleet:
    """How devices use the index: the hosts they may name, and one FleetIndex per GPU arch, then /simple/."""

    hosts: List[str]
    loopback_only: bool
    indexes: List[FleetIndex] = field(default_factory=list)

    @property
    def install(self) -> str:
        """jetson-mamba on the device chooses arch, torch and CUDA itself from the manifest."""
        return f"jetson-mamba install --archive {self.indexes[-1].url}"

    def to_json(self) -> Dict[str, Any]:
        return {"hosts": self.hosts, "loopback_only": self.loopback_only, "install": self.install,
                "indexes": [index.to_json() for index in self.indexes]}


def fleet(hosts: List[str], port: int, written: Dict[str, Any], loopback_only: bool) -> Fleet:
    """The indexes `write_index` wrote (`written`), as URLs on the first host."""
    host = url_host(hosts[0])
    base = f"http://{host}:{port}/"
    indexes = [FleetIndex(arch, f"{base}{tree['index']}/", host,
                          _newest([f for files in tree["projects"].values() for f in files]))
               for arch, tree in written["archs"].items()]
    every = [f for files in written["projects"].values() for f in files]
    indexes.append(FleetIndex(None, f"{base}simple/", host, _newest(every)))
    return Fleet(hosts=hosts, loopback_only=loopback_only, indexes=indexes)
