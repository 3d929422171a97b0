#!/usr/bin/env bash
# README command 2 (and CI): install, then run the test suite on the CPU.
# Test files run in parallel, one pytest-xdist worker per core (at most nnFM_TEST_WORKERS, default 2; 0 = serial);
# a file stays in one worker, so its fixtures (a trained model, a benchmark run) are made once.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# The tests need about 3 GB of temporary space at once (peak 2.6 GB measured with 2 workers, pytest.ini);
# say so up front rather than failing mid-run on a full disk.
TMP_ROOT=$(.venv/bin/python -c "import tempfile; print(tempfile.gettempdir())")
FREE_MB=$(df -Pm "$TMP_ROOT" | awk 'NR==2 {print $4}')
echo "temporary files in $TMP_ROOT (${FREE_MB} MB free)"
if [ "${FREE_MB:-0}" -lt 4000 ]; then
  echo "warning: only ${FREE_MB} MB free in $TMP_ROOT; the tests need about 3 GB there at once." \
       "Free space, or point TMPDIR at a larger disk." >&2
fi
WORKERS=${nnFM_TEST_WORKERS:-2}
PARALLEL=()
if [ "$WORKERS" -gt 0 ]; then
  PARALLEL=(-n "$WORKERS" --dist loadfile)
fi
exec .venv/bin/python -m pytest tests -q -p no:cacheprovider "${PARALLEL[@]}" --durations=15 "$@"
