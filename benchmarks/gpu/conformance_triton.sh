#!/usr/bin/env bash
# The Triton lane of upstream's conformance files on the lab GPU, sharded, in one call of ~9 minutes:
#   bash scripts/device.sh            (here, once: fills .carry/)
#   bash benchmarks/gpu/conformance_triton.sh [SECONDS]       (on the GPU machine, carry .carry; default 520)
# Why sharded: one pytest process compiles our Triton conv kernels' thousands of variants (flags, dtype,
# width, stride divisibility) one after another (0.5-1.8 s a case on the H100: ~280 of ~13,000 cases in
# a 9-minute lane). Here SHARDS processes (default 12) each run shard K/N of the same files and share one
# TRITON_CACHE_DIR (Triton's cache is safe across processes: a kernel compiled by one is loaded by all).
#   shards:  causal-conv1d 1.7.0 --full, causal-conv1d 1.6.0 --full, the mamba-ssm op files --full
#            (selective-scan, ssd, state-update, layernorm-gated), each `--shard K/N`;
#   two more processes: mamba-generation and mamba-determinism --full on the triton AND torch backends.
# Every call has its own --timeout (a file out of time reports what ran, the rest as "not run", and an
# error) and an outer `timeout`; nothing waits past SECONDS. Outputs in $OUT (default ./conformance-out),
# rewritten after every finished call: conformance.md (shards added together: the table for
# benchmarks/RESULTS.md), one JSON per call, <lane>.log, summary.txt, conformance-logs.tgz at the end.
set -u
cd "$(dirname "$0")/../.."
BUDGET=${1:-520}
SHARDS=${SHARDS:-12}
OUT=${OUT:-$PWD/conformance-out}
WORK=$(mktemp -d /tmp/jm-conformance-triton.XXXX)
mkdir -p "$OUT"
START=$(date +%s)
fail() { echo "conformance_triton: $*" | tee -a "$OUT/summary.txt" >&2; exit 1; }
[ -d .carry/sdists ] && [ -d .carry/upstream ] || fail ".carry/sdists or .carry/upstream missing: run bash scripts/device.sh here and carry .carry"
export JETSON_MAMBA_SHARED="$PWD/.carry" PYTHONUNBUFFERED=1 TRITON_CACHE_DIR="$WORK/triton-cache"
export JETSON_MAMBA_TRITON_AUTOTUNE=${CONFORMANCE_AUTOTUNE:-0}  # first config, as verify does (see conformance.sh)
PY=${PYTHON:-python3}
# pytest and rich from .carry/whl, behind what the lab python already has (conformance.sh's set-up)
"$PY" -m pip install -q --no-index --no-deps --target "$WORK/site" \
  .carry/whl/{pytest,pluggy,iniconfig,pygments,packaging,rich,markdown_it_py,mdurl}-*.whl 2>/dev/null \
  || echo "note: could not unpack .carry/whl (pytest/rich must then be installed already)"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}:$WORK/site"
timeout 120 "$PY" -c "import torch, triton, pytest; assert torch.cuda.is_available(), 'no CUDA device'
print('torch', torch.__version__, 'triton', triton.__version__, 'pytest', pytest.__version__, torch.cuda.get_device_name())" \
  | tee "$OUT/summary.txt" || fail "torch/triton/pytest not importable or no GPU (see above)"
echo "shards: $SHARDS, budget ${BUDGET} s, $(nproc) cores" | tee -a "$OUT/summary.txt"

left() { echo $(( BUDGET - 25 - $(date +%s) + START )); }
merge() {  # the table so far (shards added); a crash here must not stop the lanes
  timeout 60 "$PY" -c 'import sys; from pathlib import Path; from jetson_mamba.conformance.report import merged_table
print(merged_table(sorted(Path(sys.argv[1]).glob("*.json"))))' "$OUT" > "$OUT/conformance.md.new" 2>> "$OUT/merge.log" \
    && mv "$OUT/conformance.md.new" "$OUT/conformance.md"
}
conformance() {  # lane name, seconds, args...: one `jetson-mamba conformance` call, its JSON kept in $OUT
  local lane=$1 limit=$2; shift 2
  [ "$limit" -gt 10 ] || { echo "$lane: no time left for $*" >> "$OUT/$lane.log"; return; }
  timeout -k 10 $(( limit + 30 )) "$PY" -m jetson_mamba conformance --device cuda --work "$WORK/$lane" \
    --pin-upstream-autotune --timeout "$limit" --json "$@" > "$OUT/$lane-$(date +%s%N).json" 2>> "$OUT/$lane.log"
  echo "$lane: exit $? after $(( $(date +%s) - START )) s: $*" >> "$OUT/$lane.log"
  merge
}
shard() {  # K: the op files' shard K/N, the big causal-conv1d files last
  local k=$1 lane=triton-s$1
  conformance "$lane" $(( $(left) * 2 / 10 )) --backend triton --shard "$k/$SHARDS" --full \
    --file mamba-selective-scan --file mamba-ssd --file mamba-state-update --file mamba-layernorm-gated
  conformance "$lane" $(( $(left) * 6 / 10 )) --backend triton --shard "$k/$SHARDS" --full --file causal-conv1d-1.7.0
  conformance "$lane" "$(left)" --backend triton --shard "$k/$SHARDS" --full --file causal-conv1d-1.6.0
}
for k in $(seq 1 "$SHARDS"); do shard "$k" & done
for backend in triton torch; do
  conformance "models-$backend" "$(left)" --backend "$backend" --full --file mamba-generation --file mamba-determinism &
done
wait
echo "== all lanes done in $(( $(date +%s) - START )) s" | tee -a "$OUT/summary.txt"
merge
cat "$OUT/conformance.md"
du -sh "$TRITON_CACHE_DIR" 2>/dev/null | sed 's/^/triton cache: /' | tee -a "$OUT/summary.txt"
tar czf "$OUT/conformance-logs.tgz" -C "$WORK" --exclude=lib --exclude=triton-cache . 2>/dev/null
