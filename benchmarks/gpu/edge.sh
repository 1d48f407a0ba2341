#!/usr/bin/env bash
# Issue 18's table on the lab GPU in one command (repo root, .carry/ from scripts/device.sh carried):
#   bash benchmarks/gpu/edge.sh [SECONDS]         (default 500: the whole call stays inside 600 s)
#   EDGE_SCAN=1 bash benchmarks/gpu/edge.sh       (also the scan rows of bench_triton_gpu.py --edge, B1 and B8)
#   EDGE_TEST=1 bash benchmarks/gpu/edge.sh       (then the gpu test of tests/bench/test_bench_workloads.py, tiny)
#   EDGE_AGAIN="NAME:VAR=VALUE ..." bash benchmarks/gpu/edge.sh   (then batch 1 again with each setting, in the
#       same process tree and machine, into edge-NAME.md: e.g. "three-launches:JETSON_MAMBA_SCAN_LOOKBACK=0"
#       (the forward chunked only inside graphs), "chunked:JETSON_MAMBA_SCAN_CHUNKED=1" (chunked eagerly too))
#   EDGE_BATCH=1 bash benchmarks/gpu/edge.sh      (the batches of the first bench; default 1,8)
#   EDGE_HOST=1 bash benchmarks/gpu/edge.sh       (first: host us per extension call and per layer, compiled vs
#                                                  ours: profile_edge.py --host-only, into $OUT/edge-host.txt)
# Upstream's Mamba(1024), a 130M-shaped MambaLMHeadModel (prefill, generate with and without cg=True) and
# Mamba-YOLO-T (eager, and ours under torch.compile reduce-overhead), batch 1 and 8, compiled kernels (the
# sm_90 wheels: mamba-ssm 2.2.5, causal-conv1d 1.6.0) against ours in one process:
#   jetson-mamba bench --op block --op lm --op yolo --batch 1,8 --markdown $OUT/edge.md --json
# The wheels go into a --target folder on PYTHONPATH, never into the system python, then `jetson-mamba
# patch` fixes that copy for transformers 5. Each workload stops starting measurements after BUDGET
# seconds (default 130); every row is appended to $OUT/edge-rows.jsonl as soon as it is measured, so a
# run cut short by the deadline keeps what it measured. The Triton cache is .lab-cache/triton (as lab.sh).
# Outputs in $OUT (default ./edge-out): edge.md (for benchmarks/RESULTS.md), edge.json, edge-rows.jsonl,
# edge.log, patch.json, [edge-test.txt], [edge-scan.json], [edge-host.txt].
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
DEADLINE=$(( $(date +%s) + ${1:-500} ))
OUT=${OUT:-$PWD/edge-out}
mkdir -p "$OUT"
left() { echo $(( DEADLINE - $(date +%s) )); }
export TRITON_CACHE_DIR="$PWD/.lab-cache/triton"
if [ ! -d "$TRITON_CACHE_DIR" ]; then  # a fresh machine: start from the cache an earlier call returned
  mkdir -p "$TRITON_CACHE_DIR"
  [ -s .carry/triton-cache.tgz ] && tar xzf .carry/triton-cache.tgz -C "$TRITON_CACHE_DIR"
fi
SITE=$(mktemp -d /tmp/jm-edge-site.XXXX)
python3 -m pip install -q --no-deps --no-index --target "$SITE" .carry/wheelhouse/*.whl \
  || echo "== no compiled wheels in .carry/wheelhouse: ours alone, no ratio"
if ! python3 -c "import rich, packaging" 2>/dev/null; then  # jetson-mamba's own needs, from .carry/whl
  python3 -m pip install -q --no-deps --no-index --target "$SITE" \
    .carry/whl/{rich,markdown_it_py,mdurl,pygments,packaging}-*.whl || echo "== no rich wheels in .carry/whl"
fi
export PYTHONPATH="$PWD/src:$PWD/benchmarks:$SITE${PYTHONPATH:+:$PYTHONPATH}"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u '+%Y-%m-%d %H:%M UTC')"
} | tee "$OUT/edge.log"
python3 -m jetson_mamba patch --json > "$OUT/patch.json"; echo "== patch exit $?" | tee -a "$OUT/edge.log"

if [ "${EDGE_HOST:-0}" = 1 ]; then  # before the bench, whose budget would leave it no time
  timeout "$(( $(left) / 3 ))" python3 benchmarks/gpu/profile_edge.py --host-only > "$OUT/edge-host.txt" 2>&1
  echo "== host profile exit $?" | tee -a "$OUT/edge.log"; cat "$OUT/edge-host.txt"
fi
rm -f "$OUT/edge-rows.jsonl"
timeout "$(( $(left) - 5 ))" python3 -m jetson_mamba bench --op block --op lm --op yolo --batch "${EDGE_BATCH:-1,8}" \
  --backend cuda,triton --dtype bfloat16 --budget "${BUDGET:-130}" --partial "$OUT/edge-rows.jsonl" \
  --markdown "$OUT/edge.md" --json > "$OUT/edge.json" 2>> "$OUT/edge.log"
echo "== bench exit $? ($(left) s left)" | tee -a "$OUT/edge.log"
if [ "${EDGE_TEST:-0}" = 1 ] && [ "$(left)" -gt 60 ]; then  # the gpu test: both sides and a ratio on every row
  python3 -c "import pytest" 2>/dev/null || python3 -m pip install -q --no-deps --no-index --target "$SITE" \
    .carry/whl/{pytest,pluggy,iniconfig}-*.whl
  timeout "$(( $(left) - 5 ))" python3 -m pytest -q -p no:cacheprovider -m gpu tests/bench/test_bench_workloads.py \
    > "$OUT/edge-test.txt" 2>&1
  echo "== gpu test exit $?" | tee -a "$OUT/edge.log"; tail -5 "$OUT/edge-test.txt"
fi
for again in ${EDGE_AGAIN:-}; do  # batch 1 again under one setting each (name:VAR=VALUE)
  name=${again%%:*}; setting=${again#*:}
  [ "$(left)" -gt 60 ] || { echo "== $name skipped: no time left" | tee -a "$OUT/edge.log"; break; }
  env "$setting" timeout "$(( $(left) - 5 ))" python3 -m jetson_mamba bench --op block --op lm --op yolo \
    --batch 1 --backend cuda,triton --dtype bfloat16 --budget "${BUDGET:-130}" \
    --partial "$OUT/edge-$name-rows.jsonl" --markdown "$OUT/edge-$name.md" --json > "$OUT/edge-$name.json" \
    2>> "$OUT/edge.log"
  echo "== $name ($setting) bench exit $? ($(left) s left)" | tee -a "$OUT/edge.log"
  cat "$OUT/edge-$name.md" 2>/dev/null
done
if [ "${EDGE_SCAN:-0}" = 1 ] && [ "$(left)" -gt 60 ]; then
  timeout "$(( $(left) - 5 ))" python3 benchmarks/bench_triton_gpu.py --edge --edge-batch 1 8 --skip-main \
    --json "$OUT/edge-scan.json" >> "$OUT/edge.log" 2>&1
  echo "== scan rows exit $?" | tee -a "$OUT/edge.log"
fi
[ -s "$OUT/edge.md" ] && cat "$OUT/edge.md"
# the rows measured, also when the deadline cut the bench short
[ -s "$OUT/edge-rows.jsonl" ] && python3 - "$OUT/edge-rows.jsonl" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(f"{r['workload']:5} B{r['batch']:<2} {r['name'][:62]:62} ours {r['ours']} compiled {r['compiled']} "
          f"ratio {r['ratio']} {r['status']} {r['message'] or ''}")
EOF
tar czf "$OUT/triton-cache.tgz" -C "$TRITON_CACHE_DIR" . 2>/dev/null || true
