"""Where an interpreter's mamba-ssm / causal-conv1d live, and the patch plan for them.

The facts come from `probe/target_script.py` run by the target interpreter (`--python PATH` may be
another environment, and the caller never imports torch or mamba_ssm). For the install command:
`runtime_plan(python)` then `registry.apply_plan(plan)`, or run
`python -m jetson_mamba patch --json --python PATH` (same result, one JSON document).
For doctor and verify: `patches_in_effect(machine)` (pure read, never raises).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from jetson_mamba.compat import registry
from jetson_mamba.compat.runtime_patches import RUNTIME_PATCHES
from jetson_mamba.errors import JetsonMambaError, MissingDependencyError
from jetson_mamba.probe.model import MachineInfo
from jetson_mamba.probe.python_env import target_facts

PATCHED_DISTRIBUTIONS = ("mamba-ssm", "causal-conv1d")
_FACT_DISTRIBUTIONS = ("torch", "transformers", "triton")
EXTENSIONS = ("selective_scan_cuda", "causal_conv1d_cuda")


@dataclass(frozen=True)
class Environment:
    """One interpreter's patchable distributions and the facts the reasons mention."""

    python: str
    purelib: Path
    targets: Tuple[registry.PatchTarget, ...]
    facts: Dict[str, Any] = field(default_factory=dict)

    @property
    def roots(self) -> List[Path]:
        """Every directory that may hold a patch record (site-packages of each target, purelib)."""
        return sorted({t.root for t in self.targets} | {self.purelib})


def locate(python: Optional[str] = None) -> Environment:
    """Where `python` (default: this interpreter) has the patchable distributions, and the facts for reasons."""
    python = python or sys.executable
    data, failure = target_facts(python, {
        "interpreter": True, "extensions": {"modules": list(EXTENSIONS)},
        "distributions": {"names": list(PATCHED_DISTRIBUTIONS + _FACT_DISTRIBUTIONS), "packages": True}})
    if data is None:
        raise MissingDependencyError(f"could not inspect the Python environment of {python}: {failure}",
                                     "pass the path of a working Python 3.8+ interpreter with --python")
    found = data["distributions"]
    extensions = {module: None for module in EXTENSIONS}
    extensions.update({e["module"]: e["path"] for e in data["extensions"]})
    targets = []
    for name, info in sorted((n, found[n]) for n in PATCHED_DISTRIBUTIONS if n in found):
        root = Path(info["location"])
        package = Path(info["package"]) if info.get("package") else None
        if package is not None and package.parent.resolve() != root.resolve():
            # editable install: patch the checkout it runs from (no RECORD hashes there: the patches'
            # own recognition of the upstream code decides, as for a source tree)
            targets.append(registry.PatchTarget(name, info["version"], package.parent))
            continue
        targets.append(registry.PatchTarget(name, info["version"], root, registry.installed_hashes(root, name)))
    versions = {name: found.get(name, {}).get("version") for name in _FACT_DISTRIBUTIONS}
    facts = {"versions": {**versions, **{t.distribution: t.version for t in targets}},
             "extensions": extensions, "python": data["interpreter"]["python"]}
    return Environment(data["interpreter"]["python"], Path(data["interpreter"]["purelib"]), tuple(targets), facts)


def runtime_plan(python: Optional[str] = None, patches: Sequence[registry.Patch] = RUNTIME_PATCHES
                 ) -> Tuple[Environment, registry.PatchPlan]:
    """The runtime patch plan for an interpreter's installed packages (reads, never writes)."""
    env = locate(python)
    return env, plan_for(env, patches)


def plan_for(env: Environment, patches: Sequence[registry.Patch] = RUNTIME_PATCHES) -> registry.PatchPlan:
    """The runtime patch plan for a located environment (reads; under `registry.locked(env.roots)` to write)."""
    return registry.patch_plan(env.targets, patches, registry.INSTALLED, facts=env.facts)


def patched_files(env: Environment, patches: Sequence[registry.Patch] = RUNTIME_PATCHES) -> List[Path]:
    """Every file a runtime patch may write in `env` (where a killed run may have left a temporary file)."""
    return [t.root / f for t in env.targets for p in patches if p.distribution == t.distribution for f in p.files]


def applied_runtime_patches(root: Path, patches: Sequence[registry.Patch] = RUNTIME_PATCHES) -> Set[str]:
    """Runtime patches in effect in the site-packages `root`: applied in every file that needs them.

    Reads the files themselves (the markers), so it also sees patches baked into a wheel by the
    build; never raises (for doctor): an unreadable or unknown state counts as nothing applied.
    """
    root = Path(root)
    targets = [registry.PatchTarget(name, None, root, registry.installed_hashes(root, name))
               for name in PATCHED_DISTRIBUTIONS
               if any((root / f).is_file() for p in patches if p.distribution == name for f in p.files)]
    try:
        plan = registry.patch_plan(targets, patches, registry.INSTALLED)
    except (JetsonMambaError, OSError, UnicodeDecodeError):
        return set()
    needed = {s.patch for s in plan.statuses if s.status == registry.NEEDED}
    return {s.patch for s in plan.statuses if s.status == registry.APPLIED} - needed


def patches_in_effect(machine: MachineInfo) -> Set[str]:
    """Runtime patches in effect where the probed machine's mamba-ssm / causal-conv1d are installed.

    Read from the files themselves, so fixes baked into a wheel by `jetson-mamba build` count too,
    and a file reinstalled since `jetson-mamba patch` counts as unpatched. Every diagnosis of a
    machine (doctor's, verify's) passes these on, so no fix that is already applied is offered again.
    """
    roots = {Path(p.location) for name, p in machine.packages.distributions.items()
             if p.location and name in PATCHED_DISTRIBUTIONS}
    return set().union(*(applied_runtime_patches(root) for root in roots))
