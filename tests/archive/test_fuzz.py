"""Fuzzing the parsers of outside input (issue 19): wheels, manifests, index pages, printed text.

Each property: any input gives a result or the one documented error (ArchiveError), never
another exception; what is accepted is safe (members inside the tree and hashed, file names
without a path).
"""

from __future__ import annotations

import io
import json
import posixpath
import tempfile
import urllib.parse
import zipfile
from pathlib import Path
from typing import Any, Dict

from archive_helpers import make_wheel
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from rich.console import Console

from jetson_mamba.archive.manifest import parse_manifest
from jetson_mamba.archive.source import _links, wheel_filename_of
from jetson_mamba.archive.wheel import member_problem, read_wheel
from jetson_mamba.cli.output import plain
from jetson_mamba.errors import ArchiveError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_WORK = Path(tempfile.mkdtemp(prefix="jetson-mamba-fuzz-"))
_GOOD = make_wheel(_WORK).read_bytes()
_GOOD_ENTRY: Dict[str, Any] = {
    "filename": "demo-1.0-py3-none-any.whl", "sha256": "0" * 64, "size": 10, "name": "demo", "version": "1.0",
    "tags": ["py3-none-any"], "torch": {"linked": False, "version": None, "cxx11_abi": None, "source": None},
    "cuda": {"version": None, "source": None}, "gpu_archs": None,
}
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                           max_leaves=12)
names = st.lists(st.sampled_from(list("ab./\\:_-\0 ") + ["..", "demo-1.0.data", "purelib", "C:"]),
                 max_size=12).map("".join)


def _read(data: bytes) -> Any:
    path = _WORK / "demo-1.0-py3-none-any.whl"
    path.write_bytes(data)
    try:
        return read_wheel(path)
    except ArchiveError as error:
        assert error.fix
        return error


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(_GOOD) - 1), st.integers(0, 255)), min_size=1, max_size=8),
       st.integers(0, len(_GOOD)))
@example([(751, 64)], 0)  # found by a random run: "zip file version 6.4", a NotImplementedError at open
def test_damaged_wheel_is_read_or_refused(flips: list, keep: int) -> None:
    data = bytearray(_GOOD)
    for position, value in flips:
        data[position] = value
    _read(bytes(data[:keep] if keep else data))


@FUZZ
@given(st.dictionaries(names.filter(lambda n: bool(n.split("\0")[0])), st.binary(max_size=40), max_size=4), st.booleans())
@example({"a/": b""}, False)  # found by random runs: directory entries (also "a/\0"), unrecorded by design
@example({"a/\0": b""}, False)
def test_accepted_wheel_members_are_inside_and_recorded(extra: Dict[str, bytes], recorded: bool) -> None:
    """Every member of an accepted wheel has a safe name, and every file in it is in RECORD: directory entries
    carry no bytes, RECORD never lists them and pip skips them, so they need no entry."""
    buffer = io.BytesIO()
    make_wheel(_WORK, files={"demo/__init__.py": b"", **(extra if recorded else {})},
               unrecorded=None if recorded else extra)
    buffer.write((_WORK / "demo-1.0-py3-none-any.whl").read_bytes())
    result = _read(buffer.getvalue())
    if isinstance(result, dict):
        with zipfile.ZipFile(_WORK / "demo-1.0-py3-none-any.whl") as wheel:
            members = wheel.namelist()
        assert all(member_problem(m, "demo-1.0.dist-info") is None for m in members)
        assert recorded or not [m for m in extra if not m.split("\0")[0].endswith("/")]  # zip names end at a NUL


@FUZZ
@given(names)
@example("../x")
@example("/abs")
@example("demo-1.0.data/purelib/../../x")
@example("a/./../../x")
def test_a_safe_member_name_stays_inside_the_tree(name: str) -> None:
    if member_problem(name, "demo-1.0.dist-info") is None:
        resolved = posixpath.normpath(posixpath.join("/root", name))
        assert resolved.startswith("/root/") and ".." not in name.split("/") and "\\" not in name


@FUZZ
@given(st.sampled_from(sorted(_GOOD_ENTRY)), json_values)
def test_manifest_entry_with_any_field_value(key: str, value: Any) -> None:
    try:
        manifest = parse_manifest({"schema_version": 1, "wheels": [dict(_GOOD_ENTRY, **{key: value})]})
    except ArchiveError as error:
        assert error.fix
        return
    record = manifest.wheels[0]
    assert record.filename == Path(record.filename).name and isinstance(record.size, int)
    json.dumps(manifest.to_json())


@FUZZ
@given(json_values)
def test_any_json_as_a_manifest(data: Any) -> None:
    try:
        parse_manifest(data)
    except ArchiveError:
        pass


@FUZZ
@given(st.binary(max_size=200) | st.text(max_size=200).map(lambda t: f'<a href="{t}">x</a>'.encode()))
@example(b'<a href="../../files/..%2F..%2F..%2Ftmp%2FX.whl">x</a>')
@example(b'<a href="%2e%2e/x.whl">x</a><a href="a%5Cb.whl">')
def test_index_page_links_give_plain_wheel_names(page: bytes) -> None:
    for href in _links(page):
        url = urllib.parse.urljoin("http://127.0.0.1:1/simple/demo/", href).partition("#")[0]
        name = wheel_filename_of(url)
        if name is not None:
            target = (_WORK / name).resolve()
            assert target.parent == _WORK.resolve() and name.endswith(".whl")


@FUZZ
@given(st.text(max_size=60))
@example("[/x]")
@example("[bold]x[/bold] \\[")
@example("\\\\[/x] \\[ a\\b")
@example("trailing backslash\\")
def test_plain_text_prints_as_written(text: str) -> None:
    for after, shown in (("[dim] y[/]", " y"), (" y", " y"), ("", "")):  # a tag, other text or nothing follows
        out = io.StringIO()
        Console(file=out, width=1000, highlight=False, color_system=None, emoji=False).print(
            f"[bold]x[/] {plain(text)}{after}", soft_wrap=True)
        if text.isprintable():
            assert out.getvalue() == f"x {text}{shown}\n"
