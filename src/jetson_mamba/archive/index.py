"""A static PEP 503 simple index (plus PEP 691 JSON) for an archive directory, and one per GPU arch.

Layout, relative to the output directory (the archive itself by default)::

    simple/index.html, simple/index.json                 all projects, every wheel
    simple/<project>/index.html, simple/<project>/index.json
    sm87/simple/..., sm90/simple/...                     the same, only the wheels that run on that GPU
    manifest.json                                        only when the archive has none (scanned)

File links are relative (`../../<wheel>#sha256=<digest>`), so the archive directory served by any
static HTTP server is an index pip can use: `pip install --index-url http://HOST:PORT/simple/ mamba-ssm`.
Plain pip cannot see GPU archs: from `/simple/` it takes the highest local label of a version
(`+...sm90` beats `+...sm87`), so a device uses its arch's tree, `/sm87/simple/`. There is one per
arch any wheel has code for (its fatbins, else its `smNN` label); a tree lists the wheels whose every
binary runs there by selection's rule (`select.unfit_binary`: same major, equal or lower minor, or
older PTX), plus wheels without GPU code. Like jetson-containers' one index per JetPack/CUDA
(`jp6/cu126`), a device's pip then cannot pick a wheel built for another GPU.
`jetson-mamba serve` answers PEP 691 JSON when the client asks for it (pip does).
"""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from jetson_mamba.archive.manifest import MANIFEST_NAME, Manifest, WheelRecord, atomic_file, load_manifest
from jetson_mamba.archive.select import binary_archs, unfit_binary
from jetson_mamba.archive.store import open_directory
from jetson_mamba.errors import PermissionDeniedError, UsageError

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
_META = {"api-version": "1.0"}
ARCH_TREE = re.compile(r"sm(\d{2,3})")  # the folder of one GPU arch's index: sm87, sm90, sm110


def arch_folder(arch: str) -> str:
    """"8.7" -> "sm87": the path segment of the arch's index (`/sm87/simple/`)."""
    return "sm" + arch.replace(".", "")


def _page(title: str, links: List[str]) -> str:
    body = "\n".join(f"    {link}<br/>" for link in links)
    return (f"<!DOCTYPE html>\n<html>\n  <head>\n    <meta name=\"pypi:repository-version\" content=\"1.0\">\n"
            f"    <title>{html.escape(title)}</title>\n  </head>\n  <body>\n    <h1>{html.escape(title)}</h1>\n"
            f"{body}\n  </body>\n</html>\n")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as temporary:
        Path(temporary).write_text(text)


def _file_link(record: WheelRecord, up: str) -> str:
    attributes = f' data-requires-python="{html.escape(record.requires_python)}"' if record.requires_python else ""
    href = f"{up}{record.filename}#sha256={record.sha256}"
    return f'<a href="{html.escape(href)}"{attributes}>{html.escape(record.filename)}</a>'


def _file_json(record: WheelRecord, up: str) -> Dict[str, Any]:
    item: Dict[str, Any] = {"filename": record.filename, "url": f"{up}{record.filename}",
                            "hashes": {"sha256": record.sha256}, "size": record.size}
    if record.requires_python:
        item["requires-python"] = record.requires_python
    return item


def _write_tree(simple: Path, records: List[WheelRecord], up: str) -> Dict[str, List[str]]:
    """One simple index (`simple/` and a page per project) of `records`; `up` leads from a project page to the wheels."""
    projects: Dict[str, List[WheelRecord]] = {}
    for record in records:
        projects.setdefault(record.name, []).append(record)
    for name, found in sorted(projects.items()):
        found.sort(key=lambda r: r.filename)
        _write(simple / name / "index.html", _page(f"Links for {name}", [_file_link(r, up) for r in found]))
        _write(simple / name / "index.json", json.dumps(
            {"meta": _META, "name": name, "files": [_file_json(r, up) for r in found]}, indent=1))
    _write(simple / "index.html", _page("Simple index", [f'<a href="{n}/">{n}</a>' for n in sorted(projects)]))
    _write(simple / "index.json", json.dumps(
        {"meta": _META, "projects": [{"name": n} for n in sorted(projects)]}, indent=1))
    return {n: [r.filename for r in rs] for n, rs in sorted(projects.items())}


def gpu_archs_present(manifest: Manifest) -> List[str]:
    """Every arch some wheel has code for ("8.7", "9.0"), in order: the arch trees to write."""
    found = {arch for record in manifest.wheels for archs in binary_archs(record).values()
             for arch in archs.sass + archs.ptx}
    return sorted(found, key=lambda arch: tuple(int(part) for part in arch.split(".")))


def _remove_trees(out: Path) -> None:
    """The index trees of an earlier run: projects and archs removed from the archive must disappear."""
    folders = [d for d in out.iterdir() if ARCH_TREE.fullmatch(d.name)] if out.is_dir() else []
    trees = [out / "simple"] + [d / "simple" for d in folders if not d.is_symlink()]  # never follow a link out
    for tree in trees:
        if tree.is_dir() and not tree.is_symlink():
            shutil.rmtree(tree)
            if tree.parent != out and not any(tree.parent.iterdir()):
                tree.parent.rmdir()


def write_index(archive: Union[str, Path], out: Optional[Union[str, Path]] = None) -> Dict[str, Any]:
    """Write the index for `archive` into `out` (default: the archive); returns what was written.

    `archs` maps each GPU arch to its tree (`sm87/simple`) and the files it lists.
    """
    archive = Path(archive)
    out = Path(out) if out is not None else archive
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a directory", "pass a new or existing directory to --out")
    manifest: Manifest = open_directory(archive)
    try:
        _remove_trees(out)
        projects = _write_tree(out / "simple", list(manifest.wheels), "../../")
        archs: Dict[str, Any] = {}
        for arch in gpu_archs_present(manifest):
            runs = [r for r in manifest.wheels if unfit_binary(r, arch) is None]
            tree = f"{arch_folder(arch)}/simple"
            archs[arch] = {"index": tree, "projects": _write_tree(out / tree, runs, "../../../")}
        wrote_manifest = load_manifest(archive) is None
        if wrote_manifest:
            _write(out / MANIFEST_NAME, json.dumps(manifest.to_json(), indent=2) + "\n")
    except PermissionError as error:
        raise PermissionDeniedError(f"cannot write the index into {out}: {error}",
                                    f"pass a writable output directory, or run `jetson-mamba serve {archive}`, "
                                    "which indexes read-only archives in a temporary directory") from None
    return {"index": str(out / "simple"), "projects": projects, "archs": archs, "manifest_written": wrote_manifest}
