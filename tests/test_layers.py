"""The layers only look down: nothing below `cli/` imports `jetson_mamba.cli` (only cli renders and exits),
and the imports inside the package form no cycle."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

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


def _module_names(root: Path) -> Dict[str, Path]:
    """jetson_mamba.<dotted name> -> file, a package by its __init__.py."""
    names = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        names[".".join(("jetson_mamba",) + (parts[:-1] if parts[-1] == "__init__" else parts))] = path
    return names


def import_graph(root: Path = PACKAGE) -> Dict[str, Set[str]]:
    """module -> the modules of the package it imports, anywhere in the file (lazy imports count): a name
    is the module it names, or for `from m import attr` m itself where attr is no submodule."""
    modules = _module_names(root)
    graph: Dict[str, Set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for _, imported in _imported(path, root):
            parts = imported.split(".")
            target = next((".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in modules),
                          None)
            if target is not None and target != name:
                graph[name].add(target)
    return graph


def import_cycles(root: Path = PACKAGE) -> List[List[str]]:
    """Every set of modules that import each other round (strongly connected, more than one), sorted."""
    graph = import_graph(root)
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    cycles: List[List[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm (the package is small: recursion is fine)
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            members = []
            while True:
                member = stack.pop()
                members.append(member)
                if member == node:
                    break
            if len(members) > 1:
                cycles.append(sorted(members))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


def test_the_package_has_no_import_cycle() -> None:
    """A cycle, even one broken at run time by an import inside a function, ties two modules into one:
    the shared part belongs in a module below both (as selective_scan/triton_kernels.py)."""
    assert import_cycles() == []


def test_the_cycle_check_sees_module_level_and_function_level_cycles(tmp_path: Path) -> None:
    (tmp_path / "ops").mkdir()
    (tmp_path / "ops" / "__init__.py").write_text("")
    (tmp_path / "ops" / "a.py").write_text("from jetson_mamba.ops.b import f\n")
    (tmp_path / "ops" / "b.py").write_text("def f():\n    from jetson_mamba.ops import a\n")  # lazy
    (tmp_path / "ops" / "c.py").write_text("from . import d\n")
    (tmp_path / "ops" / "d.py").write_text("from .e import g\n")
    (tmp_path / "ops" / "e.py").write_text("import jetson_mamba.ops.c\n")
    (tmp_path / "ops" / "fine.py").write_text("from jetson_mamba.ops import a, c\nfrom jetson_mamba.ops import helper\n")
    assert import_cycles(tmp_path) == [["jetson_mamba.ops.a", "jetson_mamba.ops.b"],
                                       ["jetson_mamba.ops.c", "jetson_mamba.ops.d", "jetson_mamba.ops.e"]]
