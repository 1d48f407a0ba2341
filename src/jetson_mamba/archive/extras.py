"""Torch-safe installs of the optional packages jetson-mamba's extras stand for (ultralytics for Mamba-YOLO).

Why: `pip install ultralytics` on a JetPack image installs PyPI's torchvision (no JetPack one is there),
which pins and pulls PyPI's torch, and opencv-python, which shadows JetPack's CUDA/GStreamer OpenCV.
So the package goes in with `--no-deps`, its own requirements follow with the protected distributions
(torch, torchvision, numpy, the installed OpenCV) pinned by a constraints file, and any requirement on
OpenCV is left out where `cv2` already imports. A dry run decides first: a plan that would install or
change a protected distribution is refused before anything is written.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from jetson_mamba.archive.environment import TargetEnvironment, gather_facts, planned, tail
from jetson_mamba.errors import InstallError, MissingDependencyError

# Never installed, upgraded or removed by jetson-mamba (JetPack ships its own builds of each).
PROTECTED = ("torch", "torchvision", "numpy", "opencv-python", "opencv-python-headless", "opencv-contrib-python",
             "opencv-contrib-python-headless")
OPENCV = tuple(name for name in PROTECTED if name.startswith("opencv"))
# The ultralytics releases Mamba-YOLO was tested with (8.4.190 in CI and on the lab GPU).
ULTRALYTICS = "ultralytics>=8.3.0,<8.5"


@dataclass(frozen=True)
class ProtectedState:
    """What the target has of the protected distributions, and whether `import cv2` finds an OpenCV."""

    versions: Dict[str, str]
    cv2: bool

    def constraints(self) -> str:
        """A pip constraints file: each installed protected distribution at exactly its version."""
        return "".join(f"{name}=={version}\n" for name, version in sorted(self.versions.items()))


@dataclass(frozen=True)
class ExtraReport:
    """What `yolo setup` did (or, with dry_run, would do)."""

    package: str
    installed: List[Tuple[str, str]]
    left_out: List[str]
    protected: Dict[str, str]
    dry_run: bool
    notes: List[str] = field(default_factory=list)

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)


def protected_state(env: TargetEnvironment) -> ProtectedState:
    data = gather_facts(env.python, {"distributions": {"names": list(PROTECTED)}, "extensions": {"modules": ["cv2"]}})
    return ProtectedState(versions={canonicalize_name(k): v["version"] for k, v in data["distributions"].items()},
                          cv2=bool(data["extensions"]))


def follow_requirements(requires: Sequence[str], state: ProtectedState) -> Tuple[List[str], List[str]]:
    """(requirements to install, those left out and why) for a package installed with --no-deps.

    Protected distributions that are installed stay as they are (the constraints pin them); an OpenCV
    requirement is dropped when cv2 already imports (JetPack's OpenCV has no pip metadata)."""
    keep: List[str] = []
    left_out: List[str] = []
    for text in requires:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            left_out.append(f"{text}: not a valid requirement")
            continue
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if name in OPENCV and state.cv2:
            left_out.append(f"{requirement}: cv2 already imports (an OpenCV that is not pip's, e.g. JetPack's)")
        elif name in state.versions:
            left_out.append(f"{requirement}: {name} {state.versions[name]} is installed and stays")
        else:
            keep.append(str(requirement))
    return keep, left_out


def refuse_protected(planned: List[Tuple[str, str]], state: ProtectedState, what: str) -> None:
    """InstallError if the `planned` (name, version) installs would install or change a protected distribution."""
    touched = [f"{name} {version}" for name, version in planned
               if name in PROTECTED and state.versions.get(name) != version]
    if touched:
        raise InstallError(f"installing {what} would install or change {', '.join(touched)}",
                           "install the JetPack (or your platform's) build of those first, then rerun; "
                           "jetson-mamba never lets pip replace them")


def install_ultralytics(env: TargetEnvironment, dry_run: bool = False, spec: str = ULTRALYTICS,
                        progress: Callable[[str], None] = lambda _: None) -> ExtraReport:
    """ultralytics for Mamba-YOLO, without pip touching torch, torchvision, numpy or OpenCV."""
    state = protected_state(env)
    if "torch" not in state.versions:
        raise MissingDependencyError(f"{env.python} has no torch: ultralytics needs it, and pip would take "
                                     "a PyPI build", "install your platform's torch first (on Jetson: NVIDIA's "
                                     "JetPack wheel), then rerun `jetson-mamba yolo setup`")
    if "torchvision" not in state.versions:
        raise MissingDependencyError(
            f"{env.python} has torch {state.versions['torch']} but no torchvision: ultralytics needs it, and "
            "PyPI's torchvision would pull PyPI's torch",
            "install the torchvision built for this torch (on Jetson: NVIDIA's wheel for your JetPack, or "
            "build it from source against the installed torch), then rerun `jetson-mamba yolo setup`")
    with tempfile.TemporaryDirectory(prefix="jetson-mamba-extra-") as temporary:
        constraints = Path(temporary) / "constraints.txt"
        constraints.write_text(state.constraints())
        pin = ["--constraint", str(constraints)]
        progress(f"planning {spec} (--no-deps)")
        report = Path(temporary) / "package.json"
        plan = env.pip(["install", "--dry-run", "--quiet", "--no-deps", "--report", str(report), *pin, spec])
        if plan.returncode != 0:
            raise InstallError(f"pip cannot install {spec}: {tail(plan.stderr, 3)}",
                               "check the package index settings (pip.conf) and rerun")
        package = planned(report)
        if dry_run:
            return ExtraReport(spec, package, [], state.versions, True,
                               ["its requirements are resolved after it is installed (they come from its metadata)"])
        progress(f"installing {spec} without its dependencies")
        done = env.pip(["install", "--no-deps", *pin, spec])
        if done.returncode != 0:
            raise InstallError(f"pip install --no-deps {spec} failed: {tail(done.stderr, 3)}", "rerun with -v")
        found = gather_facts(env.python, {"distributions": {"names": ["ultralytics"], "requires": True}})
        requires = found["distributions"].get("ultralytics", {}).get("requires", [])
        wanted, left_out = follow_requirements(requires, state)
        installed = list(package)
        if wanted:
            progress(f"planning its requirements: {', '.join(wanted)}")
            report = Path(temporary) / "requirements.json"
            plan = env.pip(["install", "--dry-run", "--quiet", "--report", str(report), *pin, *wanted])
            if plan.returncode != 0:
                raise InstallError(f"pip cannot resolve ultralytics' requirements with torch, torchvision, numpy "
                                   f"and OpenCV pinned: {tail(plan.stderr, 3)}",
                                   "install the missing ones built for your torch by hand, then rerun")
            requirements = planned(report)
            refuse_protected(requirements, state, "ultralytics' requirements")
            progress(f"installing {len(requirements)} requirement(s)")
            done = env.pip(["install", *pin, *wanted])
            if done.returncode != 0:
                raise InstallError(f"pip install of ultralytics' requirements failed: {tail(done.stderr, 3)}",
                                   "rerun with -v")
            installed += requirements
    after = protected_state(env)
    if after.versions != state.versions:
        raise InstallError(f"protected packages changed: {state.versions} -> {after.versions}",
                           "this is a jetson-mamba bug: reinstall your platform's builds and report it")
    return ExtraReport(spec, installed, left_out, state.versions, False)

