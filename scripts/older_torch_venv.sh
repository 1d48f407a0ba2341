#!/usr/bin/env bash
# The older-torch venv for tests/test_older_torch.py (CI runs it): torch 2.1.2 from the package index,
# the oldest torch with Python 3.11 wheels that ultralytics 8.4.190 and our code run on here, and older
# than 2.5 (no `dynamo=` in torch.onnx.export), as JetPack 5 and 6.0 ship. The index has no CPU-only
# wheel of it: pip takes the CUDA build and its nvidia-* wheels (about 3.5 GB download, 5 GB on disk),
# so the venv lives outside the clone and is reused while its stamp matches. Prints the venv's python.
#   bash scripts/older_torch_venv.sh [2.1|2.13]
# 2.13: torch 2.13.0 (CPU build, on this machine's disk) for the custom ops under torch.compile on a
# dynamo older than 2.14's (tests/test_older_torch.py); ~1 minute, ~1 GB.
set -euo pipefail
PYTHON=${PYTHON:-python3}
case "${1:-2.1}" in
  2.1) VENV=${JETSON_MAMBA_OLD_TORCH_VENV:-$HOME/.cache/jetson-mamba/torch-2.1.2}
       PINS=(torch==2.1.2 torchvision==0.16.2 "numpy<2" onnx onnxruntime pyyaml rich packaging ultralytics==8.4.190) ;;
  2.13) VENV=$HOME/.cache/jetson-mamba/torch-2.13.0
        PINS=(torch==2.13.0 numpy rich packaging pyyaml) ;;
  *) echo "older_torch_venv.sh: unknown torch '$1': give 2.1 or 2.13" >&2; exit 2 ;;
esac
STAMP="${PINS[*]}"
if ! [ -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.jetson-mamba-stamp" 2>/dev/null)" != "$STAMP" ]; then
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q "${PINS[@]}" >&2
    echo "$STAMP" > "$VENV/.jetson-mamba-stamp"
fi
echo "$VENV/bin/python"
