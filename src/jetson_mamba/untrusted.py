"""Input from outside (index pages, wheels, manifests, device roots, URLs): containment and bounded reads.

A path from outside is resolved and checked for containment (`is_within`), never by a string
prefix: `/srv/a1-secret` starts with `/srv/a1` but is not inside it. A file from outside is read
only if it is a regular file, and at most `limit` bytes of it (`read_bounded`): a link to
`/dev/zero` or a FIFO in a device image must not hang or exhaust memory; a file of a device image is read
only where it resolves inside the image (`read_within`): a link to a host file must not show its contents.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


def is_within(path: PathLike, root: PathLike) -> bool:
    """Whether `path`, with links and `..` resolved, is `root` or below it (Python 3.8's is_relative_to)."""
    try:
        Path(path).resolve().relative_to(Path(root).resolve())
    except ValueError:
        return False
    return True


def read_bounded(path: PathLike, limit: int) -> Optional[bytes]:
    """The first `limit` bytes of a regular file; None if it is missing, unreadable or not a regular file.

    Opened non-blocking, so a FIFO never blocks; a device (`/dev/zero`) or directory is refused by its type.
    """
    try:
        handle = os.open(str(path), os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            return None
        chunks = []
        left = limit
        while left > 0:
            chunk = os.read(handle, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(handle)


def read_within(root: PathLike, path: PathLike, limit: int) -> Optional[bytes]:
    """`read_bounded` of `path` (relative to `root`, or absolute below it), None where it resolves outside `root`."""
    full = Path(path) if Path(path).is_absolute() else Path(root) / path
    return read_bounded(full, limit) if is_within(full, root) else None
