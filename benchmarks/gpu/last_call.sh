#!/usr/bin/env bash
# One lab call for what issue #18 still needs measured on a GPU (repo root, .carry/ from scripts/device.sh
# carried; ~250 s of a 600 s call):
#  1. the GPU tests of CUDA graphs (mode="reduce-overhead") through our custom ops and Mamba-YOLO: they failed
#     on torch 2.11 before the ContextVar fix (8c61c0c), which was only tested on the CPU (torch 2.13);
#  2. the host time per extension call, compiled vs ours, with a cProfile of each side: where our ~61 us conv
#     forward goes on the lab host (Triton's launcher, CUDA allocations, or our Python: ~20 us on a CPU);
#  3. host us per call of the scan forward, one-pass vs chunked (3 launches), with a cProfile of each;
#  4. the GPU tests of the backend channel, the chunked scan and the planned launches.
# Outputs in $OUT (default ./last-out).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/last-out}; mkdir -p "$OUT"
SITE=$(mktemp -d /tmp/jm-last.XXXX)
python3 -m pip install -q --no-deps --no-index --target "$SITE/w" .carry/wheelhouse/*.whl
python3 -m pip install -q --no-deps --no-index --target "$SITE/t" \
  .carry/whl/{pytest,pluggy,iniconfig,pygments,packaging,rich,markdown_it_py,mdurl}-*.whl
export PYTHONPATH="$PWD/src:$PWD/benchmarks:$SITE/w:$SITE/t" PYTHONUNBUFFERED=1
export TRITON_CACHE_DIR="$PWD/.lab-cache/triton"
mkdir -p "$TRITON_CACHE_DIR"
[ -s .carry/triton-cache.tgz ] && tar xzf .carry/triton-cache.tgz -C "$TRITON_CACHE_DIR"
python3 -m jetson_mamba patch --json > "$OUT/patch.json"; echo "== patch exit $?"
timeout 120 python3 -m pytest -q -p no:cacheprovider -m gpu -k reduce_overhead tests/ops/test_custom_ops.py \
  tests/models/test_mamba_yolo_compile.py > "$OUT/graphs-tests.txt" 2>&1; echo "== graphs tests exit $?"
tail -4 "$OUT/graphs-tests.txt"
timeout 150 python3 benchmarks/gpu/profile_edge.py --host-only --cprofile > "$OUT/host-cprofile.txt" 2>&1
echo "== host cprofile exit $?"; grep "^===" "$OUT/host-cprofile.txt"
timeout 100 python3 benchmarks/bench_triton_gpu.py --skip-main --host --json "$OUT/host-cost.json" > "$OUT/host-cost.txt" 2>&1
echo "== host cost exit $?"; grep "host cost" "$OUT/host-cost.txt"
timeout 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests/ops/test_backend.py tests/ops/test_triton_chunked_scan.py \
  tests/ops/test_triton_launch.py > "$OUT/gpu-tests.txt" 2>&1; echo "== gpu tests exit $?"; tail -4 "$OUT/gpu-tests.txt"
tar czf "$OUT/triton-cache.tgz" -C "$TRITON_CACHE_DIR" . 2>/dev/null || true
# 5. Mamba-YOLO's scan at batch 1 and 8: the compiled kernel, ours one-pass, chunked (3 launches) and look-back
#    (one launch), eager and in CUDA graphs
timeout 200 python3 benchmarks/bench_triton_gpu.py --edge --edge-batch 1 8 --graph --skip-main \
  --json "$OUT/edge-scan.json" > "$OUT/edge-scan.txt" 2>&1; echo "== edge scan exit $?"; grep "^|" "$OUT/edge-scan.txt"
tar czf "$OUT/triton-cache.tgz" -C "$TRITON_CACHE_DIR" . 2>/dev/null || true
