#!/usr/bin/env bash
# GPU proofs in one call on the lab machine (one H200, 16 cores, no network), from the repo root:
#   LAB_STEPS="..." bash benchmarks/gpu/lab.sh [SECONDS]
# Every step runs alone, in the order below: run side by side, the proofs (each compiling Triton kernels
# on the CPU; mamba-ssm's autotuned SSD kernels take minutes on a cold cache) all ran out of time.
# They share one Triton cache, .lab-cache/triton (git-ignored: it stays on a warm machine between calls);
# it also comes back as $OUT/triton-cache.tgz, which the next call unpacks from .carry/ when the machine
# is fresh. Even the source build runs alone: verify's float64 references on the CPU beside 16 compilers
# ran 30x slower. Whatever finished by the deadline (default 540 s) is packed into $OUT/lab.tgz, and the
# short results are printed at the end.
# Needs .carry/ (scripts/device.sh): wheelhouse (the two sm_90 wheels), sdists, fixtures, whl (ultralytics).
# Steps, in this order: patch_proof install_proof verify_cuda verify_triton verify_torch yolo_train build
#                      bench yolo torch_vs_cuda triton_bench conformance (alone: it takes a whole call)
set -u
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
DEADLINE=$(( $(date +%s) + ${1:-540} ))
OUT=${OUT:-$PWD/lab-out}
R="$OUT/r"
mkdir -p "$R"
export JETSON_MAMBA_SHARED="$PWD/.carry"
export TRITON_CACHE_DIR="$PWD/.lab-cache/triton"
if [ ! -d "$TRITON_CACHE_DIR" ]; then  # a fresh machine: start from the cache an earlier call returned
  mkdir -p "$TRITON_CACHE_DIR"
  [ -s .carry/triton-cache.tgz ] && tar xzf .carry/triton-cache.tgz -C "$TRITON_CACHE_DIR"
fi
# The lab's python3 is itself a venv (/opt/torch/.venv): venvs made from it with
# --system-site-packages do not see its torch, so its site-packages go on PYTHONPATH.
PYTHONPATH=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
export PYTHONPATH
STEPS=" ${LAB_STEPS:-patch_proof install_proof verify_cuda verify_triton verify_torch yolo_train bench yolo} "
want() { [[ "$STEPS" == *" $1 "* ]]; }
left() { echo $(( DEADLINE - $(date +%s) )); }
step() {  # name seconds command...: run with a limit capped by the deadline, log to $R/name.log
  local name=$1 limit=$2; shift 2
  local cap; cap=$(( $(left) - 10 )); [ "$cap" -lt "$limit" ] && limit=$cap
  if [ "$limit" -le 5 ]; then echo "== $name: skipped, no time left" | tee -a "$R/summary.txt"; return; fi
  local start; start=$(date +%s)
  timeout "$limit" "$@" > "$R/$name.log" 2>&1
  echo "== $name: exit $? in $(( $(date +%s) - start )) s (limit $limit s)" | tee -a "$R/summary.txt"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$R/summary.txt"

cache_files() { find "$TRITON_CACHE_DIR" -type f | wc -l; }
echo "== Triton cache at start: $(cache_files) files" | tee -a "$R/summary.txt"
want patch_proof && step patch_proof 900 python3 benchmarks/gpu/patch_proof.py
want install_proof && step install_proof 900 env RESULTS="$R/install" bash benchmarks/gpu/install_proof.sh
for backend in cuda triton torch; do
  want "verify_$backend" && step "verify_$backend" 900 env OUT="$R/verify" bash benchmarks/gpu/verify_bench.sh "$backend"
done
want yolo_train && step yolo_train 900 env JETSON_MAMBA_TRITON_AUTOTUNE=0 bash benchmarks/gpu/yolo_train.sh
want build && step build 900 env RESULTS="$R/build" bash benchmarks/gpu/build_sm90.sh

want bench && step bench 200 env OUT="$R/verify" bash benchmarks/gpu/verify_bench.sh bench
want yolo && step yolo 200 python3 benchmarks/gpu/yolo_latency.py --out "$R/yolo"
want torch_vs_cuda && step torch_vs_cuda 60 env OUT="$R" python3 benchmarks/gpu/torch_vs_cuda.py
want conformance && step conformance 560 env OUT="$R/conformance" bash benchmarks/gpu/conformance.sh "$(( $(left) - 25 ))"
want triton_bench && step triton_bench 400 env OUT="$R/triton" bash benchmarks/gpu/triton_check.sh ${TRITON_ARGS:-}

cp -r benchmarks/gpu/results "$R/results" 2>/dev/null
echo "== Triton cache at end: $(cache_files) files, $(du -sh "$TRITON_CACHE_DIR" | cut -f1)" | tee -a "$R/summary.txt"
tar czf "$OUT/triton-cache.tgz" -C "$TRITON_CACHE_DIR" .
tar czf "$OUT/lab.tgz" -C "$R" .
cp "$R/summary.txt" "$OUT/summary.txt"
# the short results, for the call's output tail
for f in conformance/conformance.md conformance/memcheck.txt patch_proof.log verify/verify-cuda.txt verify/verify-triton.txt verify/verify-torch.txt verify/log-cuda.txt \
         verify/log-triton.txt verify/log-torch.txt yolo_train.log \
         yolo/yolo-latency.md verify/bench.md build.log; do
  [ -s "$R/$f" ] && { echo; echo "######## $f"; grep -v "^\s*$" "$R/$f" | tail -40; }
done
[ -s "$R/install_proof.log" ] && { echo; echo "######## install_proof.log"; sed -n '/--explain --json/,$p' "$R/install_proof.log" | tail -45; }
echo; cat "$R/summary.txt"
