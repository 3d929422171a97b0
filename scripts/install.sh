#!/usr/bin/env bash
# Create .venv (if missing) and install nnFM with everything it needs, tests included.
# Offline-friendly: only the package index is used; no weights or data are downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade "pip>=23" >/dev/null
# a regular (non-editable) install also installs nnfm-ext-trainer.pth, which registers
# nnFM's trainers with nnU-Net (nnUNet_extTrainer) in every interpreter of this environment
.venv/bin/python -m pip install -q --disable-pip-version-check ".[test]"
echo "nnFM installed in $(pwd)/.venv"
