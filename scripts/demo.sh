#!/usr/bin/env bash
# README command 1: install, then run the whole pipeline on MSD Hippocampus (CPU, offline, minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/nnFM_demo "$@"
