#!/usr/bin/env bash
# The test command (README.md; .ci/run calls exactly this): sets up .venv with a CPU torch
# and the test extras, then runs the whole suite. GPU tests skip themselves without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch is only ever installed here, into the test venv; jetson-mamba itself never installs torch.
# The CUDA build of torch 2.14.1 runs on the CPU too, and its headers and libraries let the
# build tests compile real CUDA extensions; torchvision 0.29.1 matches it (ultralytics needs it).
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/python -m ruff check src tests benchmarks
exec .venv/bin/python -m pytest "$@"
