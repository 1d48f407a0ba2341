#!/usr/bin/env bash
# On the lab GPU machine (H200 = sm_90, 16 cores, torch 2.11.0+cu130, nvcc 13.0, no network):
# build causal-conv1d 1.6.0 and mamba-ssm 2.2.5 (+ 2.2.6.post3 when its sdist is in .carry/sdists)
# for sm_90 with `jetson-mamba build`, both packages of the pair in parallel, print wall times,
# per-unit compile times and wheel sizes, then install each mamba-ssm's wheels with causal-conv1d's into a
# fresh venv (seeing the system torch) and run `jetson-mamba verify --backend cuda` on the GPU against them.
# Targets (issue 6): the pair in <= 6 minutes wall, <= 20 MB of wheels together.
#   usage: bash benchmarks/gpu/build_sm90.sh   (PYTHON=..., SDISTS=..., RESULTS=... to override; NEWER=0: no 2.2.6.post3)
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
SDISTS=${SDISTS:-.carry/sdists}
RESULTS=${RESULTS:-benchmarks/gpu/results}
WORK=$(mktemp -d /tmp/jm-build-sm90.XXXX)
mkdir -p "$RESULTS"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export XDG_CACHE_HOME="$WORK/cache"
if ! "$PY" -c "import rich, packaging, torch" 2>/dev/null; then
  echo "build_sm90: $PY lacks rich, packaging or torch; jetson-mamba needs rich and packaging (pip install rich packaging)" >&2
  exit 2
fi
[ -d "$SDISTS" ] || { echo "build_sm90: no sdists at $SDISTS (scripts/device.sh copies ../shared/sdists there)" >&2; exit 2; }
echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $7}') GB available; $("$PY" -c 'import torch; print("torch", torch.__version__)'); $(nvcc --version | tail -1)"

cores=$(nproc)
# causal-conv1d 1.6.0 has 4 translation units, mamba-ssm 2.2.x has 10: each gets what it can use.
conv_jobs=4
mamba_jobs=$(( cores - conv_jobs > 1 ? cores - conv_jobs : 1 ))
build() {  # name==version jobs tag
  "$PY" -m jetson_mamba build "$1" --arch 9.0 --source "$SDISTS" --out "$WORK/wheels" --jobs "$2" --json \
    > "$WORK/$3.json" 2> "$WORK/$3.err"
  local rc=$?
  [ $rc -eq 0 ] || { echo "== $1 FAILED (exit $rc):"; tail -20 "$WORK/$3.err"; cat "$WORK/$3.json"; }
  return $rc
}
start=$(date +%s.%N)
build causal-conv1d==1.6.0 "$conv_jobs" conv & conv_pid=$!
build mamba-ssm==2.2.5 "$mamba_jobs" mamba225 & mamba_pid=$!
wait $conv_pid; conv_rc=$?
wait $mamba_pid; mamba_rc=$?
pair_wall=$(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $start}")
echo "== pair causal-conv1d 1.6.0 + mamba-ssm 2.2.5 for sm_90, in parallel (jobs $conv_jobs + $mamba_jobs): ${pair_wall} s wall"
# Verify the built wheels on the GPU: a fresh venv per mamba-ssm version that sees the system torch,
# only our wheels installed; --backend cuda: the compiled kernels of these wheels, through their own
# APIs, dispatch and mamba_ssm's Mamba/Mamba2 (the Triton and torch backends do not depend on the
# build); untuned Triton tiles for speed.
verify_wheels() {  # tag mamba-version
  local venv="$WORK/venv-$1" start rc
  "$PY" -m venv --system-site-packages "$venv"
  "$venv/bin/python" -m pip install -q --no-deps --no-index --force-reinstall \
    "$WORK"/wheels/causal_conv1d-1.6.0+*.whl "$WORK"/wheels/mamba_ssm-"$2"+*.whl
  # the built wheels, not a copy elsewhere on PYTHONPATH (lab.sh puts the system site-packages there)
  "$venv/bin/python" - "$venv" "$1" <<'PYEOF' || return 2
import sys
import causal_conv1d, causal_conv1d_cuda, mamba_ssm, selective_scan_cuda
files = [m.__file__ for m in (causal_conv1d, causal_conv1d_cuda, mamba_ssm, selective_scan_cuda)]
print(f"== {sys.argv[2]} imports from", *files)
stray = [f for f in files if not f.startswith(sys.argv[1])]
if stray:
    sys.exit(f"== not the built wheels: {stray} shadow the venv's (uninstall them, or drop them from PYTHONPATH)")
PYEOF
  start=$(date +%s)
  JETSON_MAMBA_TRITON_AUTOTUNE=0 "$venv/bin/python" -m jetson_mamba -v verify --backend cuda --json \
    > "$RESULTS/build-sm90-verify-$1.json" 2> "$RESULTS/build-sm90-verify-$1.log"
  rc=$?
  echo "== jetson-mamba verify --backend cuda with causal-conv1d 1.6.0 + mamba-ssm $2 as built: exit $rc" \
    "in $(( $(date +%s) - start )) s (report: $RESULTS/build-sm90-verify-$1.json)"
  "$venv/bin/python" -c "import json, sys; d = json.load(open(sys.argv[1])); print('   ', d['device'], d['summary'])" \
    "$RESULTS/build-sm90-verify-$1.json"
  return $rc
}
newer_rc=0; newer_verify_rc=0; verify_rc=1
if [ "${NEWER:-1}" = 0 ]; then
  echo "== mamba-ssm 2.2.6.post3: NEWER=0, skipped"
elif ls "$SDISTS"/mamba_ssm-2.2.6.post3.tar.gz >/dev/null 2>&1; then
  build mamba-ssm==2.2.6.post3 "$cores" mamba226; newer_rc=$?
else
  echo "== mamba-ssm 2.2.6.post3: no sdist in $SDISTS (scripts/device.sh fetches it), skipped"
fi
"$PY" - "$WORK" "$RESULTS/build-sm90.json" "$pair_wall" <<'EOF'
import json, pathlib, sys
work, target, wall = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), float(sys.argv[3])
rows = []
for name in ("conv", "mamba225", "mamba226"):
    path = work / f"{name}.json"
    if path.is_file() and path.stat().st_size:
        report = json.loads(path.read_text())
        rows.extend(r for r in report.get("results", []))
for r in rows:
    units = ", ".join(f"{u} {s:.0f}s" for u, s in r["unit_seconds"][:4])
    print(f"{r['name']} {r['version']}: {r['seconds']:.1f} s, {r['size'] / 1e6:.1f} MB, "
          f"{r['compiled_units']} units (slowest: {units}) -> {pathlib.Path(r['wheel']).name}")
pair = [r for r in rows if (r["name"], r["version"]) in {("causal-conv1d", "1.6.0"), ("mamba-ssm", "2.2.5")}]
pair_size = sum(r["size"] for r in pair)
print(f"pair: {wall:.1f} s wall (target <= 360 s), {pair_size / 1e6:.1f} MB together (target <= 20 MB)")
target.write_text(json.dumps({"pair_wall_seconds": wall, "pair_bytes": pair_size, "results": rows}, indent=2))
EOF
# after every build, one at a time: verify's float64 references on the CPU beside 16 compilers ran 30x slower
[ $conv_rc -eq 0 ] && [ $mamba_rc -eq 0 ] && { verify_wheels pair 2.2.5; verify_rc=$?; }
[ $newer_rc -eq 0 ] && [ -s "$WORK/mamba226.json" ] && { verify_wheels newer 2.2.6.post3; newer_verify_rc=$?; }

exit $(( conv_rc || mamba_rc || newer_rc || verify_rc || newer_verify_rc ))
