"""documentation/benchmarks.md's issue-27 grid table is derived from the committed per-run CSVs, not typed in."""
from benchmark_tables import FIGURES, published_table, report_module

HEADER = "| iterations | labelled cases | candidate |"


def _report_module():
    return report_module("issue27_report")


def _published_table() -> list:
    return published_table(HEADER)


def test_the_published_issue27_table_is_what_the_committed_csvs_give():
    report = _report_module()
    derived = report.table(report.finished_runs(sorted(FIGURES.glob("issue27_grid_results_*.csv"))))
    assert _published_table() == derived


def test_every_published_candidate_cell_is_paired_with_nnunets_trainer_on_the_same_draws():
    """A candidate's row compares draws that nnUNetTrainer also ran (same cases, budget, patch and batch)."""
    report = _report_module()
    done = report.finished_runs(sorted(FIGURES.glob("issue27_grid_results_*.csv")))
    reference = {(report.iterations(r), int(r["n_train"]), int(r["seed"])) for r in done
                 if report.candidate(r) == report.REFERENCE}
    unpaired = [(report.iterations(r), int(r["n_train"]), int(r["seed"]), report.candidate(r)) for r in done
                if report.candidate(r) != report.REFERENCE and
                (report.iterations(r), int(r["n_train"]), int(r["seed"])) not in reference]
    assert not unpaired, unpaired


def test_labelled_at_draws_the_runs_of_one_budget_and_refuses_a_budget_nobody_ran(tmp_path):
    import subprocess
    import sys

    from benchmark_tables import ROOT
    csvs = [str(p) for p in sorted(FIGURES.glob("issue27_grid_results_*.csv"))]
    script = str(ROOT / "benchmarks" / "issue27_report.py")
    done = subprocess.run([sys.executable, script, *csvs, "--figures", str(tmp_path), "--labelled-at", "400"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "issue27_dice_vs_labelled_400its.png").stat().st_size > 10_000
    refused = subprocess.run([sys.executable, script, *csvs, "--figures", str(tmp_path), "--labelled-at", "123"],
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "no finished run has that many iterations" in refused.stderr
