#!/usr/bin/env bash
# On the lab GPU machine (H200 = sm_90, Python 3.12, torch 2.11.0+cu130, transformers 5.x, no network):
# `jetson-mamba install --archive .carry/wheelhouse` must select both prebuilt wheels (causal-conv1d
# 1.6.0, mamba-ssm 2.2.5), install them with pip --no-deps without touching torch, apply the
# transformers-5 fix (`jetson-mamba patch`), and pass the quick verification. Then, independently of
# the tool: no file under torch/ changed, `import mamba_ssm` works, and Mamba / Mamba2 run
# forward+backward through their fused CUDA paths, matching their reference paths.
# The install goes into a fresh venv that sees the system's packages (torch, triton, einops,
# transformers), so the system Python is left as it was.
#   usage: bash benchmarks/gpu/install_proof.sh     (PYTHON=..., WHEELS=..., RESULTS=... to override)
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-.carry/wheelhouse}
RESULTS=${RESULTS:-benchmarks/gpu/results}
WORK=$(mktemp -d /tmp/jm-install-proof.XXXX)
mkdir -p "$RESULTS"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
ls "$WHEELS"/*.whl >/dev/null 2>&1 || { echo "install_proof: no wheels in $WHEELS" >&2; exit 2; }
if ! "$PY" -c "import rich, packaging, torch" 2>/dev/null; then
  echo "install_proof: $PY lacks rich, packaging or torch; jetson-mamba needs rich and packaging" >&2
  exit 2
fi
if "$PY" -m venv --system-site-packages "$WORK/venv" >/dev/null 2>&1 && "$WORK/venv/bin/python" -m pip --version >/dev/null 2>&1; then
  TARGET="$WORK/venv/bin/python"
else
  echo "== no venv module here: installing into $PY itself (rollback protects it)"; TARGET=$(command -v "$PY")
fi
fail=0
step() { echo; echo "== $*"; }

step "machine"
nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader
TORCH_DIR=$("$TARGET" -c 'import os, torch; print(os.path.dirname(torch.__file__))')
TORCH_BEFORE=$("$TARGET" -c 'import torch; print(torch.__version__, torch.version.cuda)')
echo "target $TARGET; torch $TORCH_BEFORE at $TORCH_DIR"
touch "$WORK/marker"; sleep 1

step "jetson-mamba install --archive $WHEELS --dry-run --explain"
"$PY" -m jetson_mamba install --archive "$WHEELS" --python "$TARGET" --dry-run --explain || fail=1

step "jetson-mamba install --archive $WHEELS --explain --json"
start=$(date +%s.%N)
"$PY" -m jetson_mamba install --archive "$WHEELS" --python "$TARGET" --explain --json > "$RESULTS/install_proof.json"
rc=$?
wall=$(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $start}")
echo "exit $rc after $wall s (full report: $RESULTS/install_proof.json)"
[ $rc -eq 0 ] || fail=1
"$PY" - "$RESULTS/install_proof.json" <<'EOF' || fail=1
import json, sys
report = json.load(open(sys.argv[1]))
if "error" in report:
    print("FAILED:", report["message"]); print("fix:", report.get("fix")); sys.exit(1)
for line in report["explain"]:
    print(" ", line)
print("installed:", ", ".join(report["installed"]), "| replaced:", report["replaced"] or "nothing")
print("dependencies added:", report["dependencies_added"] or "none", "| warnings:", report.get("warnings") or "none")
patches = report["patches"]
print("patches ok:", patches["ok"], "| applied:", ", ".join(patches.get("applied", [])) or "none")
verification = report["verification"]
result = verification.get("output")
print("verification via", verification["via"], "ok:", verification["ok"])
if isinstance(result, dict):
    print("  summary:", result.get("summary"), "device:", result.get("device"))
    for check in result.get("checks", []):
        if check.get("status") != "skipped":
            print("  %-8s %-40s %-10s %-9s err %.2e tol %.0e" % (check.get("status"), check.get("component"),
                  check.get("dtype"), check.get("direction"), check.get("error") or 0, check.get("tolerance") or 0))
else:
    print(" ", result)
print("torch unchanged (tool's fingerprint of", report["torch"]["files"], "files):", report["torch_unchanged"])
fixed = "transformers5-generation-output" in patches.get("applied", [])
print("transformers-5 fix applied:", fixed)
sys.exit(0 if report["torch_unchanged"] and verification["ok"] and patches["ok"] and fixed else 1)
EOF

step "independent checks: torch files, import, Mamba / Mamba2 fused vs reference"
changed=$(find "$TORCH_DIR" -newer "$WORK/marker" -type f -not -path '*/__pycache__/*' | wc -l)
TORCH_AFTER=$("$TARGET" -c 'import torch; print(torch.__version__, torch.version.cuda)')
echo "torch before: $TORCH_BEFORE; after: $TORCH_AFTER; files under torch/ modified since the start: $changed"
[ "$changed" -eq 0 ] && [ "$TORCH_BEFORE" = "$TORCH_AFTER" ] || fail=1
"$TARGET" - <<'EOF' || fail=1
import importlib.metadata as md
import torch
import mamba_ssm, causal_conv1d, selective_scan_cuda, causal_conv1d_cuda
from mamba_ssm import Mamba, Mamba2
print("mamba_ssm", md.version("mamba_ssm"), "causal_conv1d", md.version("causal_conv1d"), "transformers",
      md.version("transformers"), "| extensions:", selective_scan_cuda.__file__.rsplit("/", 1)[-1],
      causal_conv1d_cuda.__file__.rsplit("/", 1)[-1])
import mamba_ssm.modules.mamba2 as mamba2_module
import mamba_ssm.modules.mamba_simple as mamba_module
from jetson_mamba.ops.triton_utils import pin_autotuned_kernels
print("pinned", pin_autotuned_kernels("mamba_ssm"), "autotuned Triton kernels of mamba_ssm to one config (cold JIT)")
calls = {}
def count(module, attr):  # proves which path (and which compiled kernels) actually ran
    original = getattr(module, attr)
    def counted(*args, **kwargs):
        calls[attr] = calls.get(attr, 0) + 1
        return original(*args, **kwargs)
    setattr(module, attr, counted)
count(mamba_module, "mamba_inner_fn")
count(mamba2_module, "mamba_split_conv1d_scan_combined")
count(selective_scan_cuda, "fwd")
count(causal_conv1d_cuda, "causal_conv1d_fwd")
torch.manual_seed(0)
ok = True
def rel(a, b):
    return ((a - b).norm() / b.norm()).item()
# Mamba2's paths both run Triton SSD kernels whose dots use TF32: a looser bound there.
for name, make, fused, tolerance in (
        ("Mamba", lambda: Mamba(d_model=256, d_state=16, d_conv=4, expand=2), "use_fast_path", 1e-3),
        ("Mamba2", lambda: Mamba2(d_model=256, d_state=64, d_conv=4, expand=2, headdim=64), "use_mem_eff_path", 1e-2)):
    layer = make().cuda()
    x = torch.randn(2, 128, 256, device="cuda", requires_grad=True)
    outs, grads = [], []
    for flag in (True, False):
        calls.clear()
        setattr(layer, fused, flag)
        x.grad = None
        layer.zero_grad()
        y = layer(x)
        y.float().pow(2).mean().backward()
        outs.append(y.detach()); grads.append(x.grad.detach().clone())
        print("  %s %s=%s ran: %s" % (name, fused, flag, dict(sorted(calls.items()))))
        entry = "mamba_inner_fn" if name == "Mamba" else "mamba_split_conv1d_scan_combined"
        ok &= (calls.get(entry, 0) > 0) == flag and calls.get("causal_conv1d_fwd", 0) > 0
        ok &= name == "Mamba2" or calls.get("fwd", 0) > 0
    err_out, err_grad = rel(outs[0], outs[1]), rel(grads[0], grads[1])
    good = err_out < tolerance and err_grad < tolerance and torch.isfinite(outs[0]).all().item()
    ok &= good
    print("%-6s fused (%s=True) vs unfused path: out rel err %.2e, dx rel err %.2e (tol %.0e) -> %s"
          % (name, fused, err_out, err_grad, tolerance, "ok" if good else "FAIL"))
raise SystemExit(0 if ok else 1)
EOF

echo
if [ $fail -eq 0 ]; then echo "install_proof: PASS"; else echo "install_proof: FAIL"; fi
rm -rf "$WORK"
exit $fail
