"""Make ultralytics build Mamba-YOLO model YAMLs in the original format.

ultralytics resolves layer names in `ultralytics.nn.tasks.parse_model` through that module's
globals and decides how to fill in arguments by membership in two set literals inside the function
(the "base" modules that take `c1 = ch[f], c2 = args[0]` with width scaling, and the "repeat" modules
that also receive n). Those sets are local, so `register()` re-compiles parse_model from its own
source with our four blocks added to them (an AST edit, not a text patch), in the module's own
namespace. If the function's shape ever changes, registration fails with a clear error rather than
building a wrong model. Tested with ultralytics 8.4.190 (frozenset layout) and written to the
8.1-8.3 layout (inline set literal) as used by the original Mamba-YOLO fork.

`register()` also lets `YOLO("mamba-yolo-t.yaml")` (and -b, -l) find the configs shipped in this
package and picks the scale from the file name.
"""

from __future__ import annotations

import ast
import functools
import inspect
import os
import re
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Dict, List

from jetson_mamba.errors import MissingDependencyError, UsageError

TESTED_ULTRALYTICS = ("8.4.190",)
SCALES = ("t", "b", "l")
# Mamba-YOLO paper, COCO at 640x640: (parameters in millions, GFLOPs).
PUBLISHED = {"t": (5.8, 13.2), "b": (19.1, 45.4), "l": (57.6, 156.2)}
CONFIG_NAME = "mamba-yolo.yaml"
_PLAIN_BLOCKS = ("SimpleStem", "VisionClueMerge", "VSSBlock")
_REPEAT_BLOCKS = ("XSSBlock",)
_CONFIG_RE = re.compile(r"^mamba-yolo-([a-z])\.ya?ml$", re.IGNORECASE)


def config_path(scale: str = "t") -> Path:
    """The shipped YAML (all scales in one file); pass `scale` to check it exists.

    Next to this module (package data of an unzipped install): `importlib.resources.files` needs
    Python 3.9, and JetPack 5 ships 3.8.
    """
    if scale.lower() not in SCALES:
        raise UsageError(f"unknown Mamba-YOLO scale {scale!r}", f"use one of: {', '.join(SCALES)}")
    return Path(__file__).resolve().parent / "configs" / CONFIG_NAME


def _import_ultralytics() -> ModuleType:
    try:
        import ultralytics.nn.tasks as tasks
    except ImportError as error:
        raise MissingDependencyError(f"ultralytics is not importable ({error})",
                                     "pip install 'jetson-mamba[yolo]'  (installs ultralytics; never torch)"
                                     ) from error
    return tasks


def _set_names(node: ast.Set) -> List[str]:
    return [e.id for e in node.elts if isinstance(e, ast.Name)]


def _add_blocks_to_parse_rules(tree: ast.Module) -> None:
    """Append our block names to parse_model's base-module and repeat-module set literals."""
    base = [n for n in ast.walk(tree) if isinstance(n, ast.Set) and {"Conv", "SPPF"} <= set(_set_names(n))]
    repeat = [n for n in ast.walk(tree) if isinstance(n, ast.Set)
              and {"C2f", "C3"} <= set(_set_names(n)) and "Conv" not in _set_names(n)]
    if len(base) != 1 or len(repeat) != 1:
        raise MissingDependencyError(
            f"this ultralytics parse_model has an unknown layout ({len(base)} base-module sets, "
            f"{len(repeat)} repeat-module sets; expected one each)",
            f"install a tested ultralytics ({', '.join(TESTED_ULTRALYTICS)}), e.g. pip install "
            f"'ultralytics=={TESTED_ULTRALYTICS[-1]}'")
    base[0].elts.extend(ast.Name(id=name, ctx=ast.Load()) for name in _PLAIN_BLOCKS + _REPEAT_BLOCKS)
    repeat[0].elts.extend(ast.Name(id=name, ctx=ast.Load()) for name in _REPEAT_BLOCKS)


def _recompile_parse_model(tasks: ModuleType) -> Callable[..., Any]:
    original = tasks.parse_model
    source = textwrap.dedent(inspect.getsource(original))
    tree = ast.parse(source)
    _add_blocks_to_parse_rules(tree)
    ast.fix_missing_locations(tree)
    ast.increment_lineno(tree, original.__code__.co_firstlineno - 1)
    namespace: Dict[str, Any] = {}
    exec(compile(tree, inspect.getsourcefile(original) or "<parse_model>", "exec"), vars(tasks), namespace)
    patched = namespace["parse_model"]

    @functools.wraps(original)
    def parse_model(d: Dict[str, Any], ch: Any, verbose: bool = True) -> Any:
        """parse_model with Mamba-YOLO's blocks and the scale taken from a mamba-yolo-<scale> name."""
        scales = d.get("scales") or {}
        if scales and not d.get("scale"):
            suffix = Path(str(d.get("yaml_file", ""))).stem.rpartition("-")[2]
            d["scale"] = next((k for k in scales if str(k).lower() == suffix.lower()), None)
        return patched(d, ch, verbose)

    parse_model.__jetson_mamba__ = True  # type: ignore[attr-defined]
    return parse_model


def _wrap_yaml_model_load(original: Callable[[Any], Dict[str, Any]]) -> Callable[[Any], Dict[str, Any]]:
    @functools.wraps(original)
    def yaml_model_load(path: Any) -> Dict[str, Any]:
        """Resolve `mamba-yolo-<scale>.yaml` to the shipped config unless such a file exists locally."""
        match = _CONFIG_RE.match(Path(str(path)).name)
        if match is None or os.path.exists(str(path)):
            return original(path)
        scale = match.group(1).lower()
        d = original(config_path(scale))
        d["scale"] = scale
        d["yaml_file"] = str(path)
        return d

    yaml_model_load.__jetson_mamba__ = True  # type: ignore[attr-defined]
    return yaml_model_load


def load_yolo(model: str) -> Any:
    """An ultralytics YOLO from a scale (t, b, l), a model YAML or a trained .pt, after `register()`."""
    register()
    from ultralytics import YOLO

    spec = f"mamba-yolo-{model.lower()}.yaml" if model.lower() in SCALES else model
    shipped = _CONFIG_RE.match(Path(spec).name) is not None
    if spec.endswith((".pt", ".yaml", ".yml", ".onnx")) and not shipped and not os.path.exists(spec):
        raise UsageError(f"model file {spec} does not exist",
                         "pass a trained checkpoint (runs/.../weights/best.pt), a model YAML, or a scale: t, b, l")
    return YOLO(spec)


def register() -> None:
    """Teach the installed ultralytics Mamba-YOLO's blocks, parse rules and config names. Idempotent."""
    from jetson_mamba.models.mamba_yolo import blocks

    tasks = _import_ultralytics()
    if getattr(tasks.parse_model, "__jetson_mamba__", False):
        return
    for name in _PLAIN_BLOCKS + _REPEAT_BLOCKS:
        present = vars(tasks).get(name)
        ours = getattr(blocks, name)
        if present is not None and present is not ours:
            raise UsageError(f"ultralytics already defines a layer named {name} ({present!r})",
                             "use an ultralytics without its own Mamba-YOLO blocks, or build the model "
                             "from jetson_mamba.models.mamba_yolo directly")
        setattr(tasks, name, ours)
    tasks.parse_model = _recompile_parse_model(tasks)
    import ultralytics.engine.model as engine_model

    for module in (tasks, engine_model):
        if not getattr(module.yaml_model_load, "__jetson_mamba__", False):
            module.yaml_model_load = _wrap_yaml_model_load(module.yaml_model_load)
