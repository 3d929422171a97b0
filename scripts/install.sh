#!/usr/bin/env bash
# Create .venv (if missing) and install nnFM with everything it needs, tests included.
# Offline-friendly: only the package index is used; no weights or data are downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# what the install copies (a regular install: edits need a reinstall); unchanged since the last install -> skip pip,
# so that rerunning the README's commands costs seconds, not a rebuild
STAMP=.venv/.nnfm_installed_sources
SOURCES=$(find setup.py nnfm-ext-trainer.pth nnfm trainers planners -type f ! -path '*/__pycache__/*' -print0 \
  | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$SOURCES" ] && .venv/bin/python -c "import nnfm, nnfm_trainers" 2>/dev/null; then
  echo "nnFM already installed in $(pwd)/.venv (sources unchanged; rm $STAMP to reinstall)"
  exit 0
fi
rm -f "$STAMP"
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade "pip>=23" >/dev/null
# a regular (non-editable) install also installs nnfm-ext-trainer.pth, which registers
# nnFM's trainers with nnU-Net (nnUNet_extTrainer) in every interpreter of this environment
.venv/bin/python -m pip install -q --disable-pip-version-check ".[test]"
echo "$SOURCES" > "$STAMP"
echo "nnFM installed in $(pwd)/.venv"
