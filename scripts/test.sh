#!/usr/bin/env bash
# README command 2 (and CI): install, then run the test suite on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python -m pytest tests -q -p no:cacheprovider "$@"
