#!/usr/bin/env bash
# Upstream's own test files on the lab GPU, in one call of at most ~9 minutes, from the repo root:
#   bash benchmarks/gpu/conformance.sh [SECONDS]        (or: LAB_STEPS=conformance bash benchmarks/gpu/lab.sh)
# Four lanes side by side (16 cores; the cases are small, pytest's host time dominates), each bounded:
#   triton, torch, cuda (the compiled sm_90 extensions from .carry/wheelhouse: the control):
#     the mamba-ssm 2.3.2.post1 files and causal-conv1d 1.7.0's file in full (race_condition excluded),
#     then causal-conv1d 1.6.0's file on `--sample 3` (one case in 3 by id hash, plus every parameter
#     value once: its test functions are 1.7.0's, less varlen_initial_states and the ref test);
#   memcheck: causal-conv1d 1.7.0 and 1.6.0 on the triton backend under `compute-sanitizer --tool
#     memcheck`, `--sample 200` each (every function and every parameter value at least once).
# Our Triton kernels run their first config (JETSON_MAMBA_TRITON_AUTOTUNE=0, as verify does; set
# CONFORMANCE_AUTOTUNE=1 to keep the tuner) and mamba_ssm's autotuned SSD kernels their smallest one
# (--pin-upstream-autotune): a cold cache would otherwise compile for minutes. A file that runs out of
# its time reports what ran, the rest as "not run", and an error line.
# Outputs in $OUT (default ./conformance-out): conformance.md (the table for benchmarks/RESULTS.md),
# <lane>.json / <lane>.txt per lane, memcheck.txt (the sanitizer's error count), conformance-logs.tgz.
# Needs .carry/ (scripts/device.sh): wheelhouse, sdists, upstream, whl (pytest and rich wheels).
set -u
cd "$(dirname "$0")/../.."
BUDGET=${1:-500}
OUT=${OUT:-$PWD/conformance-out}
WORK=$(mktemp -d /tmp/jm-conformance.XXXX)
mkdir -p "$OUT"
export JETSON_MAMBA_SHARED="$PWD/.carry" PYTHONUNBUFFERED=1
export JETSON_MAMBA_TRITON_AUTOTUNE=${CONFORMANCE_AUTOTUNE:-0}
PY=${PYTHON:-python3}
# The lab python has torch, triton and einops; pytest and rich (for jetson-mamba) come from .carry/whl,
# behind what the python already has.
"$PY" -m pip install -q --no-index --no-deps --target "$WORK/site" \
  .carry/whl/{pytest,pluggy,iniconfig,pygments,packaging,rich,markdown_it_py,mdurl}-*.whl 2>/dev/null \
  || echo "note: could not unpack .carry/whl (pytest/rich must then be installed already)"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}:$WORK/site"
"$PY" -c "import torch, triton, pytest; print('torch', torch.__version__, 'triton', triton.__version__, 'pytest', pytest.__version__, torch.cuda.get_device_name())" | tee "$OUT/summary.txt"
START=$(date +%s)

conformance() {  # lane seconds-per-file args...: one `jetson-mamba conformance` run, JSON and text kept
  local lane=$1 limit=$2; shift 2
  "$PY" -m jetson_mamba conformance --device cuda --wheelhouse .carry/wheelhouse --work "$WORK/$lane" \
    --pin-upstream-autotune --timeout "$limit" --json "$@" > "$OUT/$lane-$(date +%s%N).json" 2>> "$OUT/$lane.log"
}
left() { echo $(( BUDGET - 30 - $(date +%s) + START )); }
lane() {  # backend: the mamba files, causal-conv1d 1.7.0 in full, then 1.6.0 on a sample (each call's --timeout
  # bounds all its files together)
  conformance "$1" $(( $(left) * 3 / 10 )) --backend "$1" --file mamba --full
  conformance "$1" $(( $(left) * 7 / 10 )) --backend "$1" --file causal-conv1d-1.7.0 --full
  conformance "$1" "$(left)" --backend "$1" --file causal-conv1d-1.6.0 --sample 3
}
memcheck() {
  if ! command -v compute-sanitizer >/dev/null; then echo "compute-sanitizer: not found" > "$OUT/memcheck.txt"; return; fi
  timeout "$(left)" compute-sanitizer --tool memcheck --target-processes all --print-limit 20 \
    "$PY" -m jetson_mamba conformance --device cuda --backend triton --file causal-conv1d --sample 200 \
    --work "$WORK/memcheck" --timeout $(( $(left) - 15 )) > "$OUT/memcheck-run.txt" 2>&1
  echo "exit $?" >> "$OUT/memcheck-run.txt"
  { echo "compute-sanitizer --tool memcheck, triton backend, causal-conv1d 1.6.0 + 1.7.0, --sample 200:";
    grep -h "ERROR SUMMARY" "$OUT/memcheck-run.txt" "$WORK"/memcheck/*/pytest.log 2>/dev/null | sort | uniq -c;
    echo "errors in total: $(grep -h "ERROR SUMMARY" "$OUT/memcheck-run.txt" "$WORK"/memcheck/*/pytest.log 2>/dev/null \
      | awk '{s += $4} END {print s + 0}')"; } > "$OUT/memcheck.txt"
}
for backend in triton torch cuda; do lane "$backend" & done
memcheck &
wait
echo "== all lanes done in $(( $(date +%s) - START )) s" | tee -a "$OUT/summary.txt"

"$PY" -c 'import sys; from pathlib import Path; from jetson_mamba.conformance.report import merged_table
print(merged_table(sorted(Path(sys.argv[1]).glob("*-*.json"))))' "$OUT" | tee "$OUT/conformance.md"
cat "$OUT/memcheck.txt" | tee -a "$OUT/summary.txt"
tar czf "$OUT/conformance-logs.tgz" -C "$WORK" --exclude=lib --exclude=ext --exclude='*.so' . 2>/dev/null
