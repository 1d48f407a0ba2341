#!/usr/bin/env bash
# One lab call (repo root, .carry carried): mamba-ssm main's GPU proof (#21), the batch-1 profile of upstream's
# Mamba(1024) and LM prefill, compiled vs ours (#18), then the GPU tests of the backend channel and the chunked scan.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/last-out}; mkdir -p "$OUT"
SITE=$(mktemp -d /tmp/jm-last.XXXX)
python3 -m pip install -q --no-deps --no-index --target "$SITE/w" .carry/wheelhouse/*.whl
python3 -m pip install -q --no-deps --no-index --target "$SITE/t" \
  .carry/whl/{pytest,pluggy,iniconfig,pygments,packaging,rich,markdown_it_py,mdurl}-*.whl
PYTHONPATH="$SITE/t" timeout 170 python3 benchmarks/gpu/main_proof.py > "$OUT/main_proof.txt" 2>&1
echo "== main_proof exit $?" | tee -a "$OUT/main_proof.txt"; tail -8 "$OUT/main_proof.txt"
export PYTHONPATH="$PWD/src:$PWD/benchmarks:$SITE/w:$SITE/t"
python3 -m jetson_mamba patch --json > "$OUT/patch.json"; echo "== patch exit $?"
timeout 200 python3 benchmarks/gpu/profile_edge.py > "$OUT/profile_edge.txt" 2>&1; echo "== profile exit $?"
grep "^===" "$OUT/profile_edge.txt"
timeout 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests/ops/test_backend.py tests/ops/test_triton_chunked_scan.py \
  tests/ops/test_triton_launch.py > "$OUT/gpu-tests.txt" 2>&1; echo "== gpu tests exit $?"; tail -4 "$OUT/gpu-tests.txt"
