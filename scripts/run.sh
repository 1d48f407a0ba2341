#!/usr/bin/env bash
# The main job (README.md): set up .venv-run and check this machine's Mamba stack.
# The venv sees the system's packages, so NVIDIA's JetPack torch is used as it is; jetson-mamba
# never installs torch. Only on a non-Jetson machine without any torch does this script install
# one (TORCH_SPEC, default "torch") so the portable kernels can be verified on the CPU.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv-run/bin/python ]; then
  "$PYTHON" -m venv --system-site-packages .venv-run || exit 1
fi
.venv-run/bin/python -m pip install -q --upgrade pip >/dev/null
.venv-run/bin/python -m pip install -q -e ".[runtime]" || exit 1
if ! .venv-run/bin/python -c "import torch" 2>/dev/null; then
  if [ -e /etc/nv_tegra_release ]; then
    echo "torch is not installed: install NVIDIA's PyTorch wheel for your JetPack release, then run this again." >&2
  else
    .venv-run/bin/python -m pip install -q "${TORCH_SPEC:-torch}" || exit 1
  fi
fi
.venv-run/bin/jetson-mamba doctor
doctor=$?
.venv-run/bin/jetson-mamba verify --quick
verify=$?
exit $(( doctor || verify ))
