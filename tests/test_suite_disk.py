"""The suite's own temporary files: a passing test's are deleted, a failing test's are kept for debugging.

The suite writes published-size random checkpoints (about 12 GB per run); with pytest's default retention
(everything, the last 3 runs) they reached 46 GB and a CI run failed on a full disk."""
import os
import subprocess
import sys
from pathlib import Path

PROJECT_INI = Path(__file__).resolve().parents[1] / "pytest.ini"

INNER_TESTS = '''
def test_passes(tmp_path):
    (tmp_path / "passing.bin").write_bytes(b"0" * 1024)

def test_fails(tmp_path):
    (tmp_path / "failing.bin").write_bytes(b"0" * 1024)
    assert False
'''


def _files_left(root: Path) -> set:
    return {p.name for p in root.rglob("*.bin")}


def test_project_pytest_ini_deletes_a_passing_tests_files_and_keeps_a_failing_tests(tmp_path):
    (tmp_path / "test_inner.py").write_text(INNER_TESTS)
    temproot = tmp_path / "temproot"
    temproot.mkdir()
    env = dict(os.environ, PYTEST_DEBUG_TEMPROOT=str(temproot))
    result = subprocess.run([sys.executable, "-m", "pytest", "-c", str(PROJECT_INI), "-p", "no:cacheprovider",
                             "-p", "no:xdist", "-q", str(tmp_path / "test_inner.py")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert "1 failed, 1 passed" in result.stdout, result.stdout + result.stderr
    assert _files_left(temproot) == {"failing.bin"}
