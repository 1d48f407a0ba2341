#!/usr/bin/env bash
# One lab call for what issue #18 still needs measured on a GPU (repo root; carry .carry/wheelhouse and
# .carry/whl from scripts/device.sh; ~560 s), most needed first; each step stops at its own limit and at the
# call's deadline:
#  gpu-tests: the GPU tests of the chunked scan (the one-launch look-back forward's race test among them),
#     the backend channel and the planned launches;
#  graphs-tests: CUDA graphs (mode="reduce-overhead") through our custom ops and Mamba-YOLO;
#  b1-default, b1-chunked: the whole models at batch 1 (jetson-mamba bench --op block --op lm --op yolo,
#     BUDGET seconds a workload), by default and with the scan forward chunked eagerly wherever plan_chunk
#     picks chunks (JETSON_MAMBA_SCAN_CHUNKED=1);
#  edge-scan: Mamba-YOLO's scan at batch 1 and 8 (EDGE_BATCHES): the compiled kernel, ours one-pass, chunked
#     (3 launches) and look-back (one launch), eager and in CUDA graphs (bench_triton_gpu.py --edge --graph);
#  host-python: our Python alone per call on this host (bench_cpu_launch_path.py: Triton's launcher a
#     no-op), so that host-cprofile's wall time splits into ours and the rest (Triton's launcher, CUDA
#     allocations and launches); custom-op-wrapper: torch's custom-op wrapper per call on this host's torch;
#  host-cost: host us per call of the scan forward, one-pass vs chunked vs look-back (bench_triton_gpu.py --host);
#  host-cprofile: the host time per extension call, compiled vs ours (profile_edge.py; its cProfile of each
#     side with CPROFILE=1); host-sync: the same with a synchronisation before each timed call (no call
#     waits for launch-queue space), so that the difference between the two is that waiting.
# STEPS="gpu-tests b1-default ..." runs only the steps named.
# Outputs in $OUT (default ./last-out), packed at the end into $OUT/outputs.tgz; the Triton cache as
# $OUT/triton-cache.tgz.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/last-out}; mkdir -p "$OUT"
DEADLINE=$(( $(date +%s) + ${1:-560} ))
left() { echo $(( DEADLINE - $(date +%s) )); }
SITE=$(mktemp -d /tmp/jm-last.XXXX)
python3 -m pip install -q --no-deps --no-index --target "$SITE/w" .carry/wheelhouse/*.whl
python3 -m pip install -q --no-deps --no-index --target "$SITE/t" \
  .carry/whl/{pytest,pluggy,iniconfig,pygments,packaging,rich,markdown_it_py,mdurl}-*.whl
export PYTHONPATH="$PWD/src:$PWD/benchmarks:$SITE/w:$SITE/t" PYTHONUNBUFFERED=1
export TRITON_CACHE_DIR="$PWD/.lab-cache/triton"
mkdir -p "$TRITON_CACHE_DIR"
[ -s .carry/triton-cache.tgz ] && tar xzf .carry/triton-cache.tgz -C "$TRITON_CACHE_DIR"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/device.txt"
echo "commit $(git rev-parse --short HEAD 2>/dev/null), $(date -u '+%Y-%m-%d %H:%M UTC')" | tee -a "$OUT/device.txt"
python3 -m jetson_mamba patch --json > "$OUT/patch.json"; echo "== patch exit $?"
step() {  # step NAME SECONDS COMMAND...: run with at most SECONDS (and what is left), output in $OUT/NAME.txt
  local name=$1 limit=$2; shift 2
  [ -z "${STEPS:-}" ] || [[ " $STEPS " == *" $name "* ]] || return 0
  local budget=$(( $(left) - 5 < limit ? $(left) - 5 : limit ))
  [ "$budget" -gt 20 ] || { echo "== $name skipped: no time left"; return; }
  timeout "$budget" "$@" > "$OUT/$name.txt" 2>&1; echo "== $name exit $? ($(left) s left)"
}
b1() {  # b1 NAME [VAR=VALUE]: the whole models at batch 1, compiled vs ours, under one setting
  local name=$1; shift
  step "$name" 170 env "$@" python3 -m jetson_mamba bench --op block --op lm --op yolo --batch 1 \
    --backend cuda,triton --dtype bfloat16 --budget "${BUDGET:-45}" --markdown "$OUT/$name.md"
  cat "$OUT/$name.md" 2>/dev/null
}
step gpu-tests 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/ops/test_triton_chunked_scan.py \
  tests/ops/test_backend.py tests/ops/test_triton_launch.py
tail -4 "$OUT/gpu-tests.txt"
step graphs-tests 100 python3 -m pytest -q -p no:cacheprovider -m gpu -k reduce_overhead tests/ops/test_custom_ops.py \
  tests/models/test_mamba_yolo_compile.py
tail -4 "$OUT/graphs-tests.txt"
b1 b1-default
b1 b1-chunked JETSON_MAMBA_SCAN_CHUNKED=1  # the forward chunked eagerly wherever plan_chunk picks chunks
step edge-scan 200 python3 benchmarks/bench_triton_gpu.py --edge --edge-batch ${EDGE_BATCHES:-1 8} --graph \
  --skip-main --json "$OUT/edge-scan.json"
grep "^|" "$OUT/edge-scan.txt"
step host-python 60 python3 benchmarks/bench_cpu_launch_path.py --repeat 5 --calls 300
cat "$OUT/host-python.txt"
step custom-op-wrapper 30 python3 benchmarks/bench_custom_op_wrapper.py
cat "$OUT/custom-op-wrapper.txt"
step host-cost 80 python3 benchmarks/bench_triton_gpu.py --skip-main --host --json "$OUT/host-cost.json"
grep "host cost" "$OUT/host-cost.txt"
step host-cprofile 120 python3 benchmarks/gpu/profile_edge.py --host-only ${CPROFILE:+--cprofile}
grep -A12 "^=== host time" "$OUT/host-cprofile.txt" | head -60
step host-sync 120 python3 benchmarks/gpu/profile_edge.py --host-only --sync
grep -A12 "^=== host time" "$OUT/host-sync.txt" | head -60
tar czf "$OUT/triton-cache.tgz" -C "$TRITON_CACHE_DIR" . 2>/dev/null || true
# the device tool returns a few files only: every output in one archive (a run cut short keeps the files)
(cd "$OUT" && shopt -s nullglob && files=(*.txt *.md *.json) && [ ${#files[@]} -gt 0 ] \
  && tar czf outputs.tgz -- "${files[@]}" && rm -f -- "${files[@]}")
