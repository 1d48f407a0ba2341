#!/usr/bin/env bash
# Copies what the lab GPU scripts need from ../shared into the git-ignored .carry/ (the device tool
# sends the working tree, not ../shared): the sm_90 wheels, the sdists and the Mamba-YOLO fixtures.
# Then run every GPU proof in one call: `bash benchmarks/gpu/lab.sh` with .carry carried.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${JETSON_MAMBA_SHARED:-../shared}
mkdir -p .carry/wheelhouse .carry/sdists .carry/fixtures
cp "$SHARED"/wheelhouse/h200-cu130-py312/*.whl .carry/wheelhouse/
cp "$SHARED"/sdists/*.tar.gz .carry/sdists/
cp -r "$SHARED"/fixtures/mamba_yolo_upstream .carry/fixtures/
du -sh .carry
