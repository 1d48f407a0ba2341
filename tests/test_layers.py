"""The layers only look down: nothing below `cli/` imports `jetson_mamba.cli` (only cli renders and exits)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, List, Tuple

import jetson_mamba

PACKAGE = Path(jetson_mamba.__file__).resolve().parent
# The entry points sit above cli/: `python -m jetson_mamba` is the CLI itself.
ABOVE_CLI = {PACKAGE / "__main__.py"}


def _imported(path: Path, root: Path) -> Iterator[Tuple[int, str]]:
    """(line, absolute module name) of every import in the file, at any depth (lazy imports count)."""
    package = ".".join(("jetson_mamba",) + path.relative_to(root).parent.parts)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            yield from ((node.lineno, f"{module}.{alias.name}") for alias in node.names)


def _reaches_cli(module: str) -> bool:
    return module == "jetson_mamba.cli" or module.startswith("jetson_mamba.cli.")


def lower_layer_imports_of_cli(root: Path = PACKAGE) -> List[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        if path in ABOVE_CLI or (root / "cli") in path.parents:
            continue
        found += [f"{path.relative_to(root)}:{line} imports {module}"
                  for line, module in _imported(path, root) if _reaches_cli(module)]
    return found


def test_nothing_below_cli_imports_cli() -> None:
    assert lower_layer_imports_of_cli() == []


def test_the_check_sees_every_spelling_of_an_import_of_cli(tmp_path: Path) -> None:
    """The check itself: absolute, from-, relative and lazy (inside a function) imports are all found."""
    (tmp_path / "cli").mkdir()
    (tmp_path / "verify").mkdir()
    (tmp_path / "cli" / "output.py").write_text("console = None\n")
    (tmp_path / "verify" / "a.py").write_text("import jetson_mamba.cli.output\n")
    (tmp_path / "verify" / "b.py").write_text("def f():\n    from jetson_mamba.cli.output import console\n")
    (tmp_path / "verify" / "c.py").write_text("from ..cli import output\n")
    (tmp_path / "verify" / "d.py").write_text("from jetson_mamba import cli\n")
    (tmp_path / "verify" / "fine.py").write_text("from jetson_mamba.client import x\nfrom . import cases\n")
    found = lower_layer_imports_of_cli(tmp_path)
    assert [line.split(":")[0] for line in found] == [f"verify/{name}.py" for name in "abcd"]
