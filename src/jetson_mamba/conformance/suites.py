"""Which upstream test files the conformance runner runs, what it may change in them, and which
cases cannot apply (each with its reason). Pure data and pure functions: nothing here touches the
system.

A suite is one upstream test file, run unmodified except for its device lines (`device = "cuda"` ->
the device under test). Upstream's own Python library (causal-conv1d, mamba-ssm) comes from the
same release's sdist; the compiled extensions it imports (`causal_conv1d_cuda`,
`selective_scan_cuda`) are jetson-mamba's stand-ins for the `torch` and `triton` backends and the
real compiled modules for `cuda` (the control).
"""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

BACKENDS = ("torch", "triton", "cuda")
CONV_16 = "sdists/causal_conv1d-1.6.0.tar.gz"
CONV_17 = "sdists/causal_conv1d-1.7.0.tar.gz"
MAMBA = "sdists/mamba_ssm-2.3.2.post1.tar.gz"
MAMBA_TESTS = "upstream/mamba-v2.3.2.post1-tests.tar.gz"
EXTENSIONS = {"causal_conv1d": "causal_conv1d_cuda", "mamba_ssm": "selective_scan_cuda"}


@dataclass(frozen=True)
class Suite:
    """One upstream test file and the upstream packages it imports."""

    name: str
    archive: str  # relative to the shared folder
    member: str  # the test file: the archive member whose path ends with this
    packages: Tuple[Tuple[str, str], ...]  # (sdist relative to the shared folder, top-level package)
    # the fixed CI sample: keep one case in `stride` (hash of the test id) among cases costing at most
    # `cap` (product of the integer parameters), then add the cheapest case of every parameter value
    # the hash missed
    stride: int = 1
    cap: float = float("inf")
    strides: Mapping[str, int] = field(default_factory=dict)  # per test function, overrides stride
    # under the Triton interpreter (~100x slower than the torch backend on a CPU): the cover alone, from
    # cases costing at most this (per test function, "" for the others; with none under it, the single
    # cheapest case); values found only in bigger cases are listed as not covered there
    interpret_caps: Mapping[str, float] = field(default_factory=dict)

    @property
    def extensions(self) -> Tuple[str, ...]:
        return tuple(EXTENSIONS[package] for _, package in self.packages)


def _mamba(name: str, member: str, stride: int = 1, cap: float = float("inf"),
           interpret_caps: Optional[Mapping[str, float]] = None) -> Suite:
    return Suite(name, MAMBA_TESTS, member, ((MAMBA, "mamba_ssm"), (CONV_17, "causal_conv1d")), stride, cap,
                 interpret_caps=interpret_caps or {})


# Interpreted (2-core CPU, 2026-12-06): test_causal_conv1d at (64, 32, width 2) ~8 s; varlen (batch 3) at
# seqlen 16 ~5 s, 32 ~25 s, 64 ~42 s; varlen_initial_states (batch 2, dim 64 in its body) at seqlen 8 ~9-16 s,
# 151 ~137 s; varlen_padding's cheapest (64, 128, 2) ~26 s: its seqlen starts at 128, and three cases cover
# its widths and dtypes. The update tests (batch 64 x dim >= 2048 in their bodies) fit since the interpreted
# update kernel takes 1024 channels a program: 12 cases ~50 s.
_CONV_INTERPRET = {"": 64 * 32 * 4, "test_causal_conv1d_varlen": 64 * 16 * 4,
                   "test_causal_conv1d_varlen_initial_states": 8 * 4,
                   "test_causal_conv1d_varlen_padding": 64 * 128 * 4}

SUITES: Tuple[Suite, ...] = (
    Suite("causal-conv1d-1.6.0", CONV_16, "tests/test_causal_conv1d.py", ((CONV_16, "causal_conv1d"),),
          stride=96, cap=4128 * 512 * 4, strides={"test_causal_conv1d_update": 64,
                                                  "test_causal_conv1d_update_with_batch_gather": 64,
                                                  "test_causal_conv1d_update_with_padding": 48,
                                                  "test_causal_conv1d_get_states": 9},
          interpret_caps=_CONV_INTERPRET),
    Suite("causal-conv1d-1.7.0", CONV_17, "tests/test_causal_conv1d.py", ((CONV_17, "causal_conv1d"),),
          stride=96, cap=4128 * 512 * 4, strides={"test_causal_conv1d_update": 64,
                                                  "test_causal_conv1d_update_with_batch_gather": 64,
                                                  "test_causal_conv1d_update_with_padding": 48,
                                                  "test_causal_conv1d_get_states": 9,
                                                  "test_causal_conv1d_varlen_initial_states": 24},
          interpret_caps=_CONV_INTERPRET),
    # interpreted: the cover of seqlen 128-1024 (4 cases: each seqlen, both varBC_groups; 2048 and 4096 are
    # listed as not covered) and mamba_inner_fn's (seqlen 128 only: 2 cases cover is_variable_B/C; its complex
    # A cases skip). Per case (2-core CPU, shared, nice, 2026-12-06): test_selective_scan 50-75 s at seqlen
    # 128 and mamba_inner_fn (dim 768) past 300 s before the interpreter's fast paths and wide plan
    # (ops/triton_utils.py), now 3.3 s at 128, 11 s at 256, 17 s at 512, 34 s at 1024 (2048 and 4096 would add
    # ~70 and ~140 s), mamba_inner_fn 3.3-3.5 s; the lane 83 s wall (71 s CPU) with `jetson-mamba conformance`.
    _mamba("mamba-selective-scan", "tests/ops/test_selective_scan.py", stride=3, cap=2048,
           interpret_caps={"": 1024}),
    _mamba("mamba-ssd", "tests/ops/triton/test_ssd.py"),
    _mamba("mamba-state-update", "tests/ops/triton/test_selective_state_update.py", stride=12),
    _mamba("mamba-layernorm-gated", "tests/ops/triton/test_layernorm_gated.py"),
    _mamba("mamba-generation", "tests/test_generation.py"),
    _mamba("mamba-determinism", "tests/test_determinism.py"),
)


def suite(name: str) -> Suite:
    """The suite called `name` (a ValueError naming the known ones otherwise)."""
    for candidate in SUITES:
        if candidate.name == name:
            return candidate
    raise ValueError(f"no conformance suite {name!r}; known: {', '.join(s.name for s in SUITES)}")


_DEVICE_LINE = re.compile(r"""^(?P<head>\s*device\s*=\s*)(?P<q>["'])cuda(?P=q)(?P<tail>\s*(?:#.*)?)$""", re.M)


def rewrite(source: str, device: str) -> Tuple[str, int]:
    """Upstream's test file with its `device = "cuda"` lines pointed at `device`, and how many."""
    if device == "cuda":
        return source, len(_DEVICE_LINE.findall(source))
    return _DEVICE_LINE.subn(lambda m: f"{m['head']}{m['q']}{device}{m['q']}{m['tail']}", source)


@dataclass(frozen=True)
class Rule:
    """Cases that cannot apply here, and why (they are reported as skipped with this reason)."""

    suites: Tuple[str, ...]  # suite names, or () for all
    functions: Tuple[str, ...]  # test functions, or () for all
    reason: str
    params: Mapping[str, str] = field(default_factory=dict)  # parameter -> repr of the value it must have
    devices: Tuple[str, ...] = ()  # device types where it applies, () for all
    backends: Tuple[str, ...] = ()  # backends where it applies, () for all

    def applies(self, suite_name: str, function: str, params: Mapping[str, str], backend: str, device: str) -> bool:
        return ((not self.suites or suite_name in self.suites) and (not self.functions or function in self.functions)
                and all(params.get(k) == v for k, v in self.params.items())
                and (not self.devices or device in self.devices) and (not self.backends or backend in self.backends))


_CONV = ("causal-conv1d-1.6.0", "causal-conv1d-1.7.0")
RULES: Tuple[Rule, ...] = (
    Rule(_CONV, ("test_causal_conv1d_race_condition",),
         "a GPU race detector (10,000 forward+backward passes at (2, 4128, 2048)): excluded from every run"),
    Rule(("mamba-selective-scan",), ("test_selective_scan", "test_mamba_inner_fn"),
         "complex A (complex64 weights): jetson-mamba's kernels support real A only",
         params={"wtype": "torch.complex64"}, backends=("torch", "triton")),
    Rule(("mamba-ssd",), ("test_chunk_state_varlen",),
         "tests mamba_ssm's internal Triton kernels (_chunk_cumsum_fwd, _chunk_state_fwd, chunk_state_varlen), "
         "which jetson-mamba does not replace: they need a GPU (on the GPU they run upstream's kernels on every backend)",
         devices=("cpu",)),
    Rule(("mamba-layernorm-gated",), ("test_layer_norm_gated",),
         "layernorm_fn is mamba_ssm's own Triton kernel (jetson-mamba replaces only rmsnorm_fn off the GPU): "
         "it needs a GPU (on the GPU it runs upstream's kernel on every backend)", devices=("cpu",)),
    Rule(("mamba-state-update",), ("test_selective_state_update_with_batch_indices",),
         "bf16 on the CPU's random numbers: upstream's reference rounds the new state to bf16 before C.state, its "
         "Triton kernel (and jetson-mamba's drop-in, the same fp32 math) does not; here that rounding alone is a "
         "0.25 max diff, over the test's 6e-2 tolerance (on the GPU's random numbers the case runs)",
         params={"dim": "2048", "dstate": "64", "has_z": "True", "itype": "torch.bfloat16"}, devices=("cpu",)),
    Rule(("mamba-generation",), (),
         "generate(cg=True) captures CUDA graphs and Mamba2 runs mamba_ssm's own Triton SSD kernels: needs a GPU",
         devices=("cpu",)),
)


def ci_sample(chosen: Suite, backend: str, device: str) -> Tuple[int, Mapping[str, int], Mapping[str, float]]:
    """(stride, per-function strides, per-function cover caps) of the fixed CI sample. The Triton
    interpreter is ~100x slower than the torch backend on a CPU: there the sample is the cover alone
    (stride 0) among cases up to the suite's interpret_caps."""
    if backend == "triton" and device == "cpu":
        return 0, {}, chosen.interpret_caps
    return chosen.stride, chosen.strides, {}


def skip_reason(suite_name: str, function: str, params: Mapping[str, str], backend: str, device: str
                ) -> Optional[str]:
    """Why this case cannot apply on this backend and device, or None."""
    for rule in RULES:
        if rule.applies(suite_name, function, params, backend, device):
            return rule.reason
    return None


@dataclass(frozen=True)
class Case:
    """One collected test case: its id, test function and parameters (values as repr strings)."""

    nodeid: str
    function: str
    params: Mapping[str, str]
    cost: float


def cost(params: Mapping[str, Any]) -> float:
    """Product of a case's integer size parameters (dim, seqlen, width...): how big its tensors are.
    Group counts (varBC_groups, ngroups) split the same tensors into groups: they are not sizes."""
    total = 1.0
    for name, value in params.items():
        if isinstance(value, int) and not isinstance(value, bool) and value > 0 and not name.endswith("groups"):
            total *= value
    return total


def _hash(nodeid: str) -> int:
    return zlib.crc32(nodeid.encode())


def parse_shard(text: str) -> Tuple[int, int]:
    """`K/N` -> (K, N) with 1 <= K <= N (a ValueError saying what is wrong otherwise)."""
    head, _, tail = text.partition("/")
    if not (head.strip().isdigit() and tail.strip().isdigit()) or not 1 <= int(head) <= int(tail):
        raise ValueError(f"--shard {text!r} is not K/N with 1 <= K <= N")
    return int(head), int(tail)


def in_shard(nodeid: str, shard: Optional[Tuple[int, int]]) -> bool:
    """Whether the case belongs to shard K of N (None: no sharding). The hash is SHA-1 of the id,
    independent of the sample's CRC-32, so that a sample's one-in-`stride` cases spread over all shards."""
    if shard is None:
        return True
    k, n = shard
    return int.from_bytes(hashlib.sha1(nodeid.encode()).digest()[:8], "big") % n == k - 1


def sample(cases: Sequence[Case], stride: int, cap: float, strides: Optional[Mapping[str, int]] = None,
           cover_caps: Optional[Mapping[str, float]] = None) -> Set[str]:
    """The node ids of a deterministic sample: every test function and every value of each of its
    parameters at least once.

    Per function: the cases whose id hashes to 0 mod its stride among those costing at most `cap`
    (none for a stride of 0), then cases that add the most (parameter, value) pairs not yet covered
    (the cheapest among equals, ties by hash) until every value found in cases costing at most the
    function's cover cap (`cover_caps[function]`, else `cover_caps[""]`, else no cap) is.
    """
    chosen: Set[str] = set()
    by_function: Dict[str, List[Case]] = {}
    for case in cases:
        by_function.setdefault(case.function, []).append(case)
    for function, group in by_function.items():
        one_in = (strides or {}).get(function, stride)
        by_cost = sorted(group, key=lambda c: (c.cost, _hash(c.nodeid)))
        caps = cover_caps or {}
        cover_cap = caps.get(function, caps.get("", float("inf")))
        ordered = [c for c in by_cost if c.cost <= cover_cap]
        picked = [c for c in group if one_in > 0 and c.cost <= cap and _hash(c.nodeid) % one_in == 0] or by_cost[:1]
        covered = {(k, v) for c in picked for k, v in c.params.items()}
        wanted = {(k, v) for c in ordered for k, v in c.params.items()} - covered
        while wanted:  # greedy set cover: the case with the most missing values, the cheapest among those
            best = max(ordered, key=lambda c: (len(wanted & set(c.params.items())), -c.cost, -_hash(c.nodeid)))
            picked.append(best)
            wanted -= set(best.params.items())
        chosen.update(c.nodeid for c in picked)
    return chosen


def uncovered(cases: Iterable[Case], chosen: Set[str]) -> List[str]:
    """`function: parameter=value` for every value that no chosen case has (empty for a good sample)."""
    all_values: Set[Tuple[str, str, str]] = set()
    seen: Set[Tuple[str, str, str]] = set()
    for case in cases:
        values = {(case.function, k, v) for k, v in case.params.items()} | {(case.function, "", "")}
        all_values |= values
        if case.nodeid in chosen:
            seen |= values
    return sorted(f"{f}: {k}={v}" if k else f for f, k, v in all_values - seen)
