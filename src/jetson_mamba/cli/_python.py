"""`--python PATH` checked before anything runs it: a missing interpreter is a usage error, not a
report about a broken torch (doctor said "pip install torch" for `--python /nonexistent`)."""

from __future__ import annotations

import os
import shutil
from typing import Optional

from jetson_mamba.errors import UsageError

_FIX = "pass the path of a Python 3.8+ interpreter, e.g. --python /path/to/venv/bin/python, or leave --python out " \
       "to use the one running jetson-mamba"


def checked_python(path: Optional[str]) -> Optional[str]:
    """`path` if it names an executable file (or a command on PATH); else UsageError with the fix."""
    if path is None:
        return None
    found = path if os.sep in path else shutil.which(path)
    if not found or not os.path.isfile(found):
        raise UsageError(f"--python {path}: no such interpreter", _FIX)
    if not os.access(found, os.X_OK):
        raise UsageError(f"--python {path} is not executable", _FIX)
    return path
