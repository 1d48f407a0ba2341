#!/usr/bin/env bash
# Every GPU proof in one call on the lab machine (one H200, 16 cores, no network), from the repo root:
#   bash benchmarks/gpu/lab.sh [SECONDS]
# The device session has little time, so the source build (CPU-bound, niced) runs in the background
# while the GPU proofs run one after another, each with its own time limit; whatever finished by the
# deadline (default 540 s) is packed into $OUT/lab.tgz (one file, as the device tool returns few).
# Needs .carry/wheelhouse (the two sm_90 wheels), .carry/sdists and .carry/fixtures (copies of ../shared).
set -u
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
DEADLINE=$(( $(date +%s) + ${1:-540} ))
OUT=${OUT:-$PWD/lab-out}
R="$OUT/r"
mkdir -p "$R"
export JETSON_MAMBA_SHARED="$PWD/.carry"
# The lab's python3 is itself a venv (/opt/torch/.venv): venvs made from it with
# --system-site-packages do not see its torch, so its site-packages go on PYTHONPATH.
PYTHONPATH=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
export PYTHONPATH
STEPS=" ${LAB_STEPS:-build patch_proof install_proof verify torch_vs_cuda bench yolo} "
want() { [[ "$STEPS" == *" $1 "* ]]; }
left() { echo $(( DEADLINE - $(date +%s) )); }
step() {  # name seconds command...: run with a limit capped by the deadline, log to $R/name.log
  local name=$1 limit=$2; shift 2
  local cap; cap=$(left); [ "$cap" -lt "$limit" ] && limit=$cap
  if [ "$limit" -le 5 ]; then echo "== $name: skipped, no time left" | tee -a "$R/summary.txt"; return; fi
  local start; start=$(date +%s)
  timeout "$limit" "$@" > "$R/$name.log" 2>&1
  echo "== $name: exit $? in $(( $(date +%s) - start )) s (limit $limit s)" | tee -a "$R/summary.txt"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$R/summary.txt"
want build && (RESULTS="$R/build" nice -n 19 timeout $(( $(left) - 15 )) bash benchmarks/gpu/build_sm90.sh \
  > "$R/build.log" 2>&1; echo "== build_sm90: exit $? (background)" >> "$R/summary.txt") &

want patch_proof && step patch_proof 110 python3 benchmarks/gpu/patch_proof.py
want install_proof && step install_proof 120 env RESULTS="$R/install" bash benchmarks/gpu/install_proof.sh
want verify && step verify 170 env OUT="$R/verify" bash benchmarks/gpu/verify_bench.sh verify
want torch_vs_cuda && step torch_vs_cuda 40 env OUT="$R" python3 benchmarks/gpu/torch_vs_cuda.py
want bench && step bench 80 env OUT="$R/verify" bash benchmarks/gpu/verify_bench.sh bench
want yolo && step yolo 90 python3 benchmarks/gpu/yolo_latency.py --out "$R/yolo"

wait
cp -r benchmarks/gpu/results "$R/results" 2>/dev/null
cat "$R/summary.txt"
tar czf "$OUT/lab.tgz" -C "$R" .
cp "$R/summary.txt" "$OUT/summary.txt"
