"""Build-time patches on an upstream source tree (mamba-ssm, causal-conv1d) before compiling.

Upstream setup.py files hard-code 8-12 `-gencode` targets (ignoring TORCH_CUDA_ARCH_LIST),
some of which nvcc 13 rejects; they pass `-lineinfo`, which triples the wheel size, and
`-std=c++17`, which torch 2.14's headers refuse. mamba-ssm <= 2.2.5 also uses cub calls that
CUDA 13 removed. Each fix is a `registry.Patch` in TREE mode (recorded, idempotent,
revertible with `registry.revert`); `apply_build_patches` also checks that every patched
Python file still parses before writing anything.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from jetson_mamba.compat.registry import (
    NEEDED,
    TREE,
    Context,
    Patch,
    PatchTarget,
    Replace,
    Transform,
    UnknownContent,
    apply_plan,
    marker,
    patch_plan,
    replacing,
)
from jetson_mamba.compat.runtime_patches import RUNTIME_PATCHES
from jetson_mamba.errors import PatchError

DISTRIBUTIONS = ("causal-conv1d", "mamba-ssm")
GENCODE = "gencode-requested-archs"
COMPRESSION = "fatbin-compression"
CXX20 = "cxx20-for-torch-headers"
CUB = "cuda13-cub"

_GENCODE_LINE = re.compile(
    r"""^(?P<indent>[ \t]*)(?P<var>\w+)\.(?:append|extend)\(\s*\[?\s*(?:["']-gencode["']\s*,?\s*)?"""
    r"""(?:["']arch=compute_\d+[a-z]?,code=\[?(?:sm|compute)_\d+[a-z]?(?:,(?:sm|compute)_\d+[a-z]?)*\]?["']\s*)?"""
    r"""\]?\s*\)\s*(?:#.*)?$""")
_ARCH_LITERAL = re.compile(r"""["'](?:-gencode[= ])?arch=compute_\d+""")
_LINEINFO = re.compile(r"""^(?P<head>.*?)(?P<q>["'])-lineinfo(?P=q)[ \t]*(?P<comma>,?)[ \t]*$""", re.MULTILINE)


@dataclass(frozen=True)
class BuildOptions:
    """What the build patches need to know: the target archs and what the toolchain demands."""

    archs: Tuple[str, ...]  # "8.7", ...
    compress_mode: bool  # nvcc accepts --compress-mode=size
    cxx_std: int  # 17, or 20 when torch's headers demand it


def _options(ctx: Context) -> BuildOptions:
    return BuildOptions(tuple(ctx.options["archs"]), bool(ctx.options["compress_mode"]), int(ctx.options["cxx_std"]))


def _indent(line: str) -> str:
    return line[:len(line) - len(line.lstrip())]


def _is_gencode_line(line: str) -> bool:
    """A line that only appends `-gencode` and/or one `arch=compute_NN,code=sm_NN` to a flag list."""
    return bool(_GENCODE_LINE.match(line.rstrip("\n"))) and ("-gencode" in line or "arch=compute_" in line)


def reduce_gencodes(path: str, text: str, ctx: Context) -> Optional[str]:
    """Replace every hard-coded `-gencode` pair in setup.py by one list of the requested archs.

    Removed runs of lines become one `pass` (they may be the whole body of an `if CUDA >= x`);
    the requested list goes after the last one, at the outermost indentation of the removed lines.
    """
    lines = text.splitlines(keepends=True)
    removed = [i for i, line in enumerate(lines) if _is_gencode_line(line)]
    if not removed:
        if re.search(r"-gencode|arch=compute_", text):
            raise UnknownContent("setup.py names -gencode archs in a form this patch does not know")
        return None
    matches = [_GENCODE_LINE.match(lines[i].rstrip("\n")) for i in removed]
    var = matches[0].group("var")  # type: ignore[union-attr]
    indent = min((m.group("indent") for m in matches), key=len)  # type: ignore[union-attr]
    flags = ", ".join(f'"-gencode", "arch=compute_{a.replace(".", "")},code=sm_{a.replace(".", "")}"'
                      for a in _options(ctx).archs)
    out: List[str] = []
    previous = -2
    for index, line in enumerate(lines):
        if index not in removed:
            out.append(line)
            continue
        if previous != index - 1 or _indent(lines[previous]) != _indent(line):
            out.append(f"{_indent(line)}pass  # upstream -gencode list removed by jetson-mamba\n")
        previous = index
        if index == removed[-1]:
            out.append(f"{indent}{var}.extend([{flags}])  # {marker(GENCODE)}\n")
    result = "".join(out)
    leftover = [m.group(0) for m in _ARCH_LITERAL.finditer(result.replace(flags, ""))]
    if leftover:
        raise UnknownContent(f"setup.py still names other archs after the patch ({', '.join(leftover)})")
    return result


def compress_instead_of_lineinfo(path: str, text: str, ctx: Context) -> Optional[str]:
    """`-lineinfo` -> `--compress-mode=size` (nvcc >= 12.8), else just drop it: 3x smaller wheels."""
    if "-lineinfo" not in text:
        return None
    if not _LINEINFO.search(text):
        raise UnknownContent("-lineinfo is not alone on its line in a flag list")
    if _options(ctx).compress_mode:
        new = r'\g<head>\g<q>--compress-mode=size\g<q>\g<comma>  # ' + marker(COMPRESSION)
    else:
        new = r"\g<head># nvcc line-info flag dropped (this nvcc has no --compress-mode)  # " + marker(COMPRESSION)
    return _LINEINFO.sub(new, text)


def _when_cxx20(transform: Transform) -> Transform:
    def guarded(path: str, text: str, ctx: Context) -> Optional[str]:
        return transform(path, text, ctx) if _options(ctx).cxx_std > 17 else None
    return guarded


_RAISE_CXX = _when_cxx20(replacing(
    CXX20, Replace(r"^(.*)-std=c\+\+17(.*)$", r"\1-std=c++20\2  # " + marker(CXX20), count=0)))
_CUB_FIX = replacing(
    CUB,
    Replace(r"^(.*)cub::LaneId\(\)(.*)$", r"\1(threadIdx.x & 0x1f)\2  // " + marker(CUB), count=0),
    Replace(r"^(.*)cub::CTA_SYNC\(\)(.*)$", r"\1__syncthreads()\2  // " + marker(CUB), count=0),
    note=" (mamba-ssm <= 2.2.5 has both)")


def _for_each_distribution(name: str, summary: str, path: str, transform: Transform,
                           distributions: Tuple[str, ...] = DISTRIBUTIONS) -> Tuple[Patch, ...]:
    return tuple(Patch(name, dist, summary, (path,), transform, modes=(TREE,)) for dist in distributions)


BUILD_PATCHES: Tuple[Patch, ...] = (
    _for_each_distribution(GENCODE, "hard-coded -gencode list replaced by the requested archs (nvcc 13 rejects "
                           "sm_53..sm_72; TORCH_CUDA_ARCH_LIST is ignored)", "setup.py", reduce_gencodes)
    + _for_each_distribution(COMPRESSION, "-lineinfo replaced by --compress-mode=size: wheels 3x smaller",
                             "setup.py", compress_instead_of_lineinfo)
    + _for_each_distribution(CXX20, "-std=c++17 raised to C++20, which torch's headers demand (torch >= 2.14)",
                             "setup.py", _RAISE_CXX)
    + _for_each_distribution(CUB, "cub::LaneId()/cub::CTA_SYNC(), removed in CUDA 13, replaced by "
                             "threadIdx.x & 0x1f/__syncthreads() (as mamba-ssm 2.2.6 does)",
                             "csrc/selective_scan/reverse_scan.cuh", _CUB_FIX, ("mamba-ssm",))
)


def apply_build_patches(root: Path, distribution: str, version: Optional[str], options: BuildOptions,
                        runtime: bool = True) -> List[str]:
    """Patch the source tree at `root` in place, all or nothing; the names of the patches applied.

    With `runtime`, the runtime fixes (`runtime_patches`) are baked in too, in the same plan,
    so the wheel built from the tree needs no `jetson-mamba patch` afterwards. The target is
    given explicitly (not read from PKG-INFO) because git checkouts have none.
    """
    patches = (RUNTIME_PATCHES if runtime else ()) + BUILD_PATCHES
    plan = patch_plan([PatchTarget(distribution, version, root)], patches, TREE, options=dataclasses.asdict(options))
    for change in plan.changes:
        if change.path.endswith(".py"):
            try:
                ast.parse(change.after.decode("utf-8"))
            except SyntaxError as error:
                raise PatchError(f"patched {change.absolute} would not parse ({error}); nothing was changed",
                                 "report this file; edit it by hand in a --prepare-only tree") from None
    apply_plan(plan)
    return list(dict.fromkeys(s.patch for s in plan.statuses if s.status == NEEDED))
