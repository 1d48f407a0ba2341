"""Where an interpreter's mamba-ssm / causal-conv1d live, and the patch plan for them.

The facts come from a small script run by the target interpreter (`--python PATH` may be
another environment, and the caller never imports torch or mamba_ssm). For the install command:
`runtime_plan(python)` then `registry.apply_plan(plan)`, or run
`python -m jetson_mamba patch --json --python PATH` (same result, one JSON document).
For doctor: `applied_runtime_patches(site_packages)` (pure read, never raises).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from jetson_mamba.compat import registry
from jetson_mamba.compat.runtime_patches import RUNTIME_PATCHES
from jetson_mamba.errors import JetsonMambaError, MissingDependencyError
from jetson_mamba.probe.python_env import run_script

PATCHED_DISTRIBUTIONS = ("mamba-ssm", "causal-conv1d")
_FACT_DISTRIBUTIONS = ("torch", "transformers", "triton")
EXTENSIONS = ("selective_scan_cuda", "causal_conv1d_cuda")

# Runs in the target interpreter: Python 3.8 compatible, standard library only, imports nothing heavy.
_SCRIPT = r"""
import json, sys, sysconfig, importlib.util
import importlib.metadata as md
out = {"python": sys.executable, "purelib": sysconfig.get_paths()["purelib"], "distributions": {},
       "versions": {}, "extensions": {}}
for name in PATCHED:
    try:
        dist = md.distribution(name)
    except Exception:
        continue
    try:  # where the package really is: elsewhere than the dist-info for an editable install
        spec = importlib.util.find_spec(name.replace("-", "_"))
    except Exception:
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    out["distributions"][name] = {"version": dist.version, "root": str(dist.locate_file("")),
                                  "package": locations[0] if locations else None}
for name in FACTS:
    try:
        out["versions"][name] = md.version(name)
    except Exception:
        out["versions"][name] = None
for module in EXTS:
    try:
        spec = importlib.util.find_spec(module)
    except Exception:
        spec = None
    out["extensions"][module] = spec.origin if spec is not None else None
print(json.dumps(out))
""".replace("PATCHED", repr(PATCHED_DISTRIBUTIONS)).replace("FACTS", repr(_FACT_DISTRIBUTIONS)).replace(
    "EXTS", repr(EXTENSIONS))


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
    """Run the locator script in `python` (default: this interpreter)."""
    python = python or sys.executable
    data, failure = run_script(python, _SCRIPT)
    if data is None:
        raise MissingDependencyError(f"could not inspect the Python environment of {python}: {failure}",
                                     "pass the path of a working Python 3.8+ interpreter with --python")
    targets = []
    for name, info in sorted(data["distributions"].items()):
        root = Path(info["root"])
        package = Path(info["package"]) if info.get("package") else None
        if package is not None and package.parent.resolve() != root.resolve():
            # editable install: patch the checkout it runs from (no RECORD hashes there: the patches'
            # own recognition of the upstream code decides, as for a source tree)
            targets.append(registry.PatchTarget(name, info["version"], package.parent))
            continue
        targets.append(registry.PatchTarget(name, info["version"], root, registry.installed_hashes(root, name)))
    facts = {"versions": {**data["versions"], **{t.distribution: t.version for t in targets}},
             "extensions": data["extensions"], "python": data["python"]}
    return Environment(data["python"], Path(data["purelib"]), tuple(targets), facts)


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
