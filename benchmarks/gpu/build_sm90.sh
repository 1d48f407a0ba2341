#!/usr/bin/env bash
# On the lab GPU machine (16 cores, nvcc 13.0, torch 2.11 + cu130, Python 3.12, no network): the newest
# releases, causal-conv1d 1.7.0 + mamba-ssm 2.3.2.post1, built for sm_90 by the DEFAULT command (no
# --jobs: the packages compile at the same time, jobs shared by units), its progress piped through tee
# as a CI log would be, then the built wheels installed into a fresh venv that sees the system torch and
# checked on the GPU with `jetson-mamba verify --backend cuda`.
# Target (issue 24): the build <= 360 s wall; the log shows a line per finished unit and a heartbeat.
#   usage: bash benchmarks/gpu/build_sm90.sh
#   env:   PYTHON (python3), SDISTS (.carry/sdists), RESULTS (benchmarks/gpu/results),
#          PAIR ("causal-conv1d==1.7.0 mamba-ssm==2.3.2.post1"), ARCH (9.0)
# Writes to RESULTS: build-sm90.log (the piped progress), build-sm90.json (--json), build-sm90-rows.md
# (the RESULTS.md rows), build-sm90-verify.{json,log}, build-logs.tgz (each package's full compiler log).
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
SDISTS=${SDISTS:-.carry/sdists}
RESULTS=${RESULTS:-benchmarks/gpu/results}
PAIR=${PAIR:-causal-conv1d==1.7.0 mamba-ssm==2.3.2.post1}
ARCH=${ARCH:-9.0}
WORK=$(mktemp -d /tmp/jm-build-sm90.XXXX)
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export XDG_CACHE_HOME="$WORK/cache"
if ! "$PY" -c "import rich, packaging, torch" 2>/dev/null; then
  echo "build_sm90: $PY lacks rich, packaging or torch; jetson-mamba needs rich and packaging" >&2
  exit 2
fi
[ -d "$SDISTS" ] || { echo "build_sm90: no sdists at $SDISTS (scripts/device.sh copies ../shared/sdists there)" >&2; exit 2; }
HOST="$(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GB RAM, $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1), nvcc $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), torch $("$PY" -c 'import torch; print(torch.__version__)'), Python $("$PY" -c 'import platform; print(platform.python_version())')"
echo "== host: $HOST; $(lscpu | sed -n 's/^Model name: *//p')"

# The default command, as a user types it; --json only moves the report to stdout (a file here), the
# progress stays on stderr, piped through tee like a CI log.
echo "== jetson-mamba build $PAIR --arch $ARCH --source $SDISTS --out $WORK/wheels --json"
start=$(date +%s.%N)
# shellcheck disable=SC2086
"$PY" -m jetson_mamba build $PAIR --arch "$ARCH" --source "$SDISTS" --out "$WORK/wheels" --json \
  2>&1 >"$RESULTS/build-sm90.json" | tee "$RESULTS/build-sm90.log"
build_rc=${PIPESTATUS[0]}
wall=$(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $start}")
echo "== build: exit $build_rc in $wall s wall (target <= 360 s)"
(cd "$XDG_CACHE_HOME/jetson-mamba/build" 2>/dev/null && tar czf "$RESULTS/build-logs.tgz" -- *.log)

"$PY" - "$RESULTS/build-sm90.json" "$wall" "$ARCH" "$HOST" "$RESULTS/build-sm90-rows.md" <<'EOF'
import json, pathlib, sys
report_path, wall, arch, host, rows_path = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
try:
    report = json.loads(pathlib.Path(report_path).read_text())
except ValueError:
    sys.exit("== no JSON report (the build failed before it): see build-sm90.log")
if "results" not in report:
    sys.exit(f"== the build failed: {report.get('message')} / fix: {report.get('fix')}")
rows = []
for r in report["results"]:
    slowest = r["unit_seconds"][0] if r["unit_seconds"] else ("-", 0.0)
    rows.append(f"| {r['name']} | {r['version']} | sm_{arch.replace('.', '')} | {r['compiled_units']} "
                f"(MAX_JOBS {r['jobs']}, split {r['split_threads']}) | {slowest[0]} {slowest[1]:.1f} s | "
                f"{r['seconds']:.1f} s ({r['started_s']:.0f}-{r['finished_s']:.0f} s) | {r['size'] / 1e6:.1f} MB | {host} |")
s = report["slowest_unit"] or {"package": "-", "unit": "-", "seconds": 0.0}
rows.append(f"| **both, {'at the same time' if report['schedule']['parallel'] else 'one after the other'}** | | "
            f"sm_{arch.replace('.', '')} | {len(report['units'])} | {s['package']} {s['unit']} {s['seconds']:.1f} s | "
            f"**{wall:.1f} s** (compiles {report['wall_seconds']:.1f} s) | "
            f"{sum(r['size'] for r in report['results']) / 1e6:.1f} MB | {host} |")
pathlib.Path(rows_path).write_text("\n".join(rows) + "\n")
print("\n".join(rows))
print("== units, slowest first:", ", ".join(f"{u['unit']} {u['seconds']:.0f} s" for u in report["units"]))
EOF

verify_rc=1
if [ "$build_rc" -eq 0 ]; then
  # After the build, alone: verify's float64 references on the CPU beside 16 compilers ran 30x slower.
  # A venv that sees the lab's torch through a .pth (after the venv's own site-packages, so the built
  # wheels win over any copy in the system python), only the built wheels installed.
  venv="$WORK/venv"
  "$PY" -m venv "$venv"
  site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  "$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$site/lab-torch.pth"
  "$venv/bin/python" -m pip install -q --no-deps --no-index "$WORK"/wheels/*.whl
  PYTHONPATH="$PWD/src" "$venv/bin/python" - "$venv" <<'PYEOF' || exit 2
import sys
import causal_conv1d, causal_conv1d_cuda, mamba_ssm, selective_scan_cuda
files = [m.__file__ for m in (causal_conv1d, causal_conv1d_cuda, mamba_ssm, selective_scan_cuda)]
print("== imports from", *files)
stray = [f for f in files if not f.startswith(sys.argv[1])]
if stray:
    sys.exit(f"== not the built wheels: {stray} shadow the venv's")
PYEOF
  start=$(date +%s)
  PYTHONPATH="$PWD/src" JETSON_MAMBA_TRITON_AUTOTUNE=0 "$venv/bin/python" -m jetson_mamba -v verify --backend cuda \
    --json > "$RESULTS/build-sm90-verify.json" 2> "$RESULTS/build-sm90-verify.log"
  verify_rc=$?
  echo "== jetson-mamba verify --backend cuda on the built wheels: exit $verify_rc in $(( $(date +%s) - start )) s"
  "$PY" -c "import json, sys; d = json.load(open(sys.argv[1])); print('   ', d.get('device'), d.get('summary'))" \
    "$RESULTS/build-sm90-verify.json" || tail -20 "$RESULTS/build-sm90-verify.log"
fi
exit $(( build_rc || verify_rc ))
