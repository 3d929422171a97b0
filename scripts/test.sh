#!/usr/bin/env bash
# README command 2 (and CI): install, then run the test suite on the CPU.
# Test files run in parallel, one pytest-xdist worker per core (at most nnFM_TEST_WORKERS, default 2; 0 = serial);
# a file stays in one worker, so its fixtures (a trained model, a benchmark run) are made once.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
WORKERS=${nnFM_TEST_WORKERS:-2}
PARALLEL=()
if [ "$WORKERS" -gt 0 ]; then
  PARALLEL=(-n "$WORKERS" --dist loadfile)
fi
exec .venv/bin/python -m pytest tests -q -p no:cacheprovider "${PARALLEL[@]}" --durations=15 "$@"
