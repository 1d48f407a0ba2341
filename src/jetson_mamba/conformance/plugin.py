"""pytest plugin loaded (`-p jetson_mamba.conformance.plugin`) into the pytest process that runs one
upstream test file for the conformance runner. The runner passes its settings in the environment
variable JETSON_MAMBA_CONFORMANCE (JSON). With a shard K/N, only the cases of that shard are run and
reported (the sample is chosen over all cases first), so that N shards add up to the unsharded run.

Before upstream's modules import them, the compiled extensions' names in sys.modules get
jetson-mamba's stand-ins (`torch`, `triton` backends) or must be the real compiled modules (`cuda`).
On the CPU, upstream's Triton-only entry points that jetson-mamba replaces off the GPU
(`causal_conv1d_varlen_states`, `selective_state_update`) point at the portable ones, as the
`portable-kernels` patch routes them. Collection applies the sample and the skip rules; every
result goes to a JSON-lines file as soon as it is known, so a case that kills the process is still
reported (the runner restarts pytest after it).
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
from typing import Any, Dict, List, Optional

import pytest

from jetson_mamba.conformance.suites import (
    Case,
    ci_sample,
    cost,
    in_shard,
    sample,
    skip_reason,
    suite,
    uncovered,
)

ENV = "JETSON_MAMBA_CONFORMANCE"
# failures after which the CUDA context is dead: every later case in this process would fail too
CONTEXT_LOST = ("illegal memory access", "CUDA error", "device-side assert", "unspecified launch failure")
PORTABLE = (  # (upstream module, function, jetson-mamba module): upstream's Triton entry points we replace off the GPU
    ("causal_conv1d.causal_conv1d_varlen", "causal_conv1d_varlen_states", "jetson_mamba.ops.ssd"),
    ("mamba_ssm.ops.triton.selective_state_update", "selective_state_update", "jetson_mamba.ops.ssd"),
)

_settings: Dict[str, Any] = {}
_state: Dict[str, Any] = {"session": None, "results": {}}


def _write(record: Dict[str, Any]) -> None:
    with open(_settings["results"], "a") as handle:
        handle.write(json.dumps(record) + "\n")


def _install_extensions(backend: str, names: List[str]) -> None:
    from jetson_mamba.ops import standins

    for name in names:
        if backend != "cuda":
            sys.modules[name] = importlib.import_module(standins.MODULES[name])
            continue
        try:
            module = importlib.import_module(name)
        except ImportError as error:
            raise pytest.UsageError(f"backend cuda needs the compiled {name}: {error}") from None
        if getattr(module, "__jetson_mamba_standin__", False):
            raise pytest.UsageError(f"backend cuda needs the compiled {name}, found jetson-mamba's stand-in")


def _route_portable(packages: List[str]) -> None:
    for module_name, function, ours in PORTABLE:
        if module_name.split(".")[0] in packages:
            setattr(importlib.import_module(module_name), function, getattr(importlib.import_module(ours), function))


def pytest_configure(config: Any) -> None:
    _settings.update(json.loads(os.environ[ENV]))
    chosen = suite(_settings["suite"])
    _install_extensions(_settings["backend"], list(chosen.extensions))
    if _settings["device"] == "cpu":
        _route_portable([package for _, package in chosen.packages])


def _params(item: Any) -> Dict[str, Any]:
    return dict(item.callspec.params) if hasattr(item, "callspec") else {}


def _as_text(value: Any) -> str:
    return str(value) if type(value).__module__ == "torch" else repr(value)


def pytest_collection_modifyitems(config: Any, items: List[Any]) -> None:
    if _settings.get("pin_upstream_autotune") and "mamba_ssm" in sys.modules:
        from jetson_mamba.ops.triton_utils import pin_autotuned_kernels

        pin_autotuned_kernels("mamba_ssm")  # a cold cache compiles one config per SSD kernel, not ~10
    chosen_suite = suite(_settings["suite"])
    backend, device = _settings["backend"], _settings["device"]
    done = set(_settings.get("done", ()))
    cases, reasons = [], {}
    for item in items:
        raw = _params(item)
        case = Case(item.nodeid, getattr(item, "originalname", item.name), {k: _as_text(v) for k, v in raw.items()},
                    cost(raw))
        cases.append(case)
        reasons[item.nodeid] = skip_reason(chosen_suite.name, case.function, case.params, backend, device)
    runnable = [c for c in cases if reasons[c.nodeid] is None]
    full = _settings["sample"] == "full"
    if _settings["sample"] == "ci":
        stride, strides, cover_caps = ci_sample(chosen_suite, backend, device)
        cap = chosen_suite.cap
    else:
        stride, cap, strides, cover_caps = (1 if full else int(_settings["sample"])), float("inf"), {}, {}
    selected = {c.nodeid for c in runnable} if full else sample(runnable, stride, cap, strides, cover_caps)
    shard = tuple(_settings["shard"]) if _settings.get("shard") else None
    mine = {c.nodeid for c in cases if in_shard(c.nodeid, shard)}  # the sample is the unsharded one, then split
    if not done:
        _write({"uncovered": uncovered(runnable, selected)})  # of the whole sample: the same in every shard
        for case in (c for c in cases if c.nodeid in mine):
            _write({"case": case.nodeid, "function": case.function, "params": dict(case.params),
                    "selected": case.nodeid in selected or reasons[case.nodeid] is not None,
                    "skip": reasons[case.nodeid]})
    keep, drop = [], []
    for item in items:
        reason = reasons[item.nodeid]
        if item.nodeid in done or item.nodeid not in mine or (reason is None and item.nodeid not in selected):
            drop.append(item)
            continue
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"not applicable: {reason}"))
        keep.append(item)
    config.hook.pytest_deselected(items=drop)
    items[:] = keep


def pytest_sessionstart(session: Any) -> None:
    _state["session"] = session


class CaseTimeout(Exception):
    """A case ran past the runner's per-case limit (a hung kernel, or one far too slow for this device)."""


def _alarm(signum: int, frame: Any) -> None:
    raise CaseTimeout(f"ran past the per-case limit of {_settings['case_timeout']:.0f} s")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: Any) -> Any:
    limit = float(_settings.get("case_timeout") or 0)
    if limit > 0 and hasattr(signal, "setitimer"):
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, limit)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    else:
        yield


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    _write({"start": nodeid})


def _message(report: Any) -> str:
    """The failing source line, the error, and upstream's printed max-diff lines when there are any."""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = " ".join((crash.message if crash is not None else str(report.longrepr)).split())[:160]
    entries = getattr(getattr(report.longrepr, "reprtraceback", None), "reprentries", None) or []
    lines = getattr(entries[-1], "lines", []) if entries else []
    where = next((" ".join(line[1:].split()) for line in lines if line.startswith(">")), "")
    diffs = [line.strip() for line in (getattr(report, "capstdout", "") or "").splitlines() if "max diff" in line]
    return " | ".join(part for part in (where[:200], text, "; ".join(diffs[-6:])) if part)


def _skip_text(report: Any) -> str:
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        return str(report.longrepr[2]).replace("Skipped: ", "", 1)
    return _message(report)


def pytest_runtest_logreport(report: Any) -> None:
    result: Optional[Dict[str, Any]] = _state["results"].get(report.nodeid)
    if result is None:
        result = _state["results"][report.nodeid] = {"outcome": None, "message": "", "seconds": 0.0}
    result["seconds"] += getattr(report, "duration", 0.0)
    if hasattr(report, "wasxfail"):
        result["outcome"] = result["outcome"] or ("skipped" if report.skipped else "passed")
        result["message"] = result["message"] or f"xfail: {report.wasxfail}"
    elif report.failed and result["outcome"] != "failed":
        result["outcome"], result["message"] = "failed", f"{report.when}: {_message(report)}"
    elif report.skipped and result["outcome"] is None:
        result["outcome"], result["message"] = "skipped", _skip_text(report)
    elif report.when == "call" and report.passed and result["outcome"] is None:
        result["outcome"] = "passed"
    if report.when != "teardown":
        return
    _write({"result": report.nodeid, "outcome": result["outcome"] or "failed", "message": result["message"],
            "seconds": round(result["seconds"], 3)})
    if result["outcome"] == "failed" and any(text in result["message"] for text in CONTEXT_LOST):
        _write({"restart": report.nodeid, "why": "the CUDA context is lost after this failure"})
        if _state["session"] is not None:
            _state["session"].shouldstop = "CUDA context lost: the runner restarts pytest for the remaining cases"


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    _write({"finished": int(exitstatus)})
