"""Conformance: upstream's own, unmodified test files (causal-conv1d, mamba-ssm) run against
jetson-mamba's stand-ins on a chosen backend (`torch`, `triton`), or against the compiled
extensions as the control (`cuda`). `jetson-mamba conformance` runs it; suites.py says what runs,
what may change (the device lines only) and which cases cannot apply, with their reasons.
"""

from __future__ import annotations

from jetson_mamba.conformance.runner import Family, SuiteResult, run_suite
from jetson_mamba.conformance.suites import BACKENDS, SUITES, Suite, suite

__all__ = ["BACKENDS", "SUITES", "Family", "Suite", "SuiteResult", "run_suite", "suite"]
