#!/usr/bin/env bash
# Mamba-YOLO-T training on the lab GPU through the real ultralytics (issue 9), one command from the repo root:
#   bash benchmarks/gpu/yolo_train.sh [BACKENDS]      (default: "cuda triton")
# The lab has no ultralytics: scripts/device.sh puts its wheels (ultralytics, ultralytics-thop,
# ultralytics-platform, polars) in .carry/whl. A venv that sees the system torch gets them and the sm_90
# wheels (--no-deps --no-index); then, per selective-scan backend (JETSON_MAMBA_BACKEND=<backend>,torch:
# that backend for GPU tensors, torch for the CPU pass at model build; `-v` logs each choice, and the
# script fails unless the named backend ran):
# `jetson-mamba yolo dataset` (synthetic, no downloads),
# `yolo train` (3 epochs, 256x256, batch 8, GPU 0, ultralytics' default AMP) and `yolo predict` on
# the trained weights. Prints per backend: train wall time, the loss columns of every epoch (must be
# finite), and the detections. Exit 0 = every backend trained and predicted.
set -uo pipefail
cd "$(dirname "$0")/../.."
BACKENDS=${1:-cuda triton}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-0}   # DEVICE=cpu BACKENDS=torch WHEELS= : a dry run of this script without a GPU
WHEELS=${WHEELS-.carry/wheelhouse/*.whl}
WORK=$(mktemp -d /tmp/jm-yolo-train.XXXX)
"$PY" -m venv --system-site-packages "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$VPY" -m pip install -q --no-deps --no-index $WHEELS .carry/whl/*.whl || { echo "wheel install failed"; exit 2; }
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$VPY" -m jetson_mamba yolo dataset "$WORK/data" --count 16 --size "${IMGSZ:-256}" --json > "$WORK/dataset.json" || exit 2
DATA=$("$VPY" -c "import json, sys; print(json.load(open(sys.argv[1]))['data'])" "$WORK/dataset.json")
status=0
for backend in $BACKENDS; do
  echo "== backend $backend"
  start=$(date +%s)
  # "$backend,torch": ultralytics builds the model with a CPU forward pass, which takes the torch backend
  JETSON_MAMBA_BACKEND=$backend,torch "$VPY" -m jetson_mamba -v yolo train --data "$DATA" --model t --epochs "${EPOCHS:-3}" --imgsz "${IMGSZ:-256}" \
    --batch 8 --device "$DEVICE" --project "$WORK/runs" --name "$backend" --json > "$WORK/train-$backend.json" 2> "$WORK/train-$backend.log"
  rc=$?
  echo "   train exit $rc in $(( $(date +%s) - start )) s"
  if [ $rc -ne 0 ]; then tail -25 "$WORK/train-$backend.log"; cat "$WORK/train-$backend.json"; status=1; continue; fi
  grep "runs on the" "$WORK/train-$backend.log" | sort -u | sed 's/^/   /'  # `-v`: which backend each op ran on
  grep -q "selective_scan runs on the $backend backend" "$WORK/train-$backend.log" \
    || { echo "   the $backend backend never ran"; status=1; }
  "$VPY" - "$WORK/runs/$backend/results.csv" <<'PYEOF' || status=1
import csv, math, sys
rows = list(csv.DictReader(open(sys.argv[1])))
losses = [{k.strip(): float(v) for k, v in r.items() if "loss" in k} for r in rows]
for epoch, row in enumerate(losses, 1):
    print("   epoch", epoch, ", ".join(f"{k} {v:.3f}" for k, v in row.items()))
sys.exit(0 if losses and all(math.isfinite(v) for row in losses for v in row.values()) else 1)
PYEOF
  JETSON_MAMBA_BACKEND=$backend,torch "$VPY" -m jetson_mamba -v yolo predict --model "$WORK/runs/$backend/weights/last.pt" \
    --source "$WORK/data/images/val/0.jpg" --imgsz "${IMGSZ:-256}" --conf 0.0 --device "$DEVICE" --json > "$WORK/predict-$backend.json" \
    2> "$WORK/predict-$backend.log" || { tail -20 "$WORK/predict-$backend.log"; status=1; continue; }
  "$VPY" -c "
import json, sys
found = json.load(open(sys.argv[1]))['images'][0]['detections']
print('   predict:', len(found), 'detections; best', found[0] if found else None)
sys.exit(0 if found else 1)" "$WORK/predict-$backend.json" || status=1
done
echo "== yolo_train: $([ $status -eq 0 ] && echo PASS || echo FAIL)"
rm -rf "$WORK"
exit $status
