"""Known failure modes, checked against a `MachineInfo`: the knowledge base behind `doctor`.

`diagnose_machine` is a pure function, so every rule is tested on hand-built machine descriptions.
Each finding has a stable id, a severity, what is wrong and the concrete fix.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Callable, Dict, FrozenSet, Iterable, List, Optional

from jetson_mamba.compat import knowledge
from jetson_mamba.compat.runtime_patches import CAUSAL_CONV1D_BRIDGE as PATCH_CAUSAL_CONV1D_BRIDGE
from jetson_mamba.compat.runtime_patches import MAMBA3_LAZY as PATCH_MAMBA3_LAZY
from jetson_mamba.compat.runtime_patches import NO_DISTRIBUTED as PATCH_NO_DISTRIBUTED
from jetson_mamba.compat.runtime_patches import PORTABLE as PATCH_PORTABLE
from jetson_mamba.compat.runtime_patches import SSD_DD as PATCH_SSD_DD
from jetson_mamba.compat.runtime_patches import TRANSFORMERS5 as PATCH_TRANSFORMERS5
from jetson_mamba.probe import fatbin
from jetson_mamba.probe.model import ExtensionInfo, MachineInfo

SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Finding:
    id: str
    severity: str  # error, warning, info
    message: str
    fix: str

    def to_json(self) -> Dict[str, str]:
        return asdict(self)


Rule = Callable[[MachineInfo, FrozenSet[str]], Iterable[Finding]]
_RULES: List[Rule] = []


def rule(function: Rule) -> Rule:
    _RULES.append(function)
    return function


def _arch_flag(arch: str) -> str:
    return f"jetson-mamba build --arch {arch}"


@rule
def _no_torch(machine: MachineInfo, _applied: FrozenSet[str]) -> Iterable[Finding]:
    if machine.torch.version is not None:
        return
    cause = machine.torch.error or "torch is not installed"
    fix = ("install NVIDIA's PyTorch wheel for your JetPack release (jetson-mamba never installs torch)"
           if machine.jetson else "install PyTorch for this machine, e.g. `pip install torch`")
    yield Finding("torch-missing", "warning", f"torch cannot be imported by {machine.torch.python}: {cause}", fix)


@rule
def _cpu_only_torch(machine: MachineInfo, _applied: FrozenSet[str]) -> Iterable[Finding]:
    torch = machine.torch
    if torch.version is None or machine.gpu is None or torch.cuda_available:
        return
    why = "is a CPU-only build" if torch.cuda is None else f"was built for CUDA {torch.cuda} but sees no GPU"
    fix = ("install NVIDIA's JetPack PyTorch wheel (a PyPI aarch64 torch is CPU-only), e.g. with "
           "`pip install --no-deps <the JetPack torch wheel>`" if machine.jetson
           else "install a CUDA build of torch that matches the driver, or check `nvidia-smi` and CUDA_VISIBLE_DEVICES")
    yield Finding("torch-cpu-only", "error",
                  f"this machine has a GPU ({machine.gpu.name}, sm_{(machine.gpu.arch or '?').replace('.', '')}) "
                  f"but torch {torch.version} {why}: every kernel falls back to the CPU", fix)


@rule
def _incompatible_pair(machine: MachineInfo, applied: FrozenSet[str]) -> Iterable[Finding]:
    mamba = machine.packages.version("mamba-ssm")
    conv = machine.packages.version("causal-conv1d")
    if not mamba or not conv or PATCH_CAUSAL_CONV1D_BRIDGE in applied:
        return
    uses_wrappers = knowledge.mamba_uses_cpp_functions(mamba)
    new_api = knowledge.causal_conv1d_has_new_api(conv)
    if uses_wrappers is False and new_api:
        yield Finding(
            "incompatible-pair", "error",
            f"mamba-ssm {mamba} calls causal-conv1d's compiled API directly, but causal-conv1d {conv} changed it "
            "(output buffers since 1.5.1): the fused Mamba/Mamba2 paths die with "
            "`TypeError: causal_conv1d_fwd(): incompatible function arguments`",
            "`jetson-mamba patch` (bridges both APIs), or use mamba-ssm >= 2.2.5",
        )
    elif uses_wrappers and new_api is False:
        yield Finding(
            "incompatible-pair", "error",
            f"mamba-ssm {mamba} imports causal_conv1d.cpp_functions, which causal-conv1d {conv} lacks (added in "
            "1.5.1): the fused path is silently disabled or fails with `'NoneType' object is not callable`",
            "`jetson-mamba patch`, or install causal-conv1d >= 1.5.1",
        )


def _import_failure_cause(error: str) -> tuple:
    """(what it means, fix) for an extension's import error."""
    if "undefined symbol" in error:
        return ("it was built against another torch version or C++ ABI than the installed one",
                "rebuild it against this torch: `jetson-mamba build`")
    if re.search(r"libc10\.so|libtorch", error):
        return ("the torch libraries it links against cannot be found (torch missing, or imported after it)",
                "import torch first, and make sure the torch it was built with is installed")
    if re.search(r"libcudart\.so|libcublas|libcuda\.so", error):
        return ("the CUDA runtime it was built with is not on this machine",
                "rebuild against the installed CUDA toolkit: `jetson-mamba build`")
    if "GLIBC" in error:
        return ("it was built on a newer Linux than this one", "build it on this machine: `jetson-mamba build`")
    return ("it cannot be imported", "reinstall it: `jetson-mamba install`, or rebuild with `jetson-mamba build`")


@rule
def _extension_import_errors(machine: MachineInfo, _applied: FrozenSet[str]) -> Iterable[Finding]:
    for extension in machine.packages.extensions:
        if extension.importable or not extension.error:
            continue
        meaning, fix = _import_failure_cause(extension.error)
        yield Finding("extension-import-error", "error",
                      f"{extension.module} ({extension.path}) fails to import: {extension.error} — {meaning}", fix)


def _missing_arch(extension: ExtensionInfo, arch: str) -> Optional[str]:
    if extension.archs is None:
        return None
    ok, _how = fatbin.runs_on(extension.archs, arch)
    if ok:
        return None
    contained = ", ".join([f"sm_{a.replace('.', '')}" for a in extension.archs.sass]
                          + [f"compute_{a.replace('.', '')}" for a in extension.archs.ptx]) or "nothing"
    return contained


@rule
def _extension_lacks_arch(machine: MachineInfo, _applied: FrozenSet[str]) -> Iterable[Finding]:
    if machine.gpu is None or not machine.gpu.arch:
        return
    arch = machine.gpu.arch
    for extension in machine.packages.extensions:
        contained = _missing_arch(extension, arch)
        if contained is None:
            continue
        yield Finding(
            "extension-missing-arch", "error",
            f"{extension.module} has no code for this GPU (sm_{arch.replace('.', '')}); it contains {contained}: "
            "every kernel launch will fail with `no kernel image is available for execution on the device`",
            _arch_flag(arch),
        )


@rule
def _missing_extensions(machine: MachineInfo, applied: FrozenSet[str]) -> Iterable[Finding]:
    expected = {"mamba-ssm": "selective_scan_cuda", "causal-conv1d": "causal_conv1d_cuda"}
    routed = "" if PATCH_PORTABLE in applied else "`jetson-mamba patch` routes them to the portable backends; "
    for distribution, module in expected.items():
        if machine.packages.version(distribution) and machine.packages.extension(module) is None:
            yield Finding(
                "extension-not-compiled", "warning",
                f"{distribution} {machine.packages.version(distribution)} is installed without its compiled "
                f"{module}: kernels run on jetson-mamba's portable (Triton/torch) backends",
                f"{routed}for the compiled kernels: "
                + (_arch_flag(machine.gpu.arch) if machine.gpu and machine.gpu.arch else "`jetson-mamba build`"),
            )


@rule
def _no_cuda_toolkit(machine: MachineInfo, _applied: FrozenSet[str]) -> Iterable[Finding]:
    if machine.cuda.nvcc is not None or machine.gpu is None:
        return
    fix = ("install the CUDA toolkit from JetPack (`sudo apt install nvidia-jetpack` or `cuda-toolkit-*`) and "
           "`export CUDA_HOME=/usr/local/cuda PATH=/usr/local/cuda/bin:$PATH`" if machine.jetson else
           "install the CUDA toolkit matching torch's CUDA and set CUDA_HOME")
    yield Finding("cuda-toolkit-missing", "warning",
                  "no CUDA toolkit (nvcc) found in $CUDA_HOME, $CUDA_PATH, /usr/local/cuda* or on PATH: "
                  "compiled kernels cannot be built here (prebuilt wheels and the Triton backend still work)", fix)


@rule
def _distributed(machine: MachineInfo, applied: FrozenSet[str]) -> Iterable[Finding]:
    torch = machine.torch
    if torch.version is None or not torch.distributed_missing or PATCH_NO_DISTRIBUTED in applied:
        return
    what = ("torch.distributed is unavailable" if torch.distributed_available is False
            else "torch.distributed lacks " + ", ".join(torch.distributed_missing))
    severity = "error" if machine.packages.version("mamba-ssm") else "warning"
    yield Finding("torch-distributed-missing", severity,
                  f"{what} in torch {torch.version}: `import mamba_ssm` fails at import time "
                  "(mamba_ssm/distributed imports these names)",
                  "`jetson-mamba patch` (makes the import lazy; distributed features then raise a clear error)")


@rule
def _transformers5(machine: MachineInfo, applied: FrozenSet[str]) -> Iterable[Finding]:
    mamba = knowledge.parse_version(machine.packages.version("mamba-ssm"))
    transformers = knowledge.parse_version(machine.packages.version("transformers"))
    if mamba is None or transformers is None or PATCH_TRANSFORMERS5 in applied:
        return
    if transformers >= knowledge.TRANSFORMERS_WITHOUT_OLD_OUTPUTS and mamba < knowledge.MAMBA_NEW_GENERATION_OUTPUTS:
        yield Finding(
            "transformers5-import", "error",
            f"`import mamba_ssm` {mamba} fails with transformers {transformers}: "
            "`cannot import name 'GreedySearchDecoderOnlyOutput' from 'transformers.generation'`",
            "`jetson-mamba patch` (imports the new output classes), or `pip install 'transformers<5'`",
        )


@rule
def _mamba2_d_gradient(machine: MachineInfo, applied: FrozenSet[str]) -> Iterable[Finding]:
    mamba = knowledge.parse_version(machine.packages.version("mamba-ssm"))
    if mamba is None or mamba >= knowledge.MAMBA_SUMS_SSD_DD or PATCH_SSD_DD in applied:
        return
    yield Finding(
        "mamba2-d-gradient", "warning",
        f"mamba-ssm {mamba}'s Mamba2 backward can return a wrong gradient for D: it keeps one column block's "
        "partial sum when Triton's autotuner picks BLOCK_SIZE_N below headdim (62% off measured at headdim 64)",
        "`jetson-mamba patch` (sums every block, as mamba-ssm 2.3 does)",
    )


def _triton_install(torch_version: Optional[str]) -> str:
    """The exact install command: the triton torch's metadata names, else the rule for finding it."""
    wanted = knowledge.triton_for_torch(torch_version)
    if wanted:
        return f"`pip install triton=={wanted}` (the release torch {torch_version} requires)"
    return f"`pip install triton` at the version torch {torch_version} requires (`pip show torch`, Requires-Dist)"


@rule
def _no_triton(machine: MachineInfo, _applied: FrozenSet[str]) -> Iterable[Finding]:
    if machine.torch.version is None or machine.gpu is None:
        return
    installed = knowledge.parse_version(machine.torch.triton)
    wanted = knowledge.parse_version(knowledge.triton_for_torch(machine.torch.version))
    if installed is None:
        yield Finding("triton-missing", "warning",
                      "triton is not installed: Mamba2's fused paths and jetson-mamba's zero-compile GPU kernels "
                      "need it (the portable torch backend still works)", _triton_install(machine.torch.version))
    elif wanted is not None and installed.release[:2] != wanted.release[:2]:
        yield Finding("triton-mismatch", "warning",
                      f"triton {installed} is installed, but torch {machine.torch.version} was released with "
                      f"triton {wanted}: torch.compile and Triton kernels may fail to compile or crash",
                      _triton_install(machine.torch.version))


@rule
def _build_memory(machine: MachineInfo, _applied: FrozenSet[str]) -> Iterable[Finding]:
    memory = machine.memory
    if memory is None or machine.gpu is None:
        return
    jobs = knowledge.recommended_max_jobs(machine.cpu_count, memory.available_mb, memory.swap_free_mb)
    if jobs >= machine.cpu_count:
        return
    swap = "no swap" if memory.swap_total_mb == 0 else f"{memory.swap_total_mb} MB swap"
    severity = "warning" if jobs < 2 else "info"
    yield Finding(
        "build-memory", severity,
        f"{memory.available_mb} MB RAM available and {swap}: each nvcc process needs about "
        f"{knowledge.NVCC_PEAK_MB} MB, so a source build should use at most MAX_JOBS={jobs} "
        f"of {machine.cpu_count} cores (more gets the compiler OOM-killed)",
        f"`jetson-mamba build --jobs {jobs}` (it picks this itself)"
        + ("; add swap: `sudo fallocate -l 8G /swapfile && sudo chmod 600 /swapfile && sudo mkswap /swapfile "
           "&& sudo swapon /swapfile`" if memory.swap_total_mb == 0 else ""),
    )


@rule
def _heavy_dependencies(machine: MachineInfo, _applied: FrozenSet[str]) -> Iterable[Finding]:
    """By version, for when the probe did not find Mamba-3's module: where it did, `_mamba3_pieces`
    says which of these dependencies really fail to import here (and nothing when all import)."""
    if machine.machine != "aarch64" or machine.packages.mamba3:
        return
    installed = knowledge.parse_version(machine.packages.version("mamba-ssm"))
    if installed is not None and installed >= knowledge.MAMBA_HEAVY_DEPENDENCIES:
        yield Finding(
            "mamba-heavy-dependencies", "warning",
            f"mamba-ssm {installed} requires tilelang, apache-tvm-ffi and quack-kernels, which have no aarch64 "
            "wheels: pip builds or fails on them, and may replace torch while resolving them",
            "install it with `pip install --no-deps` (jetson-mamba install does), or use mamba-ssm 2.2.5",
        )


# tilelang 0.1.8 (Mamba-3 MIMO) publishes aarch64 wheels only for glibc >= 2.34 (manylinux_2_34): not JetPack 5
TILELANG_AARCH64_GLIBC = (2, 34)
_MAMBA3_PIECES = (  # (module, distribution, what of Mamba-3 needs it)
    ("tilelang", "tilelang", "Mamba-3 MIMO (is_mimo=True; TileLang kernels)"),
    ("tvm_ffi", "apache-tvm-ffi", "Mamba-3 MIMO (TileLang runs on apache-tvm-ffi)"),
    ("quack", "quack-kernels", "Mamba-3 step() decoding (CuTe-DSL kernel)"),
    ("cutlass", "nvidia-cutlass-dsl", "Mamba-3 step() decoding (CuTe-DSL kernel)"),
)


def _glibc_below(version: Optional[str], floor: tuple) -> bool:
    parts = re.findall(r"\d+", version or "")
    return len(parts) >= 2 and (int(parts[0]), int(parts[1])) < floor


def _mamba3_fix(machine: MachineInfo, distribution: str, error: str) -> tuple:
    """(why, fix) for one Mamba-3 dependency that does not import."""
    installed = machine.packages.version(distribution)
    if installed is None:
        if distribution == "tilelang" and machine.machine == "aarch64" and _glibc_below(machine.torch.glibc,
                                                                                        TILELANG_AARCH64_GLIBC):
            return (f"not installed, and tilelang 0.1.8 has aarch64 wheels only for glibc >= 2.34 while this system "
                    f"has glibc {machine.torch.glibc} (JetPack 5 / Ubuntu 20.04)",
                    "use JetPack 6 (glibc 2.35) for Mamba-3 MIMO, or build tilelang from source; Mamba-1/2 and "
                    "Mamba-3 SISO (Triton) do not need it")
        return "not installed", f"`pip install --no-deps {distribution}` (the version mamba-ssm requires)"
    if distribution == "apache-tvm-ffi" or "tvm_ffi" in error:
        return (f"{distribution} {installed} installed but its import fails ({error}); apache-tvm-ffi 0.1.12 breaks "
                "tilelang 0.1.8 this way (mamba-ssm issue 986)",
                "`pip install --no-deps 'apache-tvm-ffi<0.1.12'`")
    return f"{distribution} {installed} installed but its import fails ({error})", \
        f"`pip install --force-reinstall --no-deps {distribution}=={installed}`, or a version that imports here"


@rule
def _mamba3_pieces(machine: MachineInfo, applied: FrozenSet[str]) -> Iterable[Finding]:
    """mamba-ssm main's Mamba-3 kernels need heavy dependencies; say which pieces are out and why."""
    if not machine.packages.mamba3:
        return
    imports = machine.packages.mamba3_imports
    if "*" in imports:
        patch = "" if PATCH_MAMBA3_LAZY in applied else \
            "`jetson-mamba patch` (imports them only when Mamba-3 uses them); then "
        yield Finding("mamba3-unavailable", "warning",
                      f"importing Mamba-3's dependencies crashed the interpreter ({imports['*']}): "
                      "Mamba-3's TileLang / CuTe-DSL kernels cannot run here",
                      f"{patch}reinstall the failing one of tilelang, apache-tvm-ffi, quack-kernels, nvidia-cutlass-dsl")
        return
    for module, distribution, needs in _MAMBA3_PIECES:
        error = imports.get(module)
        if error is None:
            continue
        why, fix = _mamba3_fix(machine, distribution, error)
        yield Finding("mamba3-unavailable", "warning", f"{needs} is unavailable: {distribution} {why}", fix)


# Shared memory one block may opt in to, by compute capability (CUDA C++ Programming Guide, "Technical
# Specifications per Compute Capability"): the fallback when the probe could not ask torch.cuda.
SMEM_PER_BLOCK = {"5.3": 48 << 10, "6.2": 48 << 10, "7.0": 96 << 10, "7.2": 96 << 10, "7.5": 64 << 10,
                  "8.0": 163 << 10, "8.6": 99 << 10, "8.7": 163 << 10, "8.9": 99 << 10, "9.0": 227 << 10,
                  "10.0": 227 << 10, "10.1": 227 << 10, "11.0": 227 << 10, "12.0": 99 << 10}
# The T.alloc_shared buffers of mamba-ssm main's TileLang MIMO forward (mamba3_mimo_fwd.py:145-158, 206,
# 219, 313, 406) at the shape upstream tuned it for (mamba3_mimo.py:306: chunk_size 16 x mimo_rank 4,
# headdim_qk 128, headdim_v 64, bf16): 98,432 bytes before TileLang's own padding; the backward's are larger.
MAMBA3_MIMO_FWD_SMEM = 98432


def _capability(arch: Optional[str]) -> Optional[tuple]:
    parts = re.fullmatch(r"(\d+)\.(\d+)", arch or "")
    return (int(parts[1]), int(parts[2])) if parts else None


@rule
def _mamba3_gpu(machine: MachineInfo, applied: FrozenSet[str]) -> Iterable[Finding]:
    """What mamba-ssm main's Mamba-3 kernels require of the GPU, read from upstream's code (commit e9594ce):

    - mamba_ssm/ops/tilelang/mamba3/mamba3_mimo_fwd.py:53 (dtype 'bfloat16' GEMMs: bf16 tensor cores are
      sm_80+) and mamba_ssm/ops/cute/mamba3/mamba3_step_fn.py:382 (cute.arch.cp_async_*: cp.async is sm_80+);
    - mamba_ssm/ops/triton/mamba3/mamba3_siso_fwd.py:29: `if major in (10, 12)` keeps only num_stages=1
      on Blackwell because more stages "silently corrupt" the SISO forward (Triton 3.5.1-3.7.0); Thor is
      Blackwell with compute capability 11.0 under CUDA 13, which that check misses;
    - mamba_ssm/ops/tilelang/mamba3/mamba3_mimo.py:308-339: MIMO is "prone to smem over-allocation"
      (MAMBA3_MIMO_FWD_SMEM at the tuned shape), and chunk_size * mimo_rank > 64 makes it worse.
    """
    capability = _capability(machine.gpu.arch) if machine.packages.mamba3 and machine.gpu else None
    if capability is None:
        return
    arch = machine.gpu.arch
    if capability < (8, 0):
        yield Finding("mamba3-gpu-arch", "warning",
                      f"Mamba-3 MIMO (TileLang, bf16 tensor-core GEMMs) and Mamba-3 step() decoding (CuTe-DSL, "
                      f"cp.async) need compute capability 8.0 or newer; this GPU is {arch}",
                      "use Mamba-1 or Mamba-2 on this GPU (jetson-mamba's portable kernels run them), or Mamba-3 "
                      "SISO (is_mimo=False, Triton kernels) if Triton supports this GPU")
    if capability[0] == 11:
        yield Finding("mamba3-blackwell-stages", "warning",
                      f"Mamba-3 SISO's Triton forward (mamba3_siso_fwd.py:29) limits itself to num_stages=1 on "
                      f"Blackwell only for compute capability 10.x and 12.x; this Blackwell GPU is {arch}, so the "
                      "multi-stage configs upstream found to silently corrupt the output stay in its autotuner",
                      "until upstream's check includes 11, change `major in (10, 12)` to `major in (10, 11, 12)` in "
                      "mamba_ssm/ops/triton/mamba3/mamba3_siso_fwd.py, or check Mamba-3 SISO against upstream's "
                      "tests/ops/triton/test_mamba3_siso.py on this board before trusting it")
    limit, source = machine.gpu.smem_per_block, "torch.cuda"
    if limit is None:
        limit, source = SMEM_PER_BLOCK.get(arch), f"the table for compute capability {arch}"
    if limit is not None and limit < MAMBA3_MIMO_FWD_SMEM:
        yield Finding("mamba3-shared-memory", "warning",
                      f"Mamba-3 MIMO's TileLang forward at upstream's tuned shape (chunk_size 16 x mimo_rank 4, "
                      f"headdim_qk 128, headdim_v 64) allocates {MAMBA3_MIMO_FWD_SMEM // 1024} KiB of shared "
                      f"memory per block; this GPU allows {limit // 1024} KiB ({source})",
                      "use chunk_size 8 (chunk_size * mimo_rank <= 32: about half the shared memory) or smaller "
                      "head dims for Mamba-3 MIMO here, or Mamba-3 SISO (is_mimo=False)")


def diagnose_machine(machine: MachineInfo, applied_patches: Iterable[str] = ()) -> List[Finding]:
    """Every finding for this machine, errors first; `applied_patches` (runtime patch names in
    effect, see `jetson_mamba.compat.runtime_patches`) silence the problems they fix."""
    applied = frozenset(applied_patches)
    found = [finding for check in _RULES for finding in check(machine, applied)]
    return sorted(found, key=lambda f: SEVERITIES.index(f.severity))
