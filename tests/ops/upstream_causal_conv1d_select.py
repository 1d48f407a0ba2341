"""pytest plugin for the upstream causal-conv1d suite run on the CPU: a fixed, representative subset.

The full parametrisation is 13,300 cases, hours of CPU time. This keeps every test function, a
deterministic sample of each one's cases (every parameter value still appears many times), drops
the few cases whose tensors are too large for a CPU in CI, and deselects the 10,000-iteration GPU
race-condition loop. The sample is chosen by a hash of the test id, so it is the same on every run.
"""

from __future__ import annotations

import zlib
from typing import Any, Dict, List, Tuple

import pytest

# test function -> (keep one case in N, largest dim * seqlen kept: bigger cases take tens of seconds on a CPU)
KEEP: Dict[str, Tuple[int, int]] = {
    "test_causal_conv1d": (24, 4128 * 64),
    "test_causal_conv1d_update": (16, 4096 * 5),
    "test_causal_conv1d_update_with_batch_gather": (16, 4096 * 5),
    "test_causal_conv1d_update_with_padding": (12, 4096 * 5),
    "test_causal_conv1d_varlen": (16, 4128 * 32),
    "test_causal_conv1d_varlen_padding": (6, 64 * 1024),
}
DESELECTED_REASON = {
    "test_causal_conv1d_race_condition": "10,000 forward+backward passes at (2, 4128, 2048) looking for GPU races: hours on a CPU",
}
# Known gaps of jetson_mamba's implementation: expected to fail (strict, so a fix shows up as XPASS).
KNOWN_GAPS: Dict[str, str] = {}


def pytest_collection_modifyitems(config: Any, items: List[Any]) -> None:
    keep, drop = [], []
    for item in items:
        name = item.originalname if hasattr(item, "originalname") else item.name
        params = item.callspec.params if hasattr(item, "callspec") else {}
        one_in, largest = KEEP.get(name, (1, 0))
        if name in DESELECTED_REASON:
            drop.append(item)
        elif name in KEEP and params.get("dim", 0) * params.get("seqlen", 0) > largest:
            drop.append(item)
        elif zlib.crc32(item.nodeid.encode()) % one_in:
            drop.append(item)
        else:
            if name in KNOWN_GAPS:
                item.add_marker(pytest.mark.xfail(reason=KNOWN_GAPS[name], strict=True))
            keep.append(item)
    config.hook.pytest_deselected(items=drop)
    items[:] = keep
