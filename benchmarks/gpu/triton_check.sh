#!/usr/bin/env bash
# The Triton kernels on the lab GPU in one command (repo root): install the compiled wheels to
# compare against, run the Triton test suites at real shapes, then the side-by-side timing table.
#   bash benchmarks/gpu/triton_check.sh [--sweep] [--cold-start] [--block] [--graph] [--standin]
# Results: $OUT/triton_bench.json (OUT defaults to ./triton-out) and stdout.
# Mamba-YOLO scan at batch 1 and 8, compiled vs ours (one-pass, chunked fwd+bwd, chunked fwd + one-pass bwd,
# custom op eager and reduce-overhead), ~5 min:
#   TESTS=tests/ops/test_triton_chunked_scan.py TEST_TIMEOUT=75 BENCH_TIMEOUT=300 \
#       bash benchmarks/gpu/triton_check.sh --edge --edge-batch 1 8 --graph --skip-main
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/triton-out}
mkdir -p "$OUT"
# Into a folder of its own, not the system python: installed there, the unpatched wheels would shadow
# every later venv's own mamba_ssm (lab.sh puts the system site-packages on PYTHONPATH).
SITE=$(mktemp -d /tmp/jm-triton-site.XXXX)
python3 -m pip install -q --no-deps --no-index --target "$SITE" .carry/wheelhouse/*.whl
export PYTHONPATH=$PWD/src:$PWD/benchmarks:$SITE${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
# The public jetson_mamba.ops functions must run the Triton kernels, not the compiled ones.
JETSON_MAMBA_BACKEND=triton JETSON_MAMBA_TRITON_AUTOTUNE=0 timeout "${TEST_TIMEOUT:-240}" \
    python3 -m pytest -q -p no:cacheprovider ${TESTS:-tests/ops/test_triton_selective_scan.py \
    tests/ops/test_triton_causal_conv1d.py} > "$OUT/pytest.txt" 2>&1
echo "pytest exit: $?"
tail -25 "$OUT/pytest.txt"
timeout "${BENCH_TIMEOUT:-420}" python3 benchmarks/bench_triton_gpu.py --json "$OUT/triton_bench.json" "$@"
echo "bench exit: $?"
