#!/usr/bin/env bash
# The older-torch venv for tests/test_older_torch.py (CI runs it): torch 2.1.2 from the package index,
# the oldest torch with Python 3.11 wheels that ultralytics 8.4.190 and our code run on here, and older
# than 2.5 (no `dynamo=` in torch.onnx.export), as JetPack 5 and 6.0 ship. The index has no CPU-only
# wheel of it: pip takes the CUDA build and its nvidia-* wheels (about 3.5 GB download, 5 GB on disk),
# so the venv lives outside the clone and is reused while its stamp matches. Prints the venv's python.
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${JETSON_MAMBA_OLD_TORCH_VENV:-$HOME/.cache/jetson-mamba/torch-2.1.2}
PINS=(torch==2.1.2 torchvision==0.16.2 "numpy<2" onnx onnxruntime pyyaml rich packaging ultralytics==8.4.190)
STAMP="${PINS[*]}"
if ! [ -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.jetson-mamba-stamp" 2>/dev/null)" != "$STAMP" ]; then
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q "${PINS[@]}" >&2
    echo "$STAMP" > "$VENV/.jetson-mamba-stamp"
fi
echo "$VENV/bin/python"
