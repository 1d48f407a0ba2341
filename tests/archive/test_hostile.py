"""Hostile and clumsy input to the archive commands (issue 19): real wheels, real files, real servers on loopback.

Every refusal is one `error:` line and one `fix:` line with a documented exit code, never a
traceback, and nothing is written outside where it belongs.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, Iterator, Tuple

import pytest
from archive_helpers import cli, make_wheel

from jetson_mamba.archive import add_wheel
from jetson_mamba.archive.manifest import MANIFEST_NAME
from jetson_mamba.archive.serve import ArchiveServer
from jetson_mamba.cli import build_parser
from jetson_mamba.errors import ArchiveError, UsageError


def assert_one_error(done: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    """Exit `code`, an `error:` and a `fix:` line ending stderr (after any progress lines), no traceback."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) >= 2 and lines[-2].startswith("error: ") and lines[-1].startswith("fix: "), done.stderr
    assert not any(line.startswith("error: ") for line in lines[:-2]), done.stderr
    for needle in needles:
        assert needle in done.stderr, (needle, done.stderr)


@pytest.fixture
def static_server(tmp_path: Path) -> Iterator[Tuple[str, Path]]:
    """A plain static HTTP server (not ours) on 127.0.0.1: (base URL, its document root)."""
    root = tmp_path / "www"
    root.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(root)))
    httpd.RequestHandlerClass.log_message = lambda *args: None  # type: ignore[assignment]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", root
    httpd.shutdown()
    httpd.server_close()


# --- item 1: an index link that unquotes to a path ---------------------------------------------------------------

def test_index_link_with_an_escaped_path_writes_nothing_outside(static_server: Tuple[str, Path],
                                                                tmp_path: Path) -> None:
    url, www = static_server
    (www / "simple/demo").mkdir(parents=True)
    (www / "files").mkdir()
    make_wheel(www / "files").rename(www / "files/escaped.whl")  # what the server answers for the link
    (www / "simple/index.html").write_text('<a href="demo/">demo</a>')
    (www / "simple/demo/index.html").write_text('<a href="../../files/..%2F..%2Fescaped.whl">x</a>')
    temp = tmp_path / "temp"  # the download folder is made in here: `..%2F..%2F` points at tmp_path
    temp.mkdir()
    done = cli("install", "--archive", url, "--dry-run", env={"TMPDIR": str(temp)})
    assert not (tmp_path / "escaped.whl").exists()
    assert list(temp.iterdir()) == []  # the download folder is gone too
    assert_one_error(done, ArchiveError.exit_code, "not a wheel file name", "..%2F..%2Fescaped.whl")


# --- item 2: serve ----------------------------------------------------------------------------------------------

def _get(port: int, path: str, host: str = "127.0.0.1") -> Tuple[int, bytes]:
    """GET `path` sent exactly as given (no client-side normalisation)."""
    connection = http.client.HTTPConnection(host, port, timeout=10)
    connection.putrequest("GET", path, skip_accept_encoding=True)
    connection.endheaders()
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, body


def test_serve_gives_no_file_outside_the_archive(tmp_path: Path) -> None:
    archive = tmp_path / "a1"
    archive.mkdir()
    make_wheel(archive)
    (tmp_path / "a1-secret").mkdir()
    (tmp_path / "a1-secret/secret.txt").write_text("SECRET")
    (archive / "link.txt").symlink_to(tmp_path / "a1-secret/secret.txt")
    with ArchiveServer(archive, "127.0.0.1", 0) as server:
        for path in ("/simple/../../a1-secret/secret.txt", "/simple/..%2F..%2Fa1-secret/secret.txt",
                     "/simple/%2e%2e/%2e%2e/a1-secret/secret.txt", "/link.txt", "/../a1-secret/secret.txt",
                     ):
            status, body = _get(server.port, path)
            assert b"SECRET" not in body and b"secret.txt" not in body, path
            assert status == 404, (path, status)
        assert _get(server.port, "/simple/demo/")[0] == 200  # the index itself still works
        assert _get(server.port, "/demo-1.0-py3-none-any.whl")[0] == 200


def test_serve_listens_on_loopback_unless_asked(tmp_path: Path) -> None:
    args = build_parser().parse_args(["serve", str(tmp_path)])
    assert args.host == "127.0.0.1"
    assert "127.0.0.1" in cli("serve", "--help").stdout
    with ArchiveServer(tmp_path, port=0) as server:
        assert server.host == "127.0.0.1" and server.describe()["loopback_only"]


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
@pytest.mark.parametrize("host", ["::1", "::"])
def test_serve_on_ipv6(tmp_path: Path, host: str) -> None:
    make_wheel(tmp_path)
    with ArchiveServer(tmp_path, host, 0) as server:
        assert server.url == f"http://[::1]:{server.port}/simple/"
        status, body = _get(server.port, "/simple/demo/", host="::1")
        assert status == 200 and b"demo-1.0-py3-none-any.whl" in body


@pytest.mark.parametrize("args, needle", [(["--port", "70000"], "not a TCP port"),
                                          (["--host", "no-such-host.invalid", "--port", "0"], "--host")])
def test_serve_bad_port_or_host_is_one_line(tmp_path: Path, args: list, needle: str) -> None:
    assert_one_error(cli("serve", str(tmp_path), *args, timeout=60), UsageError.exit_code, needle)


def test_serve_port_in_use_says_pick_a_free_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = cli("serve", str(tmp_path), "--port", str(port), timeout=60)
    assert_one_error(done, UsageError.exit_code, "pick a free port")


# --- items 6 and 7: what `archive add` accepts -------------------------------------------------------------------

def test_zip_bomb_is_refused_without_inflating_it(tmp_path: Path) -> None:
    bomb = make_wheel(tmp_path, big=("demo/zeros.bin", 300 << 20))  # 300 MiB of zeros, ~0.3 MB on disk
    assert bomb.stat().st_size < 2 << 20
    # VmHWM, the peak RSS of this process image (ru_maxrss would carry the forking pytest's over exec).
    script = ("import re, sys\nfrom jetson_mamba.cli import main\ncode = main(sys.argv[1:])\n"
              "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1), file=sys.stderr)\n"
              "sys.exit(code)\n")
    done = subprocess.run([sys.executable, "-c", script, "archive", "add", "--archive", str(tmp_path / "archive"),
                           str(bomb)], capture_output=True, text=True, timeout=300)
    *message, peak_kb = done.stderr.strip().splitlines()
    assert int(peak_kb) < 200 << 10, f"peak RSS {int(peak_kb) >> 10} MB"
    assert_one_error(subprocess.CompletedProcess(done.args, done.returncode, done.stdout, "\n".join(message)),
                     ArchiveError.exit_code, "zip bomb", "demo/zeros.bin")
    assert not (tmp_path / "archive" / bomb.name).exists()


@pytest.mark.parametrize("unrecorded, needle", [
    ({"demo-startup.pth": b"import os; os.system('id')\n"}, "'demo-startup.pth' is not listed in its RECORD"),
    ({"../x": b"x"}, "'../x' points outside the wheel's tree"),
    ({"/etc/x": b"x"}, "'/etc/x' is an absolute path"),
    ({"demo-1.0.data/purelib/../../../x": b"x"}, "points outside the wheel's tree"),
    ({"demo-1.0.data/evil/x": b"x"}, "not under one of its schemes"),
    ({"demo\\..\\..\\x": b"x"}, "backslash"),
])
def test_unlisted_and_traversing_members_are_refused(tmp_path: Path, unrecorded: Dict[str, bytes],
                                                     needle: str) -> None:
    wheel = make_wheel(tmp_path, unrecorded=unrecorded)
    done = cli("archive", "add", "--archive", str(tmp_path / "archive"), str(wheel))
    assert_one_error(done, ArchiveError.exit_code, needle)
    assert not (tmp_path / "archive").exists() or not any((tmp_path / "archive").glob("*.whl"))


def test_traversing_member_listed_in_record_is_refused(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, files={"demo/__init__.py": b"", "demo-1.0.data/scripts/../../../../x": b"x"})
    assert_one_error(cli("archive", "add", "--archive", str(tmp_path / "archive"), str(wheel)),
                     ArchiveError.exit_code, "points outside the wheel's tree")


# --- item 8: malformed wheels, manifests, arguments ----------------------------------------------------------------

@pytest.mark.parametrize("knobs, needle", [
    ({"dist_info_version": "not a version"}, "invalid version 'not a version'"),
    ({"wheel_tag": "py3"}, "malformed Tag"),
    ({"metadata": b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\nSummary: \xff\xfe\n"}, "not UTF-8"),
])
def test_malformed_wheel_is_one_error_line(tmp_path: Path, knobs: Dict[str, object], needle: str) -> None:
    wheel = make_wheel(tmp_path, **knobs)  # type: ignore[arg-type]
    assert_one_error(cli("archive", "add", "--archive", str(tmp_path / "archive"), str(wheel)),
                     ArchiveError.exit_code, needle)


def test_archive_option_naming_a_file(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path)
    (tmp_path / "file").write_text("")
    assert_one_error(cli("archive", "add", "--archive", str(tmp_path / "file"), str(wheel)), UsageError.exit_code,
                     "is a file, not a directory")
    assert_one_error(cli("archive", "list", "--archive", str(tmp_path / "file")), ArchiveError.exit_code,
                     "is a file")


def test_index_out_naming_a_file(tmp_path: Path) -> None:
    make_wheel(tmp_path)
    (tmp_path / "out").write_text("")
    assert_one_error(cli("index", str(tmp_path), "--out", str(tmp_path / "out")), UsageError.exit_code,
                     "--out")


@pytest.fixture
def demo_archive(tmp_path: Path) -> Path:
    archive = tmp_path / "archive"
    add_wheel(make_wheel(tmp_path), archive)
    return archive


@pytest.mark.parametrize("change, needle", [
    ({"version": "one point oh"}, "`version` 'one point oh' is not a version"),
    ({"size": "12"}, '`size` is "12", not an integer'),
    ({"torch": ["2.5"]}, "`torch` is"),
    ({"tags": "py3-none-any"}, "`tags` is"),
    ({"filename": "../../demo-1.0-py3-none-any.whl"}, "is a path"),
    ({"cuda": {"version": ["13"], "source": None}}, "`cuda.version`"),
])
def test_malformed_manifest_is_one_error_line(demo_archive: Path, change: Dict[str, object], needle: str) -> None:
    data = json.loads((demo_archive / MANIFEST_NAME).read_text())
    data["wheels"][0].update(change)
    (demo_archive / MANIFEST_NAME).write_text(json.dumps(data))
    assert_one_error(cli("archive", "list", "--archive", str(demo_archive)), ArchiveError.exit_code, needle)
    assert_one_error(cli("install", "--archive", str(demo_archive), "--dry-run"), ArchiveError.exit_code, needle)


def test_rich_markup_in_manifest_fields_is_shown_as_written(demo_archive: Path) -> None:
    data = json.loads((demo_archive / MANIFEST_NAME).read_text())
    data["wheels"][0]["cuda"] = {"version": "[/x]", "source": "[bold]"}
    data["wheels"][0]["torch"]["version"] = "[/torch]"
    (demo_archive / MANIFEST_NAME).write_text(json.dumps(data))
    done = cli("archive", "list", "--archive", str(demo_archive))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "[/x]" in done.stdout and "[/torch]" in done.stdout


def test_markup_in_an_archive_path(tmp_path: Path) -> None:
    archive = tmp_path / "[/x]"
    wheel = make_wheel(tmp_path)
    done = cli("archive", "add", "--archive", str(archive), str(wheel))
    assert done.returncode == 0 and "added demo-1.0-py3-none-any.whl" in done.stdout, done.stderr
    done = cli("archive", "list", "--archive", str(archive))
    assert done.returncode == 0 and "[/x]" in done.stdout.replace("\n", ""), done.stderr


def test_backslashes_in_an_archive_path_are_shown_as_written(tmp_path: Path) -> None:
    archive = tmp_path / "a\\[1]\\"  # rich's escape() showed `a[1]\\`
    cli("archive", "add", "--archive", str(archive), str(make_wheel(tmp_path)))
    for args in (("index", str(archive)), ("archive", "list", "--archive", str(archive))):
        done = cli(*args)
        assert done.returncode == 0 and f"{archive}" in done.stdout.replace("\n", ""), (args, done.stdout)
        assert f"{archive}\\" not in done.stdout, (args, done.stdout)


# --- item 9: the hash-mismatch fix names a command that works -----------------------------------------------------

def test_hash_mismatch_fix_names_archive_verify_with_its_option(demo_archive: Path, tmp_path: Path) -> None:
    shutil.copy(make_wheel(tmp_path, files={"demo/__init__.py": b"VALUE = 2\n"}),
                demo_archive / "demo-1.0-py3-none-any.whl")
    done = cli("install", "--archive", str(demo_archive), "--dry-run", "demo")
    assert done.returncode == 8 and "Traceback" not in done.stderr, done.stderr
    assert f"`jetson-mamba archive verify --archive {demo_archive}`" in done.stderr
    verify = cli("archive", "verify", "--archive", str(demo_archive))  # and that command finds it
    assert verify.returncode == ArchiveError.exit_code and "sha256" in verify.stdout


def test_download_is_refused_outside_its_folder(static_server: Tuple[str, Path], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The containment check of the download itself, behind the file-name check (a manifest is a second way in)."""
    import tempfile

    from jetson_mamba.archive.source import ArchiveSource

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the download folder's parent: this test's own
    url, www = static_server
    make_wheel(www)
    (www / MANIFEST_NAME).write_text(json.dumps({"schema_version": 1, "wheels": []}))
    source = ArchiveSource(url)
    try:
        with pytest.raises(ArchiveError, match="outside the download folder"):
            source._download(url + "demo-1.0-py3-none-any.whl", "../demo-1.0-py3-none-any.whl")
        assert source._downloads is not None and not (source._downloads.parent / "demo-1.0-py3-none-any.whl").exists()
    finally:
        source.close()
    assert source._downloads is None



def test_manifest_that_is_a_fifo_or_sums_that_are_binary(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / MANIFEST_NAME)  # nobody writes: an unbounded blocking read never returns
    assert_one_error(cli("archive", "list", "--archive", str(fifo), timeout=60), ArchiveError.exit_code,
                     "not a readable regular file")
    sums = tmp_path / "sums"
    sums.mkdir()
    make_wheel(sums)
    (sums / "SHA256SUMS").write_bytes(b"\xff\xfe" + b"0" * 64 + b"  demo-1.0-py3-none-any.whl\n")
    done = cli("archive", "list", "--archive", str(sums))
    assert done.returncode == 0 and "demo-1.0-py3" in done.stdout, done.stderr


def test_index_link_with_a_bad_digest(static_server: Tuple[str, Path], tmp_path: Path) -> None:
    url, www = static_server
    (www / "simple/demo").mkdir(parents=True)
    make_wheel(www)
    (www / "simple/index.html").write_text('<a href="demo/">demo</a>')
    (www / "simple/demo/index.html").write_text('<a href="../../demo-1.0-py3-none-any.whl#sha256=[/x]">x</a>')
    temp = tmp_path / "temp"
    temp.mkdir()
    done = cli("install", "--archive", url, "--dry-run", env={"TMPDIR": str(temp)})
    assert_one_error(done, ArchiveError.exit_code, "the digest '[/x]', not a sha256")
    assert list(temp.iterdir()) == []


def test_a_broken_manifest_entry_names_a_command_that_works() -> None:
    """`archive add WHEEL` alone goes to the default archive, not the broken one: the fix names --archive."""
    from jetson_mamba.archive.manifest import WheelRecord

    with pytest.raises(ArchiveError) as caught:
        WheelRecord.from_json({"filename": "demo-1.0-py3-none-any.whl"})
    assert "`jetson-mamba archive add --archive DIR DIR/demo-1.0-py3-none-any.whl`" in caught.value.fix
