"""Finished runs of committed results CSVs, summarised per few-shot draw: the shared pieces of the published
benchmark tables (benchmarks/issue12_report.py, benchmarks/issue27_report.py).

A draw is one seed of the labelled-case draw (``nnFM_benchmark --seeds``); two runs on the same draw (same labelled
cases, budget, patch and batch) are compared by their paired difference. Dice are printed to 3 decimals, as the
tables of documentation/benchmarks.md.
"""
import statistics
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from nnfm.benchmark.imported_results import merge, records_from_csv


def finished_runs(paths: Iterable[Path]) -> List[dict]:
    """The run records of ``paths`` (results.csv files; a run in several files once) that finished with a test Dice."""
    records, _ = merge([], [r for p in paths for r in records_from_csv(p)])
    return [r for r in records if r.get("status") == "done" and r.get("test_dice_mean") is not None]


def iterations(record: dict) -> int:
    """Fine-tuning iterations of a run: epochs x iterations per epoch."""
    return int(record["epochs"]) * int(record["iterations_per_epoch"])


def per_draw(dice_by_seed: Dict[Optional[int], float]) -> str:
    """'0.770 / – / 0.797': one value per seed from 0 (at least 3), '–' where a seed has no run (at least one seed
    must have one); '0.812 (all cases)' for the full-data run (``--shots all``: no draw, seed None)."""
    if None in dice_by_seed:
        return f"{dice_by_seed[None]:.3f} (all cases)"
    seeds = sorted(dice_by_seed)
    return " / ".join(f"{dice_by_seed[s]:.3f}" if s in dice_by_seed else "–" for s in range(max(3, seeds[-1] + 1)))


def mean_sd(values: List[float]) -> str:
    """'0.772 ± 0.025' (sample sd), or '0.770 (1 run)'. At least one value."""
    if len(values) > 1:
        return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"
    return f"{values[0]:.3f} (1 run)"


def paired(differences: List[float]) -> str:
    """'+0.011 / +0.055 / +0.045 (+0.037)': per draw, then their mean; '' without any."""
    if not differences:
        return ""
    return " / ".join(f"{d:+.3f}" for d in differences) + f" ({statistics.mean(differences):+.3f})"
