"""documentation/benchmarks.md's issue-28 domain-shift table is what benchmarks/domain_shift.py prints from the
committed CSV, not typed in."""
from benchmark_tables import FIGURES, published_table, report_module

HEADER = "| shift | trainer | test Dice per fold |"
TRAINERS = ["nnUNetTrainer_nnFMBudget", "nnFMTrainer_nnUNetPlans", "nnFMTrainer_DropGen", "nnFMTrainer_DropGen_noDrop",
            "nnFMTrainer_DropGen_p025"]


def test_the_published_domain_shift_table_is_what_the_committed_csv_gives():
    script = report_module("domain_shift")
    rows = script.read_rows(FIGURES / "issue28_domain_shift_3cases_400it_2026-12-05.csv")
    assert published_table(HEADER) == script.table_lines(rows, TRAINERS)


def test_the_domain_shift_csv_pairs_every_shifted_run_with_nnunets_trainer_on_the_same_fold():
    script = report_module("domain_shift")
    rows = script.read_rows(FIGURES / "issue28_domain_shift_3cases_400it_2026-12-05.csv")
    reference = {(r["shift"], r["fold"]) for r in rows if r["trainer"] == TRAINERS[0]}
    assert {(r["shift"], r["fold"]) for r in rows} <= reference
    assert {r["shift"] for r in rows} == {"none", "invert", "gamma0.5", "gamma2"}
