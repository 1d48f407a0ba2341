#!/usr/bin/env bash
# Copies what the lab GPU scripts need from ../shared into the git-ignored .carry/ (the device tool
# sends the working tree, not ../shared): the sm_90 wheels, the sdists and the Mamba-YOLO fixtures;
# plus .carry/whl, the wheels of ultralytics for the GPU training run (the lab machine has none and
# no network; polars 1.9.0 because newer ones are too large to carry) and pytest's for the conformance run.
# Then run the GPU proofs:
# `bash benchmarks/gpu/lab.sh` with .carry carried.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${JETSON_MAMBA_SHARED:-../shared}
mkdir -p .carry/wheelhouse .carry/sdists .carry/fixtures .carry/whl .carry/upstream
cp "$SHARED"/wheelhouse/h200-cu130-py312/*.whl .carry/wheelhouse/
cp "$SHARED"/sdists/*.tar.gz .carry/sdists/
cp "$SHARED"/upstream/mamba-v2.3.2.post1-tests.tar.gz .carry/upstream/  # upstream's tests (conformance.sh)
cp "$SHARED"/upstream/mamba-main-*.tar.gz .carry/upstream/  # mamba-ssm main's tree (main_proof.py, 1.7 MB)
# The two releases of issue 24's first report are not in ../shared: pip fetches each sdist alone (it prepares
# metadata by running setup.py, which imports torch: hence the test venv's python). Build them on the lab with
#   PAIR="causal-conv1d==1.6.2.post1 mamba-ssm==2.2.6.post3" bash benchmarks/gpu/build_sm90.sh
for spec in mamba-ssm==2.2.6.post3 causal-conv1d==1.6.2.post1; do
  file=.carry/sdists/$(echo "${spec%%==*}" | tr - _)-${spec##*==}.tar.gz
  [ -f "$file" ] || .venv/bin/python -m pip download -q --no-deps --no-binary :all: --no-build-isolation \
    -d .carry/sdists "$spec" || echo "no $spec sdist (only the shared sdists can be built on the lab)" >&2
done
cp -r "$SHARED"/fixtures/mamba_yolo_upstream .carry/fixtures/
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .carry/whl ultralytics==8.4.190 ultralytics-thop==2.2.3 ultralytics-platform==0.1.99 polars==1.9.0 \
  || echo "no ultralytics wheels (benchmarks/gpu/yolo_train.sh needs them)" >&2
# pytest and rich for benchmarks/gpu/conformance.sh (pure Python; unpacked behind the lab python's own packages)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .carry/whl \
  pytest==8.4.2 pluggy==1.6.0 iniconfig==2.1.0 pygments==2.19.2 packaging==25.0 rich==14.1.0 \
  markdown-it-py==4.0.0 mdurl==0.1.2 || echo "no pytest wheels (benchmarks/gpu/conformance.sh needs them)" >&2
du -sh .carry
# the device tool carries at most 64 MiB in all: keep .carry well below it
[ "$(du -sm .carry | cut -f1)" -lt 60 ] || echo "warning: .carry is $(du -sh .carry | cut -f1), over 60 MiB" >&2
