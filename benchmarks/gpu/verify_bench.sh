#!/usr/bin/env bash
# `jetson-mamba verify` (full) and `bench` on the lab GPU, in one command from the repository root:
#   bash benchmarks/gpu/verify_bench.sh [all|verify|cuda|triton|torch|bench]
# (all = verify + bench; verify = the three backends; one backend or bench alone if a call must stay short)
# Installs the prebuilt wheels (.carry/wheelhouse/*.whl: mamba_ssm 2.2.5, causal_conv1d 1.6.0, sm_90)
# with pip --no-deps --no-index into a venv that sees the system torch/triton, applies
# `jetson-mamba patch` (mamba_ssm 2.2.5 does not import with transformers 5 otherwise), then runs the
# full verify once per kernel backend (cuda = the compiled extensions, triton, torch) and
# `bench --markdown` (plus --json and a PNG chart).
# Outputs in $OUT (default ./verify-bench-out): verify-<backend>.json, verify-<backend>.txt,
# bench.md (for benchmarks/RESULTS.md), bench.json, bench.png, patch.json, doctor.json, summary.txt.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/verify-bench-out}
PART=${1:-all}
PY=${PYTHON:-python3}
WORK=$(mktemp -d /tmp/jm-verify-bench.XXXX)
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log-$PART.txt") 2>&1

"$PY" -m venv --system-site-packages "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$VPY" -m pip install -q --no-deps --no-index .carry/wheelhouse/*.whl || { echo "wheel install failed"; exit 2; }
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
# jetson-mamba needs rich and packaging; without network, fall back to the copies vendored in pip.
if ! "$VPY" -c "import rich, packaging" 2>/dev/null; then
  VENDOR=$("$VPY" -c "import os, pip._vendor as v; print(os.path.dirname(v.__file__))")
  mkdir -p "$WORK/shim" && ln -s "$VENDOR/rich" "$WORK/shim/rich" && ln -s "$VENDOR/packaging" "$WORK/shim/packaging"
  export PYTHONPATH="$PYTHONPATH:$WORK/shim"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$VPY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"

"$VPY" -m jetson_mamba patch --json > "$OUT/patch.json"; echo "== patch exit $?"
"$VPY" -m jetson_mamba doctor --json > "$OUT/doctor.json"; echo "== doctor exit $?"
"$VPY" -c "import mamba_ssm, selective_scan_cuda, causal_conv1d_cuda; print('== imports:', mamba_ssm.__version__, selective_scan_cuda.__file__)"

summarize() {  # verify JSON -> one line per component: passed/failed, worst error vs tolerance
  "$VPY" - "$1" <<'PYEOF'
import json, sys
data = json.load(open(sys.argv[1]))
print(f"   device {data.get('device')}, {data.get('summary')}, {data.get('seconds')} s, ok={data.get('ok')}")
rows = {}
for c in data.get("checks", []):
    key = (c["component"], c["dtype"])
    worst = rows.get(key, (0, 0.0, 0.0, 0))
    ratio = (c["error"] / c["tolerance"]) if c["error"] is not None and c["tolerance"] else float("inf")
    rows[key] = (worst[0] + (c["status"] == "passed"), max(worst[1], ratio),
                 max(worst[2], c["error"] or 0.0), worst[3] + 1)
for (component, dtype), (passed, ratio, error, total) in sorted(rows.items()):
    print(f"   {component:38s} {dtype:9s} {passed}/{total} passed, worst error {error:.1e} ({ratio:.2f} of tolerance)")
for c in data.get("checks", []):
    if c["status"] != "passed":
        print(f"   FAILED {c['component']} {c['direction']} {c['dtype']} [{c['name']}]: {c['message']}")
for s in data.get("skipped", []):
    print(f"   skipped {s['component']}: {s['reason']}")
if data.get("error"):
    print("   error:", data["error"]["message"], "| fix:", data["error"]["fix"])
PYEOF
}

status=0
case "$PART" in
  all|verify) BACKENDS="cuda triton torch" ;;
  cuda|triton|torch) BACKENDS="$PART" ;;
  *) BACKENDS="" ;;
esac
if [ -n "$BACKENDS" ]; then
for backend in $BACKENDS; do
  start=$(date +%s)
  # correctness does not depend on the Triton tile sizes: skip autotuning (dozens of shapes) to stay fast
  # -v: one line per task on stderr (the log), so a run cut off by its time limit still shows where the time went
  JETSON_MAMBA_TRITON_AUTOTUNE=0 timeout 560 "$VPY" -m jetson_mamba -v verify --backend "$backend" --json \
    > "$OUT/verify-$backend.json"
  rc=$?
  echo "== verify --backend $backend: exit $rc in $(( $(date +%s) - start )) s" | tee "$OUT/verify-$backend.txt"
  summarize "$OUT/verify-$backend.json" | tee -a "$OUT/verify-$backend.txt"
  [ $rc -eq 0 ] || status=1
done
fi
if [ "$PART" = all ] || [ "$PART" = verify ]; then
  start=$(date +%s)
  "$VPY" -m jetson_mamba verify --quick > "$OUT/verify-quick.txt" 2>&1
  echo "== verify --quick (every backend at once, the table people see): exit $? in $(( $(date +%s) - start )) s"
fi

if [ "$PART" = all ] || [ "$PART" = bench ]; then
  start=$(date +%s)
  timeout 560 "$VPY" -m jetson_mamba bench --markdown "$OUT/bench.md" --json --plot "$OUT/bench.png" > "$OUT/bench.json"
  rc=$?
  echo "== bench --markdown: exit $rc in $(( $(date +%s) - start )) s"; cat "$OUT/bench.md"
  [ $rc -eq 0 ] || status=1
fi
grep -h "^== " "$OUT"/log-*.txt > "$OUT/summary.txt"
exit $status
