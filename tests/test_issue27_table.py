"""documentation/benchmarks.md's issue-27 grid table is derived from the committed per-run CSVs, not typed in."""
import pytest

from benchmark_tables import FIGURES, published_table, report_module

HEADER = "| iterations | labelled cases | candidate |"


def _report_module():
    return report_module("issue27_report")


def _published_runs(report) -> list:
    """The finished runs of the committed issue-27 CSVs, as the report loads them."""
    return report.load(sorted(FIGURES.glob("issue27_grid_results_*.csv")))


def _published_table() -> list:
    return published_table(HEADER)


def test_the_published_issue27_table_is_what_the_committed_csvs_give():
    report = _report_module()
    derived = report.table(_published_runs(report))
    assert _published_table() == derived


def test_every_published_candidate_cell_is_paired_with_nnunets_trainer_on_the_same_draws():
    """A candidate's row compares draws that nnUNetTrainer also ran (same cases, budget, patch and batch)."""
    report = _report_module()
    done = _published_runs(report)
    draw = lambda r: (report.iterations(r), int(r["n_train"]), report._seed(r))  # noqa: E731 (seed None: full data)
    reference = {draw(r) for r in done if report.candidate(r) == report.REFERENCE}
    unpaired = [(*draw(r), report.candidate(r)) for r in done
                if report.candidate(r) != report.REFERENCE and draw(r) not in reference]
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


TARGET_HEADER = "| candidate | iterations | labelled cases | mean − nnUNetTrainer |"


def test_the_published_target_table_is_what_the_committed_csvs_give():
    report = _report_module()
    derived = report.target_table(_published_runs(report))
    assert published_table(TARGET_HEADER) == derived


def test_the_target_is_judged_on_all_three_draws_and_says_what_is_missing():
    report = _report_module()

    reference = [_record("nnUNetTrainer_nnFMBudget", s, 0.70) for s in range(3)]
    wide_but_once = [_record("A", s, d) for s, d in enumerate((0.90, 0.69, 0.69))]   # mean +0.060, ahead in 1
    close = [_record("B", s, 0.71) for s in range(3)]                                  # mean +0.010, ahead in 3
    clear = [_record("C", s, 0.73) for s in range(3)]                                  # mean +0.030, ahead in 3
    one_draw = [_record("D", 0, 0.95)]                                                 # not judged: 1 of 3 draws
    rows = report.target_table(reference + wide_but_once + close + clear + one_draw)[2:]
    assert [row.split(" | ")[0].lstrip("| ") for row in rows] == ["A", "B", "C"]
    assert rows[0].endswith("| +0.060 | 1 of 3 | not met: too few draws ahead |")
    assert rows[1].endswith("| +0.010 | 3 of 3 | not met: mean 0.010 short |")
    assert rows[2].endswith("| +0.030 | 3 of 3 | met |")


EXTREMES_HEADER = "| candidate | cells | best cell: mean − nnUNetTrainer"


def test_the_published_best_and_worst_cells_are_what_the_committed_csvs_give():
    report = _report_module()
    derived = report.extremes_table(_published_runs(report))
    assert published_table(EXTREMES_HEADER) == derived


def test_best_and_worst_cell_are_the_extremes_of_the_mean_paired_difference():
    report = _report_module()

    reference = [_record("nnUNetTrainer", s, 0.70, its) for s in range(3) for its in (100, 400)]
    a = [_record("A", s, 0.80, 100) for s in range(3)] + [_record("A", 0, 0.65, 400)]   # +0.100 (3 draws), -0.050 (1)
    rows = report.extremes_table(reference + a)[2:]
    assert rows == ["| A | 2 | +0.100 (100 its, 3 cases, 3 draws) | -0.050 (400 its, 3 cases, 1 draw) |"]


def _record(trainer, seed, dice, its=400, shots=3, **extra):
    record = {"trainer_class": trainer, "weights": None, "seed": seed, "n_train": shots, "epochs": its // 20,
              "iterations_per_epoch": 20, "test_dice_mean": dice, "s_per_iteration": 1.0, "patch_size": "32x48x32",
              "batch_size": 2}
    return dict(record, **extra)


def test_equal_wall_time_is_over_every_draw_of_the_candidate_or_not_given():
    """Before, a draw whose nnUNetTrainer curve did not reach the scaled budget was dropped from nnUNetTrainer's
    mean only: 0.630 'at 437 its' over 2 draws against the candidate's mean over 3."""
    report = _report_module()
    reference = [_record("nnUNetTrainer", s, 0.6, its) for s in range(3) for its in (400,)] + \
        [_record("nnUNetTrainer", s, 0.7, 1000) for s in (0, 1)]                    # seed 2 never ran 1000
    slower = [_record("A", s, 0.65, s_per_iteration=1.1) for s in range(3)]        # 440 its of wall time
    row = next(r for r in report.table(reference + slower) if "| A |" in r)
    assert row.endswith("| 1.10 | – |")
    reference.append(_record("nnUNetTrainer", 2, 0.7, 1000))
    row = next(r for r in report.table(reference + slower) if "| A |" in r)
    assert row.endswith("| 1.10 | 0.610 at 440 its |")


def test_the_full_data_row_has_one_draw_and_is_paired_with_nnunets_full_data_run():
    """--shots all runs have no seed (the CSV's empty cell): the report failed on int(None)."""
    report = _report_module()
    rows = report.table([_record("nnUNetTrainer", None, 0.80, 1000, 128), _record("A", None, 0.83, 1000, 128)])
    assert rows[2].startswith("| 1000 | 128 | nnUNetTrainer | 0.800 (all cases) | 0.800 (1 run) |")
    assert rows[3].startswith("| 1000 | 128 | A | 0.830 (all cases) | 0.830 (1 run) | +0.030 (+0.030) | 1 of 1 |")


def test_runs_that_cannot_be_compared_as_the_table_says_are_refused_or_left_unpaired():
    report = _report_module()
    reference = [_record("nnUNetTrainer", s, 0.6) for s in range(3)]
    with pytest.raises(ValueError, match="two finished runs of A .* seed 0"):
        report.cells(reference + [_record("A", 0, 0.7), _record("A", 0, 0.71)])
    with pytest.raises(ValueError, match="names 2 weights files"):
        report.cells(reference + [_record("A", 0, 0.7, weights_sha256="a"), _record("A", 1, 0.7, weights_sha256="b")])
    other_patch = [_record("A", s, 0.7, patch_size="48x64x48") for s in range(3)]
    assert all(not pairs for _, _, pairs in report.cells(reference + other_patch)[0])


def test_the_target_is_judged_on_the_unrounded_mean_and_the_same_share_of_more_draws():
    report = _report_module()
    reference = [_record("nnUNetTrainer", s, 0.70) for s in range(4)]
    just_below = [_record("A", s, 0.7199) for s in range(3)]                       # +0.0199: printed +0.020
    half = [_record("B", s, d) for s, d in enumerate((0.80, 0.80, 0.69, 0.69))]     # 2 of 4 ahead: not 2 of 3
    rows = report.target_table(reference + just_below + half)[2:]
    assert rows[0].endswith("| +0.020 | 3 of 3 | not met: mean 0.001 short |")
    assert rows[1].endswith("| 2 of 4 | not met: too few draws ahead |")


def test_runs_of_an_embedded_fp16_export_count_as_its_fp32_source_and_are_named():
    """The grid ran plainconv_unet_synth_5000.pth (fp32, lost with its machine); later draws ran the shipped fp16
    export. Unmerged, the cell splits into two candidates of 1 and 2 draws, neither judged by the target."""
    report = _report_module()
    source = dict(weights="/runs/plainconv_unet_synth_5000.pth", weights_sha256="s" * 64)
    export = dict(weights="/pkg/plainconv_unet_synth_nnfm.safetensors", weights_sha256="e" * 64)
    done = [_record("nnUNetTrainer", s, 0.6, 1000, 10) for s in range(3)] + \
        [_record("A", 0, 0.7, 1000, 10, **source)] + [_record("A", s, 0.65, 1000, 10, **export) for s in (1, 2)]
    assert not report.target_table(done)[2:]
    exports = {"e" * 64: {"name": "plainconv_unet_synth_nnfm", "source_sha256": "s" * 64,
                          "fp16_max_relative_rounding_error": 4.9e-4}}
    merged = report.merge_exports(done, exports)
    row = next(r for r in report.table(merged) if "| A [" in r)
    assert row.startswith("| 1000 | 10 | A [plainconv_unet_synth_5000] | 0.700 / 0.650 / 0.650 |") and "3 of 3" in row
    assert len(report.target_table(merged)[2:]) == 1
    assert report.exports_note(merged) == [
        "A [plainconv_unet_synth_5000]: 2 run(s) started from the shipped fp16 export plainconv_unet_synth_nnfm "
        "(sha256 eeeeeeee…, fp16 rounding at most 4.9e-04 relative) of that file (sha256 ssssssss…): "
        "1000 its x 10 cases, seed 1; 1000 its x 10 cases, seed 2."]
    alone = report.merge_exports([r for r in done if r.get("weights_sha256") != "s" * 64],
                                 exports)
    assert not report.exports_note(alone)  # without its source, an export is a candidate of its own


def test_the_shipped_default_records_the_file_it_was_exported_from():
    from nnfm.weights.registry import embedded_provenance, get_weights_entry
    record = embedded_provenance(get_weights_entry("plainconv_unet_synth_nnfm"))
    assert record["sha256"] == get_weights_entry("plainconv_unet_synth_nnfm").sha256
    assert len(record["source_sha256"]) == 64 and record["fp16_max_relative_rounding_error"] < 1e-3


def test_the_published_export_note_is_what_the_committed_csvs_give():
    """Which published runs started from the shipped fp16 export instead of its fp32 source is said in benchmarks.md,
    as the report derives it."""
    from benchmark_tables import ROOT
    report = _report_module()
    notes = report.exports_note(_published_runs(report))
    published = " ".join((ROOT / "documentation" / "benchmarks.md").read_text().split())
    assert [n for n in notes if " ".join(n.split()) not in published] == []
