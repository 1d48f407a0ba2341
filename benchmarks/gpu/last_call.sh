#!/usr/bin/env bash
# One lab call for what issue #18 still needs measured on a GPU (repo root; carry .carry/wheelhouse and
# .carry/whl from scripts/device.sh; ~560 s), most needed first:
#  1. the GPU tests of the chunked scan (the one-launch look-back forward's race test among them), the backend
#     channel and the planned launches;
#  2. Mamba-YOLO's scan at batch 1 and 8: the compiled kernel, ours one-pass, chunked (3 launches) and look-back
#     (one launch), eager and in CUDA graphs (bench_triton_gpu.py --edge --graph);
#  3. host us per call of the scan forward, one-pass vs chunked vs look-back, with a cProfile of each
#     (bench_triton_gpu.py --host);
#  4. the GPU tests of CUDA graphs (mode="reduce-overhead") through our custom ops and Mamba-YOLO: they failed
#     on torch 2.11 before the ContextVar fix (8c61c0c), which was only tested on the CPU (torch 2.13);
#  5. the host time per extension call, compiled vs ours, with a cProfile of each side if
#     CPROFILE=1 (profile_edge.py);
#  6. our Python alone per call on this host (bench_cpu_launch_path.py: Triton's launcher a no-op), so that
#     the wall time of 5 splits into ours and the rest (Triton's launcher, CUDA allocations and launches),
#     and torch's custom-op wrapper per call on this host's torch (bench_custom_op_wrapper.py).
# Outputs in $OUT (default ./last-out), the Triton cache as $OUT/triton-cache.tgz.
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
  local budget=$(( $(left) - 5 < limit ? $(left) - 5 : limit ))
  [ "$budget" -gt 20 ] || { echo "== $name skipped: no time left"; return; }
  timeout "$budget" "$@" > "$OUT/$name.txt" 2>&1; echo "== $name exit $? ($(left) s left)"
}
step gpu-tests 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/ops/test_triton_chunked_scan.py \
  tests/ops/test_backend.py tests/ops/test_triton_launch.py
tail -4 "$OUT/gpu-tests.txt"
step edge-scan 200 python3 benchmarks/bench_triton_gpu.py --edge --edge-batch 1 8 --graph --skip-main \
  --json "$OUT/edge-scan.json"
grep "^|" "$OUT/edge-scan.txt"
step host-cost 80 python3 benchmarks/bench_triton_gpu.py --skip-main --host --json "$OUT/host-cost.json"
grep "host cost" "$OUT/host-cost.txt"
step graphs-tests 100 python3 -m pytest -q -p no:cacheprovider -m gpu -k reduce_overhead tests/ops/test_custom_ops.py \
  tests/models/test_mamba_yolo_compile.py
tail -4 "$OUT/graphs-tests.txt"
step host-python 60 python3 benchmarks/bench_cpu_launch_path.py --repeat 5 --calls 300
cat "$OUT/host-python.txt"
step custom-op-wrapper 30 python3 benchmarks/bench_custom_op_wrapper.py
cat "$OUT/custom-op-wrapper.txt"
step host-cprofile 120 python3 benchmarks/gpu/profile_edge.py --host-only ${CPROFILE:+--cprofile}
grep -A12 "^=== host time" "$OUT/host-cprofile.txt" | head -60
tar czf "$OUT/triton-cache.tgz" -C "$TRITON_CACHE_DIR" . 2>/dev/null || true
