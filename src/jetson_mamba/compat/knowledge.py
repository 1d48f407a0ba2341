"""Version knowledge about mamba-ssm, causal-conv1d and their surroundings, as data.

Every number here was measured or read from the upstream sources (see
../shared/measurements/); the findings, build defaults and patches decide from it.
"""

from __future__ import annotations

from typing import Optional, Tuple

from packaging.version import InvalidVersion, Version

# causal-conv1d 1.5.1 changed its compiled API to output buffers (fwd 8, bwd 12, update 8
# arguments, returning nothing) and added old-style wrappers in `causal_conv1d.cpp_functions`.
CAUSAL_CONV1D_NEW_API = Version("1.5.1")
# mamba-ssm 2.2.5 switched from the compiled calls to `causal_conv1d.cpp_functions`.
MAMBA_USES_CPP_FUNCTIONS = Version("2.2.5")
# transformers 5 removed GreedySearchDecoderOnlyOutput / SampleDecoderOnlyOutput, which
# mamba-ssm <= 2.2.x imports in mamba_ssm/utils/generation.py (2.3 imports the new names).
TRANSFORMERS_WITHOUT_OLD_OUTPUTS = Version("5")
MAMBA_NEW_GENERATION_OUTPUTS = Version("2.3")
# mamba-ssm < 2.3: Mamba2's backward keeps one column block's partial D gradient when the autotuner
# picks BLOCK_SIZE_N < headdim (2.3 sums them with an atomic add)
MAMBA_SUMS_SSD_DD = Version("2.3")
# mamba-ssm 2.3 requires tilelang, apache-tvm-ffi and quack-kernels, which have no aarch64 wheels.
MAMBA_HEAVY_DEPENDENCIES = Version("2.3")
# mamba-ssm <= 2.2.5 uses cub::LaneId / cub::CTA_SYNC, removed in CUDA 13's CCCL 3.
MAMBA_CUDA13_FIXED = Version("2.2.6")

# The pair `build` makes by default and `install` recommends, in dependency order.
TESTED_PAIR: Tuple[Tuple[str, str], ...] = (("causal-conv1d", "1.6.0"), ("mamba-ssm", "2.2.5"))

# The triton each torch release requires on Linux (its own Requires-Dist, read from the package
# index's metadata for torch 2.0.1 ... 2.14.1): another triton breaks torch.compile and Triton kernels.
TRITON_FOR_TORCH = {
    (2, 0): "2.0.0", (2, 1): "2.1.0", (2, 2): "2.2.0", (2, 3): "2.3.1", (2, 4): "3.0.0", (2, 5): "3.1.0",
    (2, 6): "3.2.0", (2, 7): "3.3.1", (2, 8): "3.4.0", (2, 9): "3.5.1", (2, 10): "3.6.0", (2, 11): "3.6.0",
    (2, 12): "3.7.0", (2, 14): "3.8.0",
}


def triton_for_torch(torch_version: Optional[str]) -> Optional[str]:
    """The triton release that torch's own metadata pins for its minor, or None when not known."""
    parsed = parse_version(torch_version)
    return None if parsed is None else TRITON_FOR_TORCH.get((parsed.major, parsed.minor))


# nvcc 13 dropped these targets (Maxwell, Pascal, Volta incl. Xavier's sm_72).
CUDA13_DROPPED_ARCHS = ("5.0", "5.2", "5.3", "6.0", "6.1", "6.2", "7.0", "7.2")

# Measured peak resident memory of one nvcc process compiling these kernels (2.1 GB), in MB.
NVCC_PEAK_MB = 2100


def parse_version(text: Optional[str]) -> Optional[Version]:
    """A comparable version without its local label ("2.2.5+cu130.sm90" -> 2.2.5), or None."""
    if not text:
        return None
    try:
        return Version(Version(text).public)
    except InvalidVersion:
        return None


def causal_conv1d_has_new_api(version: Optional[str]) -> Optional[bool]:
    parsed = parse_version(version)
    return None if parsed is None else parsed >= CAUSAL_CONV1D_NEW_API


def mamba_uses_cpp_functions(version: Optional[str]) -> Optional[bool]:
    parsed = parse_version(version)
    return None if parsed is None else parsed >= MAMBA_USES_CPP_FUNCTIONS


def recommended_max_jobs(cpu_count: int, available_mb: int, swap_free_mb: int) -> int:
    """Parallel nvcc processes that fit in memory: ~2.1 GB each, one core each, at least one."""
    by_memory = (available_mb + swap_free_mb // 2) // NVCC_PEAK_MB
    return max(1, min(cpu_count, by_memory))
