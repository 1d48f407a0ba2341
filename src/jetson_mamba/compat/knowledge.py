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

# The highest `-std=c++NN` each nvcc accepts (CUDA 11 added C++17, CUDA 12 C++20): JetPack 4's
# nvcc 10.2 cannot compile causal-conv1d / mamba-ssm (C++17) and nvcc 11.x cannot take torch >= 2.14's
# C++20 headers.
NVCC_MAX_CXX_STD: Tuple[Tuple[Version, int], ...] = ((Version("12.0"), 20), (Version("11.0"), 17), (Version("0"), 14))

# (first CUDA release, lowest arch, highest arch) each nvcc targets, from NVIDIA's release notes:
# 11.0 dropped sm_30, 11.4 added Orin's sm_87, 11.8 sm_89/sm_90, 12.0 dropped sm_35/sm_37, 12.8
# added Blackwell, 13.0 dropped sm_50..sm_72 (CUDA13_DROPPED_ARCHS).
NVCC_ARCH_RANGES: Tuple[Tuple[Version, str, str], ...] = (
    (Version("13.0"), "7.5", "12.1"), (Version("12.9"), "5.0", "12.1"), (Version("12.8"), "5.0", "12.0"),
    (Version("12.0"), "5.0", "9.0"), (Version("11.8"), "3.5", "9.0"), (Version("11.4"), "3.5", "8.7"),
    (Version("11.1"), "3.5", "8.6"), (Version("11.0"), "3.5", "8.0"), (Version("0"), "3.0", "7.5"))


def nvcc_max_cxx_std(cuda_version: Optional[str]) -> Optional[int]:
    """The newest C++ standard nvcc `cuda_version` accepts, or None when the version is unknown."""
    parsed = parse_version(cuda_version)
    return None if parsed is None else next(std for first, std in NVCC_MAX_CXX_STD if parsed >= first)


def nvcc_arch_range(cuda_version: str) -> Optional[Tuple[str, str]]:
    """(lowest, highest) compute capability nvcc `cuda_version` compiles for, or None when unparseable."""
    parsed = parse_version(cuda_version)
    if parsed is None:
        return None
    return next((low, high) for first, low, high in NVCC_ARCH_RANGES if parsed >= first)


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
