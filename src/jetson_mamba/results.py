"""Typed results and their `--json` documents.

Every reporting command's result is a frozen dataclass made below `cli/`; `cli/` renders it for people,
and `--json` is `document(result)`: `dataclasses.asdict` of the same object plus a top-level
`"schema_version"`, so a tool reading the JSON sees exactly what the text was made from.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any, Dict

# Raised when a key is renamed or removed, or its meaning changes; new keys keep the version.
SCHEMA_VERSION = 1


def json_ready(value: Any) -> Any:
    """JSON has no NaN or Infinity: a non-finite float is null (the result's message says why)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    return value


def document(result: Any, **extra: Any) -> Dict[str, Any]:
    """The `--json` document of a typed result: its fields, then `extra` (derived values such as "ok")."""
    return {"schema_version": SCHEMA_VERSION, **json_ready({**asdict(result), **extra})}
