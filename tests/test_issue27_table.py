"""documentation/benchmarks.md's issue-27 grid table is derived from the committed per-run CSVs, not typed in."""
from benchmark_tables import FIGURES, published_table, report_module

HEADER = "| iterations | labelled cases | candidate |"


def _report_module():
    return report_module("issue27_report")


def _published_table() -> list:
    return published_table(HEADER)


def test_the_published_issue27_table_is_what_the_committed_csvs_give():
    report = _report_module()
    derived = report.table(report.load(sorted(FIGURES.glob("issue27_grid_results_*.csv"))))
    assert _published_table() == derived


def test_every_published_candidate_cell_is_paired_with_nnunets_trainer_on_the_same_draws():
    """A candidate's row compares draws that nnUNetTrainer also ran (same cases, budget, patch and batch)."""
    report = _report_module()
    done = report.load(sorted(FIGURES.glob("issue27_grid_results_*.csv")))
    reference = {(report.iterations(r), int(r["n_train"]), int(r["seed"])) for r in done
                 if report.candidate(r) == report.REFERENCE}
    unpaired = [(report.iterations(r), int(r["n_train"]), int(r["seed"]), report.candidate(r)) for r in done
                if report.candidate(r) != report.REFERENCE and
                (report.iterations(r), int(r["n_train"]), int(r["seed"])) not in reference]
    assert not unpaired, unpaired
