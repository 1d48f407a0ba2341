#!/usr/bin/env bash
# The test command (README.md; .ci/run calls exactly this): sets up .venv with torch (a CUDA build, run on the CPU)
# and the test extras, then runs the whole suite. GPU tests skip themselves without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# A fresh venv takes about 7 GB (the CUDA build of torch is 5.5 GB of it): say so before pip
# dies half-way with "No space left on device".
if ! [ -x .venv/bin/python ]; then
    free_gb=$("$PYTHON" -c 'import shutil; print(shutil.disk_usage(".").free // 2**30)')
    if [ "$free_gb" -lt 9 ]; then
        echo "scripts/test.sh: only ${free_gb} GB free on $(df --output=target . | tail -1); the test venv needs about 9 GB" \
             "(torch 2.14.1, CUDA build, 5.5 GB, plus pip's unpacking). Fix: free disk space (old clones' .venv folders," \
             "pytest's temp folders under /tmp/pytest-of-$(id -un)) and run it again." >&2
        exit 2
    fi
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch is only ever installed here, into the test venv; jetson-mamba itself never installs torch.
# The CUDA build of torch 2.14.1 runs on the CPU too, and its headers and libraries let the
# build tests compile real CUDA extensions; torchvision 0.29.1 matches it (ultralytics needs it).
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/python -m ruff check src tests benchmarks
exec .venv/bin/python -m pytest "$@"
