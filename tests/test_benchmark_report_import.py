"""Reporting runs of earlier benchmarks (``nnFM_benchmark --report-only --add-results CSV``) together with new
ones, and the per-draw table's paired differences (no training: records written by the runner's own writers)."""
import json

import pytest

from nnfm.benchmark.cli import main, parse_args, report
from nnfm.benchmark.imported_results import NotResultsFile, merge, records_from_csv
from nnfm.benchmark.results import run_identity, run_label, write_csv, write_markdown, write_per_case_csv
from nnfm.benchmark.runs import RECORD

PROFILE = "20x20_p32x48x32_b2_v4_notta"
MAE = "a" * 64


def _record(trainer, n_train, seed, dice, weights="random", sha=None, fold=5):
    return dict(status="done", dataset="Dataset904_Hippocampus", configuration="3d_fullres", profile=PROFILE,
                epochs=20, iterations_per_epoch=20, patch_size="32x48x32", batch_size=2, val_cases=4, test_tta=False,
                trainer=trainer, trainer_class=trainer, plans="nnFMPlans_anatomix", weights=weights,
                weights_sha256=sha, base_fold=0, fold=fold, shots=str(n_train), n_train=n_train, n_val=4, seed=seed,
                device="cpu", classes=["Anterior", "Posterior"], val_dice_mean=dice, test_dice_mean=dice,
                val_dice={"Anterior": dice - 0.01, "Posterior": dice + 0.01},
                test_dice={"Anterior": dice - 0.02, "Posterior": dice + 0.02}, test_n=2,
                test_per_case=[{"case": "hippocampus_001", "Anterior": dice, "Posterior": dice},
                               {"case": "hippocampus_002", "Anterior": 0.5, "Posterior": None}],
                s_per_iteration=0.5, wall_s=200.0)


def _written(tmp_path, records, name="results.csv"):
    folder = tmp_path / "earlier"
    folder.mkdir(exist_ok=True)
    write_csv(records, folder / name)
    write_per_case_csv(records, folder / name.replace("results", "per_case_dice"))
    return folder / name


@pytest.mark.parametrize("name", ["results.csv", "issue12_results_2026-12-01.csv"])
def test_a_results_csv_reads_back_as_the_records_it_was_written_from(tmp_path, name):
    records = [_record("nnFMTrainer_scratch", 1, 0, 0.45), _record("nnFMTrainer", 1, 0, 0.6, "w.safetensors", MAE)]
    read = records_from_csv(_written(tmp_path, records, name))
    assert [run_identity(r) for r in read] == [run_identity(r) for r in records]
    for original, back in zip(records, read):
        for key in ("test_dice_mean", "val_dice", "test_dice", "n_train", "seed", "fold", "test_tta", "epochs",
                    "patch_size", "weights", "weights_sha256"):
            assert back[key] == pytest.approx(original[key], abs=1e-6), key
        assert back["test_per_case"] == original["test_per_case"]   # values of 2-3 digits survive the 6-digit CSV
        assert back["classes"] == ["Anterior", "Posterior"]


def test_one_record_per_run_local_first_and_a_finished_run_replaces_an_unfinished_one(tmp_path):
    unfinished = dict(_record("nnUNetTrainer", 3, 2, 0.0, weights=None), status="running", test_dice_mean=None)
    imported = records_from_csv(_written(tmp_path, [
        unfinished,                                                    # another session did not finish this draw
        _record("nnFMTrainer_SGD", 3, 0, 0.66),                        # random init
        _record("nnFMTrainer_SGD", 3, 0, 0.69, "mae.safetensors", MAE),
        _record("nnFMTrainer_scratch", 3, 0, 0.61)]))
    local = [_record("nnFMTrainer_scratch", 3, 0, 0.64, fold=9)]   # a rerun of the scratch draw, other fold index
    redone = [_record("nnUNetTrainer", 3, 2, 0.75, weights=None, fold=9)]
    records, superseded = merge(local, imported + redone)
    assert sorted((r["status"], r["test_dice_mean"]) for r in superseded) == [("done", 0.61), ("running", None)]
    assert sorted(r["test_dice_mean"] for r in records) == [0.64, 0.66, 0.69, 0.75]
    assert sorted(run_label(r) for r in records) == \
        ["nnFMTrainer_SGD", "nnFMTrainer_SGD [mae]", "nnFMTrainer_scratch", "nnUNetTrainer"]


def test_the_per_draw_table_gives_each_draws_difference_to_the_reference_run_of_that_draw(tmp_path):
    records = [_record("nnFMTrainer_scratch", 1, s, d) for s, d in ((0, 0.40), (1, 0.30))]
    records += [_record("nnFMTrainer", 1, s, d, "mae.safetensors", MAE) for s, d in ((0, 0.55), (1, 0.20), (2, 0.7))]
    write_markdown(records, tmp_path / "results.md", reference="nnFMTrainer_scratch")
    table = (tmp_path / "results.md").read_text().split("## Test Dice per few-shot draw")[1].split("## Runs")[0]
    row, = [line for line in table.splitlines() if line.startswith("| Dataset904_Hippocampus") and "[mae]" in line]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[4:] == ["0 / 1 / 2", "0.550 / 0.200 / 0.700", "0.4833 ± 0.2566", "+0.150 / -0.100 / –", "+0.025"]
    reference, = [line for line in table.splitlines() if "| nnFMTrainer_scratch |" in line]
    assert reference.rstrip().endswith("|  |  |")  # the reference is not compared to itself
    write_markdown(records, tmp_path / "other.md", reference="nnFMTrainer [mae]")
    assert "− nnFMTrainer [mae], per seed" in (tmp_path / "other.md").read_text()


def test_report_merges_imported_runs_with_the_runs_under_output(tmp_path):
    earlier = _written(tmp_path, [_record("nnFMTrainer_scratch", 1, s, 0.3 + 0.1 * s) for s in (0, 1, 2)])
    output = tmp_path / "out"
    run = output / PROFILE / "Dataset904_Hippocampus" / "nnFMTrainer__nnFMPlans_anatomix__3d_fullres" / "fold_9"
    run.mkdir(parents=True)
    (run / RECORD).write_text(json.dumps(_record("nnFMTrainer", 1, 0, 0.8, "mae.safetensors", MAE, fold=9)))
    report(output, [earlier], reference="nnFMTrainer_scratch")
    rows = records_from_csv(output / "results.csv")
    assert sorted((run_label(r), r["seed"]) for r in rows) == \
        [("nnFMTrainer [mae]", 0), ("nnFMTrainer_scratch", 0), ("nnFMTrainer_scratch", 1), ("nnFMTrainer_scratch", 2)]
    assert "+0.500" in (output / "results.md").read_text()   # 0.8 - 0.3 on draw 0
    assert (output / "plots" / f"dice_vs_labelled_Dataset904_Hippocampus_3d_fullres_{PROFILE}.png").is_file()


def test_a_file_that_is_not_a_results_csv_is_refused_with_its_name_and_what_is_missing(tmp_path, capsys):
    other = tmp_path / "per_case_dice.csv"
    other.write_text("dataset,case,dice\nx,y,0.5\n")
    with pytest.raises(NotResultsFile, match=r"per_case_dice.csv is not an nnFM_benchmark results.csv: no column "
                                             r"base_fold.*status"):
        records_from_csv(other)
    with pytest.raises(SystemExit):
        parse_args(["-d", "904", "--report-only", "--add-results", str(tmp_path / "missing.csv")])
    assert "--add-results: no file" in capsys.readouterr().err


def test_report_only_with_an_output_folder_needs_no_nnunet_folders(tmp_path, monkeypatch):
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.delenv(name, raising=False)
    earlier = _written(tmp_path, [_record("nnFMTrainer_scratch", 1, s, 0.3 + 0.1 * s) for s in (0, 1, 2)])
    main(["-d", "904", "--report-only", "-o", str(tmp_path / "report"), "--add-results", str(earlier)])
    assert len(records_from_csv(tmp_path / "report" / "results.csv")) == 3
    assert not (tmp_path / "nnUNet_raw").exists()


def test_by_default_each_draw_is_compared_with_nnunets_own_trainer_run_under_nnfms_budget(tmp_path):
    """nnFM's question is whether it beats nnU-Net's trainer (issue 27); nnFM_benchmark runs that trainer as
    nnUNetTrainer_nnFMBudget, whose table name is 'nnUNetTrainer (nnUNetTrainer_nnFMBudget)'."""
    records = [dict(_record("nnUNetTrainer", 3, s, d, weights=None), trainer_class="nnUNetTrainer_nnFMBudget")
               for s, d in ((0, 0.70), (1, 0.60))]
    records += [_record("nnFMTrainer_nnUNetPlans", 3, s, d, "plainconv_unet_synth_nnfm") for s, d in ((0, 0.75), (1, 0.58))]
    write_markdown(records, tmp_path / "results.md")
    text = (tmp_path / "results.md").read_text()
    assert "− nnUNetTrainer, per seed" in text and "+0.050 / -0.020" in text and "+0.015" in text
