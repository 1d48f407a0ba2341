"""verify edge cases through the CLI entry point in this process (no subprocess start-up)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from jetson_mamba.cli import main


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")
def test_forcing_a_backend_that_cannot_run_here_fails_with_the_reason(capsys: pytest.CaptureFixture) -> None:
    code = main(["verify", "--quick", "--json", "--backend", "cuda"])
    report = json.loads(capsys.readouterr().out)
    assert code == 10 and report["ok"] is False and report["checks"] == []
    assert "nothing could be checked here" in report["error"]["message"]
    assert "CUDA tensors" in report["error"]["message"] and "without --backend" in report["error"]["fix"]
    skipped = {s["component"] for s in report["skipped"]}
    assert {"selective_scan[cuda]", "standins.selective_scan_cuda", "ops, mamba_ssm, mamba_yolo"} <= skipped


def test_bench_rejects_a_bad_shape_with_the_fix(capsys: pytest.CaptureFixture) -> None:
    code = main(["bench", "--json", "--op", "selective_scan", "--shape", "B=2,Q=1"])
    error = json.loads(capsys.readouterr().out)
    assert code == 2 and error["error"] == "usage" and "Q=1" in error["message"] and "B=8" in error["fix"]


@pytest.mark.parametrize("command", ["verify", "bench"])
def test_without_torch_the_error_says_what_to_install(command: str, capsys: pytest.CaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    code = main([command, "--json"])
    error = json.loads(capsys.readouterr().out)
    assert code == 3 and error["error"] == "missing-dependency"
    assert "torch cannot be imported" in error["message"] and "never installs torch" in error["fix"]


def test_a_kernel_without_code_for_this_gpu_is_diagnosed_with_the_build_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled kernel's own error message turns into the fix (the doctor's findings follow it)."""
    import jetson_mamba.verify as verify
    from jetson_mamba.verify.report import ERROR, CheckResult, VerifyReport

    monkeypatch.setattr(verify, "_gpu_arch", lambda: "8.7")
    message = "RuntimeError: CUDA error: no kernel image is available for execution on the device"
    report = VerifyReport(device="cuda (Orin, sm_87)", quick=True, checks=[
        CheckResult("selective_scan_cuda", "case", "float32", "forward", ERROR, None, 1e-4, message=message)])
    report = replace(report, diagnosis=verify.diagnose_failures(report))
    first = report.diagnosis[0]
    assert first.id == "no-kernel-image" and "no sm_87 code" in first.message
    assert first.fix.startswith("`jetson-mamba build --arch 8.7`")
    error = verify.failure_error(report)
    assert error.exit_code == 10 and "selective_scan_cuda forward float32" in error.message
    assert error.fix == first.fix
    assert report.to_json()["diagnosis"][0] == {"id": first.id, "severity": "error", "message": first.message,
                                                "fix": first.fix}


def test_an_unknown_backend_name_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    code = main(["verify", "--quick", "--json", "--backend", "trition"])
    error = json.loads(capsys.readouterr().out)
    assert code == 2 and "trition" in error["message"] and "triton" in error["fix"]


def test_json_rounds_the_timings_the_report_keeps_exact() -> None:
    """Timings past 0.1 ms per check and 10 ms per task are noise in the document; the dataclass keeps them."""
    from jetson_mamba.verify.report import PASSED, CheckResult, VerifyReport

    check = CheckResult("selective_scan[torch]", "case", "float32", "forward", PASSED, 1e-7, 1e-4,
                        seconds=0.123456789)
    report = VerifyReport(device="cpu", quick=True, checks=[check], seconds=12.345678,
                          task_seconds={"selective_scan[torch] float32": 3.14159265})
    data = report.to_json()
    assert data["seconds"] == 12.35 and data["task_seconds"] == {"selective_scan[torch] float32": 3.14}
    assert data["checks"][0]["seconds"] == 0.1235 and data["checks"][0]["error"] == 1e-7
    assert report.seconds == 12.345678 and report.checks[0].seconds == 0.123456789
