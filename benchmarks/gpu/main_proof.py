"""GPU proof for mamba-ssm's main branch after `jetson-mamba patch` (issue 21): Mamba-1 and Mamba-2 on cuda.

On the lab machine (no network), from the repository root, after `bash scripts/device.sh` here and with
.carry carried:

    python3 benchmarks/gpu/main_proof.py            (< 200 s; exit 0 = proven)

The CPU twin is tests/compat/test_mamba_main.py. This makes a venv that sees the system torch/triton/
einops, installs main's tree (.carry/upstream/mamba-main-*.tar.gz, a snapshot that still calls itself
2.3.2.post1) and causal-conv1d 1.7.0 (.carry/sdists) as pure Python, compiling nothing. Before
`jetson-mamba patch`, Mamba's forward must refuse with upstream's "selective_scan_cuda is not installed".
After it, on the `triton` and on the `torch` backend (JETSON_MAMBA_BACKEND), each on cuda:
mamba_inner_fn against upstream's pure-PyTorch mamba_inner_ref (forward and every gradient), Mamba and
Mamba2 fused against unfused (forward and backward), step() against forward(); fp32 relative error
< 1e-3, bf16 < 1e-2 (patch_proof.py's checks and tolerances). Then `patch --check` is clean, a second
patch writes nothing, and `patch --revert` restores every file byte for byte. mamba_ssm's autotuned SSD
kernels keep one config (as `conformance --pin-upstream-autotune`): a cold Triton cache would compile
for minutes. Every step has a time limit: a hang fails, it never waits.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tarfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from patch_proof import (  # noqa: E402  (the same checks and tolerances as the 2.2.4 proof)
    _checker,
    _compare_paths,
    _fwd_bwd_checks,
    _patch,
    _patch_is_idempotent,
    _print_stage,
    _revert,
    _run,
    _snapshot,
    _stage,
    _step_matches_forward,
    _summary,
    _work_dir,
)

ROOT = Path(__file__).resolve().parents[2]
NO_CUDA_BUILD = {"MAMBA_SKIP_CUDA_BUILD": "TRUE", "MAMBA_FORCE_BUILD": "TRUE",
                 "CAUSAL_CONV1D_SKIP_CUDA_BUILD": "TRUE", "CAUSAL_CONV1D_FORCE_BUILD": "TRUE"}
EXPECTED_BEFORE = "selective_scan_cuda is not installed"


# ----------------------------------------------------------------------------- inside the venv

def inner(stage: str) -> int:
    """Run one stage's checks in this interpreter and print one JSON document."""
    results: List[Dict[str, Any]] = []
    check = _checker(results, timed=True)

    from mamba_ssm import Mamba, Mamba2

    if stage != "before":
        from jetson_mamba.ops.triton_utils import pin_autotuned_kernels

        pin_autotuned_kernels("mamba_ssm")
    mamba = {"d_model": 256, "d_state": 16}
    mamba2 = {"d_model": 256, "d_state": 64, "headdim": 64}
    if stage == "before":
        check("Mamba forward (main, no selective_scan_cuda)", lambda: _compare_paths(
            Mamba, {"use_fast_path": True}, {"use_fast_path": False}, "float32", **mamba))
    else:
        _fwd_bwd_checks(check, mamba, mamba2)
        check("Mamba step() vs forward float32", lambda: _step_matches_forward(Mamba, "float32", **mamba), 1e-3)
        check("Mamba2 step() vs forward float32", lambda: _step_matches_forward(Mamba2, "float32", **mamba2), 1e-3)
    print(json.dumps(results))
    return 0


# ------------------------------------------------------------------------------------- driver

def _wheel(source: Path, out: Path, env: Dict[str, str]) -> Path:
    """A pure-Python wheel of an sdist or a source tree (nothing compiled), built by this interpreter
    (setup.py imports torch; pip, setuptools and wheel are this interpreter's)."""
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index", "--no-build-isolation", "-w", str(out),
          str(source)], {**env, **NO_CUDA_BUILD})
    name = "mamba_ssm" if "mamba" in source.name else "causal_conv1d"
    return next(out.glob(f"{name}-*.whl"))


def _main_tree(carry: Path, work: Path) -> Path:
    """mamba-ssm main's source tree, unpacked from .carry/upstream (members must stay inside the folder)."""
    tarballs = sorted((carry / "upstream").glob("mamba-main-*.tar.gz"))
    if not tarballs:
        raise SystemExit(f"main_proof: no mamba-main-*.tar.gz in {carry / 'upstream'}: run bash scripts/device.sh "
                         "here and carry .carry")
    target = work / "main"
    with tarfile.open(tarballs[-1]) as archive:
        archive.extractall(target, filter="data")  # refuses links and paths out of the folder
    (tree,) = [p for p in target.iterdir() if p.is_dir()]
    return tree


def _setup(base_python: str, carry: Path, work: Path, env: Dict[str, str]) -> Tuple[Path, Path]:
    """The venv with main's mamba_ssm and causal-conv1d 1.7.0, pure Python; returns (python, site-packages)."""
    conv = carry / "sdists" / "causal_conv1d-1.7.0.tar.gz"
    if not conv.is_file():
        raise SystemExit(f"main_proof: {conv} missing: run bash scripts/device.sh here and carry .carry")
    venv = work / "venv"
    _run([base_python, "-m", "venv", "--system-site-packages", str(venv)], env)
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     env).stdout.strip())
    # The lab's python is itself a venv (torch lives in its site-packages, not the base interpreter's, which is
    # all --system-site-packages gives): its site dirs go behind the new venv's own, so ours still shadow them.
    inherited = _run([base_python, "-c", "import site, json; print(json.dumps(site.getsitepackages()))"], env)
    (site / "zz-base-python.pth").write_text(
        "".join(f"import site; site.addsitedir({d!r})\n" for d in json.loads(inherited.stdout)))
    wheels = [_wheel(_main_tree(carry, work), work / "w", env), _wheel(conv, work / "w", env)]
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--force-reinstall",
          *map(str, wheels)], env)
    return python, site


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inner", choices=("before", "triton", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--carry", type=Path, default=ROOT / ".carry", help="the folder scripts/device.sh fills")
    parser.add_argument("--keep", action="store_true", help="keep the temporary venv")
    args = parser.parse_args()
    if args.inner:
        return inner(args.inner)
    start = time.monotonic()
    src = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": src, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "JETSON_MAMBA_TRITON_AUTOTUNE": "0"}
    with _work_dir("jm-main-proof-", args.keep) as work:
        python, site = _setup(sys.executable, args.carry, work, env)
        upstream = _snapshot(site)
        before = _stage(python, "before", env, Path(__file__))
        _print_stage("BEFORE jetson-mamba patch (mamba-ssm main e9594ce + causal-conv1d 1.7.0, nothing compiled)",
                     before)
        before_ok = len(before) == 1 and not before[0]["ok"] and EXPECTED_BEFORE in before[0].get("error", "")

        applied = _patch(python, env)
        print(f"\n== jetson-mamba patch: exit {applied['rc']}, wrote {len(applied['written'])} file(s)")
        idempotent = _patch_is_idempotent(python, env)
        after = {}
        for backend in ("triton", "torch"):
            after[backend] = _stage(python, backend, {**env, "JETSON_MAMBA_BACKEND": backend}, Path(__file__))
            _print_stage(f"AFTER jetson-mamba patch, backend {backend} (cuda)", after[backend])
        byte_exact, restored = _revert(python, env, site, upstream)
        return _summary([
            (f"before: Mamba refuses with '{EXPECTED_BEFORE}'", before_ok),
            *((f"after, {backend}: {sum(r['ok'] for r in results)}/{len(results)} checks pass",
               bool(results) and all(r["ok"] for r in results)) for backend, results in after.items()),
            ("patch --check clean and a second patch writes nothing", idempotent),
            (f"patch --revert restored {restored} file(s) byte-for-byte", byte_exact),
        ], f" in {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
