"""`jetson-mamba verify --quick --json` through the real CLI in a subprocess, as CI and the installer run it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import pytest

PERTURBED = textwrap.dedent('''
    """Deliberately wrong kernels: each looks plausible and is wrong in one way verify must catch."""
    import torch

    from jetson_mamba.ops.causal_conv1d import torch as conv
    from jetson_mamba.ops.selective_scan import torch as scan

    is_available = scan.is_available
    selective_scan_backward = scan.selective_scan_backward
    causal_conv1d_backward = conv.causal_conv1d_backward
    causal_conv1d_update = conv.causal_conv1d_update


    def selective_scan_forward(*args, **kwargs):
        """Right except for a 0.1% gain error on the output."""
        out, out_z, last = scan.selective_scan_forward(*args, **kwargs)
        return out * 1.001, None if out_z is None else out_z * 1.001, last


    def causal_conv1d_forward(x, *args, **kwargs):
        """Forgets to write the last time step of its output buffer."""
        out, final = conv.causal_conv1d_forward(x, *args, **kwargs)
        partial = torch.empty_like(out)
        partial[..., :-1] = out[..., :-1]
        return partial, final
''')


def run_verify(*args: str, env: Dict[str, str], prelude: str = "") -> Tuple[int, Dict[str, Any], str]:
    script = prelude + "import sys\nfrom jetson_mamba.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    proc = subprocess.run([sys.executable, "-c", script, "verify", "--quick", "--json", *args],
                          capture_output=True, text=True, env=env, timeout=600)
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def checks_of(report: Dict[str, Any], component: str) -> List[Dict[str, Any]]:
    return [check for check in report["checks"] if check["component"] == component]


def test_quick_verify_json_on_cpu(tmp_path: Path) -> None:
    """The exact command the installer runs: every present component checked, absent ones explained."""
    import os

    env = {key: value for key, value in os.environ.items() if key not in ("JETSON_MAMBA_BACKEND", "TRITON_INTERPRET")}
    proc = subprocess.run([sys.executable, "-m", "jetson_mamba", "verify", "--quick", "--json"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True and report["quick"] is True and report["device"] == "cpu"
    assert report["schema_version"] == 1
    assert report["summary"]["failed"] == 0 and report["summary"]["passed"] == len(report["checks"])
    for component in ("selective_scan[torch]", "causal_conv1d[torch]", "ops.selective_scan_fn",
                      "ops.causal_conv1d_fn", "mamba_yolo.SS2D", "mamba_yolo.VSSBlock", "mamba_yolo.XSSBlock",
                      # the stand-ins through the compiled extensions' own calling conventions
                      "standins.selective_scan_cuda", "standins.causal_conv1d_cuda",
                      "standins.causal_conv1d_cuda_legacy", "standins.selective_scan_cuda_core",
                      "standins.selective_scan_cuda_oflex"):
        checks = checks_of(report, component)
        assert {c["direction"] for c in checks} >= {"forward", "backward"}, component
    kernel = checks_of(report, "selective_scan[torch]")
    assert {c["dtype"] for c in kernel} == {"float32", "bfloat16"}
    assert {"forward", "backward"} == {c["direction"] for c in kernel}
    assert "update" in {c["direction"] for c in checks_of(report, "causal_conv1d[torch]")}
    assert {c["backend"] for c in report["checks"] if "[" in c["component"]} == {"torch"}  # named, not parsed
    assert {c["backend"] for c in checks_of(report, "mamba_yolo.SS2D")} == {None}
    for check in report["checks"]:
        assert check["status"] == "passed"
        assert check["error"] is not None and 0.0 <= check["error"] <= check["tolerance"], check
        assert check["tensors"] and all(v is not None and v <= check["tolerance"] for v in check["tensors"].values())
    backward = next(c for c in kernel if c["direction"] == "backward")
    assert set(backward["tensors"]) >= {"u", "delta", "A", "B", "C"}  # every gradient is compared
    # bf16 rounding is visible, fp32 is near-exact: the errors are measured, not assumed
    fp32 = max(c["error"] for c in kernel if c["dtype"] == "float32")
    bf16 = max(c["error"] for c in kernel if c["dtype"] == "bfloat16")
    assert fp32 < 1e-5 < 1e-4 < bf16
    skipped = {s["component"]: s["reason"] for s in report["skipped"]}
    assert "CUDA" in skipped["selective_scan[cuda]"]
    assert "TRITON_INTERPRET=1" in skipped["selective_scan[triton]"]
    for name in ("selective_scan_cuda", "causal_conv1d_cuda", "selective_scan_cuda_core", "selective_scan_cuda_oflex"):
        assert name in skipped and skipped[name]
    # where the time went, per task (every check comes from a timed task), and how this run was set up
    assert report["task_seconds"] and all(s >= 0 for s in report["task_seconds"].values())
    assert {c["component"] for c in report["checks"]} <= {label.split()[0] for label in report["task_seconds"]}
    assert "JETSON_MAMBA_TRITON_AUTOTUNE=0" in " ".join(report["notes"])


def test_perturbed_backends_fail_verify(tmp_path: Path) -> None:
    """A registered backend that is slightly wrong (gain error) or leaves an output unwritten fails verify,
    with exit code 10, the failing check named, and a fix pointing at a backend that passed."""
    import os

    (tmp_path / "perturbed_backend.py").write_text(PERTURBED)
    env = {key: value for key, value in os.environ.items() if key != "JETSON_MAMBA_BACKEND"}
    env["PYTHONPATH"] = str(tmp_path) + os.pathsep + env.get("PYTHONPATH", "")
    prelude = ("from jetson_mamba.ops.backend import register_backend\n"
               "register_backend('selective_scan', 'perturbed', 'perturbed_backend', priority=50)\n"
               "register_backend('causal_conv1d', 'perturbed', 'perturbed_backend', priority=50)\n")
    code, report, stderr = run_verify("--backend", "perturbed,torch", env=env, prelude=prelude)
    assert code == 10, stderr
    assert report["ok"] is False and report["error"]["error"] == "verification" and report["schema_version"] == 1
    scan = checks_of(report, "selective_scan[perturbed]")
    forward = {c["dtype"]: c for c in scan if c["direction"] == "forward"}  # last case of each dtype
    fp32 = forward["float32"]
    assert fp32["status"] == "failed" and 5e-4 < fp32["error"] < 2e-3 and fp32["tensors"]["out"] > fp32["tolerance"]
    assert "out:" in fp32["message"] and fp32["tensors"]["last_state"] < 1e-5
    assert forward["bfloat16"]["status"] == "passed"  # 0.1% is below bf16 rounding: tolerances are honest
    assert all(c["status"] == "passed" for c in scan if c["direction"] == "backward")
    conv = [c for c in checks_of(report, "causal_conv1d[perturbed]") if c["direction"] == "forward"]
    assert conv and all(c["status"] == "failed" and c["error"] is None and "NaN" in c["message"] for c in conv)
    assert all(c["status"] == "passed" for c in report["checks"] if "[torch]" in c["component"])
    assert "selective_scan[perturbed] forward float32" in report["error"]["message"]
    wrong = next(d for d in report["diagnosis"] if d["id"] == "wrong-kernel-backend")
    assert "perturbed" in wrong["message"] and "JETSON_MAMBA_BACKEND=torch" in wrong["fix"]
    assert report["error"]["fix"] == wrong["fix"]


@pytest.mark.slow
def test_quick_verify_checks_mamba_ssm_layers(venv_factory: Callable[[str], Path],
                                              upstream_wheels: Dict[Tuple[str, str], Path]) -> None:
    """With real mamba-ssm 2.2.5 Python code (no compiled kernels, made importable by `jetson-mamba patch`),
    verify checks Mamba and Mamba2 forward, backward and step() against its float64 recomputation."""
    import os

    python = venv_factory("verify-mamba-ssm")
    env = dict(os.environ)
    env.pop("JETSON_MAMBA_BACKEND", None)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                    str(upstream_wheels["mamba_ssm", "2.2.5"])], check=True, env=env, timeout=600)
    subprocess.run([str(python), "-m", "jetson_mamba", "patch", "--json"], check=True, env=env,
                   capture_output=True, timeout=600)
    proc = subprocess.run([str(python), "-m", "jetson_mamba", "verify", "--quick", "--json"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    for component in ("mamba_ssm.Mamba", "mamba_ssm.Mamba2"):
        checks = {c["direction"]: c for c in checks_of(report, component)}
        assert set(checks) == {"forward", "backward", "step"}, component
        for check in checks.values():
            assert check["status"] == "passed" and check["error"] < check["tolerance"], check
        assert {"x", "A_log", "D", "in_proj.weight", "conv1d.weight"} <= set(checks["backward"]["tensors"])
    assert "mamba_ssm" not in {s["component"] for s in report["skipped"]}


def test_piped_table_is_printed_whole() -> None:
    """Off a terminal rich laid tables out for 80 columns and cut the component names (`selective_sca…`)."""
    import os

    env = {key: value for key, value in os.environ.items() if key not in ("COLUMNS", "JETSON_MAMBA_BACKEND")}
    proc = subprocess.run([sys.executable, "-m", "jetson_mamba", "verify", "--quick", "--backend", "torch"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "…" not in proc.stdout and "standins.selective_scan_cuda" in proc.stdout, proc.stdout
