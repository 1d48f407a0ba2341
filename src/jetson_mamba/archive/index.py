"""A static PEP 503 simple index (plus PEP 691 JSON) for an archive directory.

Layout, relative to the output directory (the archive itself by default)::

    simple/index.html, simple/index.json                 all projects
    simple/<project>/index.html, simple/<project>/index.json
    manifest.json                                        only when the archive has none (scanned)

File links are `../../<wheel>#sha256=<digest>`, so the archive directory served by any static
HTTP server is an index pip can use: `pip install --index-url http://HOST:PORT/simple/ mamba-ssm`.
`jetson-mamba serve` answers PEP 691 JSON when the client asks for it (pip does).
"""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from jetson_mamba.archive.manifest import MANIFEST_NAME, Manifest, WheelRecord, atomic_file, load_manifest
from jetson_mamba.archive.store import open_directory
from jetson_mamba.errors import PermissionDeniedError, UsageError

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
_META = {"api-version": "1.0"}


def _page(title: str, links: List[str]) -> str:
    body = "\n".join(f"    {link}<br/>" for link in links)
    return (f"<!DOCTYPE html>\n<html>\n  <head>\n    <meta name=\"pypi:repository-version\" content=\"1.0\">\n"
            f"    <title>{html.escape(title)}</title>\n  </head>\n  <body>\n    <h1>{html.escape(title)}</h1>\n"
            f"{body}\n  </body>\n</html>\n")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as temporary:
        Path(temporary).write_text(text)


def _file_link(record: WheelRecord) -> str:
    attributes = f' data-requires-python="{html.escape(record.requires_python)}"' if record.requires_python else ""
    href = f"../../{record.filename}#sha256={record.sha256}"
    return f'<a href="{html.escape(href)}"{attributes}>{html.escape(record.filename)}</a>'


def _file_json(record: WheelRecord) -> Dict[str, Any]:
    item: Dict[str, Any] = {"filename": record.filename, "url": f"../../{record.filename}",
                            "hashes": {"sha256": record.sha256}, "size": record.size}
    if record.requires_python:
        item["requires-python"] = record.requires_python
    return item


def write_index(archive: Union[str, Path], out: Optional[Union[str, Path]] = None) -> Dict[str, Any]:
    """Write the index for `archive` into `out` (default: the archive); returns what was written."""
    archive = Path(archive)
    out = Path(out) if out is not None else archive
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a directory", "pass a new or existing directory to --out")
    manifest: Manifest = open_directory(archive)
    projects: Dict[str, List[WheelRecord]] = {}
    for record in manifest.wheels:
        projects.setdefault(record.name, []).append(record)
    simple = out / "simple"
    try:
        if simple.is_dir():
            shutil.rmtree(simple)  # projects removed from the archive must disappear from the index
        for name, records in sorted(projects.items()):
            records.sort(key=lambda r: r.filename)
            _write(simple / name / "index.html", _page(f"Links for {name}", [_file_link(r) for r in records]))
            _write(simple / name / "index.json", json.dumps(
                {"meta": _META, "name": name, "files": [_file_json(r) for r in records]}, indent=1))
        _write(simple / "index.html", _page("Simple index", [f'<a href="{n}/">{n}</a>' for n in sorted(projects)]))
        _write(simple / "index.json", json.dumps(
            {"meta": _META, "projects": [{"name": n} for n in sorted(projects)]}, indent=1))
        wrote_manifest = load_manifest(archive) is None
        if wrote_manifest:
            _write(out / MANIFEST_NAME, json.dumps(manifest.to_json(), indent=2) + "\n")
    except PermissionError as error:
        raise PermissionDeniedError(f"cannot write the index into {out}: {error}",
                                    f"pass a writable output directory, or run `jetson-mamba serve {archive}`, "
                                    "which indexes read-only archives in a temporary directory") from None
    return {"index": str(simple), "projects": {n: [r.filename for r in rs] for n, rs in sorted(projects.items())},
            "manifest_written": wrote_manifest}
