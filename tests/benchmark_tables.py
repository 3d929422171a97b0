"""Helpers of the tests that check a published benchmarks.md table against the committed per-run CSVs."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "documentation" / "figures"


def report_module(name: str):
    """benchmarks/<name>.py, imported as a module (the scripts folder is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def published_table(header: str) -> list:
    """The lines of the markdown table in documentation/benchmarks.md whose first line starts with ``header``."""
    text = (ROOT / "documentation" / "benchmarks.md").read_text().splitlines()
    start = next(i for i, line in enumerate(text) if line.startswith(header))
    end = next(i for i in range(start, len(text)) if not text[i].startswith("|"))
    return text[start:end]
