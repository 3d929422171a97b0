"""nnFM_benchmark: few-shot folds, budgets, and the runner end to end on real MRI (smoke budget),
including a run killed mid-training that continues, and finished runs that are skipped."""
import csv
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import HIPPOCAMPUS
from nnfm.benchmark import splits
from nnfm.benchmark.profiles import BUDGET_VARIABLES, budget_environment, resolve_profile
from nnfm.benchmark.trainer_table import trainer_class_for, trainer_spec

# the runner's own dataset, not conftest's: converting MSD data with held-out test cases is part of what is tested
DATASET_ID = 993
DATASET = f"Dataset{DATASET_ID}_Hippocampus"
PLANS = "nnFMPlans_anatomix"
# 7 real cases: 2 held out for testing, 5 in nnU-Net's 5-fold split (fold 0: 4 training, 1 validation)
DATA = ["-d", DATASET_ID, "--msd", HIPPOCAMPUS, "--max-cases", 7, "--test-cases", 2, "-device", "cpu", "-np", 1]


# ---- few-shot folds ----------------------------------------------------------------------------
def test_few_shot_folds_are_reproducible_nested_and_keep_validation(tmp_path):
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    ids = [f"case_{i:03d}" for i in range(20)]
    folder = tmp_path / "a"
    folder.mkdir()
    standard = splits.ensure_standard_splits(folder, ids)
    assert standard == [{"train": list(s["train"]), "val": list(s["val"])}
                        for s in generate_crossval_split(ids, seed=12345, n_splits=5)]  # nnU-Net's own split
    before = json.loads((folder / splits.SPLITS).read_text())

    three, five, other_seed = (splits.few_shot_fold(folder, 1, 3, 0), splits.few_shot_fold(folder, 1, 5, 0),
                               splits.few_shot_fold(folder, 1, 3, 1))
    assert (three.index, five.index, other_seed.index) == (5, 6, 7)
    for fold in (three, five, other_seed):
        assert set(fold.train) <= set(before[1]["train"]) and len(set(fold.train)) == fold.n_train
        assert list(fold.val) == before[1]["val"]
    assert set(three.train) <= set(five.train)  # a learning curve adds cases, it does not swap them
    after = json.loads((folder / splits.SPLITS).read_text())
    assert after[:5] == before  # folds 0-4 untouched
    assert after[5] == {"train": list(three.train), "val": before[1]["val"]}

    assert splits.few_shot_fold(folder, 1, 3, 0) == three  # a rerun reuses the index
    assert len(json.loads((folder / splits.SPLITS).read_text())) == 8
    assert splits.few_shot_fold(folder, 1, len(before[1]["train"]), 0).index == 1  # all cases: the fold itself

    elsewhere = tmp_path / "b"  # same draw on another machine, whatever the listing order
    elsewhere.mkdir()
    splits.ensure_standard_splits(elsewhere, list(reversed(ids)))
    assert splits.few_shot_fold(elsewhere, 1, 3, 0).train == three.train

    with pytest.raises(splits.SplitConflict):
        splits.few_shot_fold(folder, 1, len(before[1]["train"]) + 1, 0)
    with pytest.raises(splits.SplitConflict):
        splits.few_shot_fold(folder, 5, 1, 0)  # a few-shot fold is no base fold
    after[5]["train"] = after[5]["train"][:1]
    (folder / splits.SPLITS).write_text(json.dumps(after))
    with pytest.raises(splits.SplitConflict):
        splits.few_shot_fold(folder, 1, 3, 0)  # an edited split file is refused, not silently trained on


def test_few_shot_fold_after_a_custom_split_and_after_an_interrupted_append(tmp_path):
    custom = [{"train": ["a", "b", "c", "d"], "val": ["e", "f"]}]
    (tmp_path / splits.SPLITS).write_text(json.dumps(custom))
    fold = splits.few_shot_fold(tmp_path, 0, 2, 0)
    assert fold.index == 1 and fold.val == ("e", "f")
    # killed between the registry and the split file: the next call completes the split file
    (tmp_path / splits.SPLITS).write_text(json.dumps(custom))
    assert splits.few_shot_fold(tmp_path, 0, 1, 0).index == 2
    assert json.loads((tmp_path / splits.SPLITS).read_text())[1] == {"train": list(fold.train), "val": ["e", "f"]}


def test_budget_profiles_and_the_trainer_class_run():
    smoke, custom, full = resolve_profile("smoke"), resolve_profile("4x2"), resolve_profile("full")
    assert (smoke.epochs, smoke.iterations, smoke.val_iterations) == (1, 2, 1)
    assert (custom.name, custom.epochs, custom.iterations, custom.val_iterations) == ("4x2", 4, 2, 1)
    with pytest.raises(ValueError):
        resolve_profile("fast")
    env = budget_environment(smoke, {"nnFM_EPOCHS": "7"})
    assert (env["nnFM_EPOCHS"], env["nnFM_ITERATIONS"], env["nnFM_VAL_ITERATIONS"]) == ("1", "2", "1")
    assert not set(BUDGET_VARIABLES) & set(budget_environment(full, env))  # nnU-Net's own schedule
    assert trainer_class_for("nnUNetTrainer", smoke) == "nnUNetTrainer_nnFMBudget"
    assert trainer_class_for("nnUNetTrainer", full) == "nnUNetTrainer"
    assert trainer_class_for("nnFMTrainer", smoke) == "nnFMTrainer"
    # each nnFM trainer runs only in the configuration its planner writes; nnU-Net's in any
    assert trainer_spec("nnFMTrainer_MedDINOv3").supports("2d") and not trainer_spec("nnFMTrainer_MedDINOv3").supports("3d_fullres")
    assert trainer_spec("nnFMTrainer_Primus").plans == "nnFMPlans_primus_m" and not trainer_spec("nnFMTrainer").supports("2d")
    assert trainer_spec("nnUNetTrainer").supports("2d") and trainer_spec("nnUNetTrainer").supports("3d_fullres")


# ---- the runner, end to end ----------------------------------------------------------------------
def benchmark_command(workdir: Path, *args) -> list:
    return [sys.executable, "-m", "nnfm.benchmark.cli", "--workdir", workdir] + DATA + list(args)


def run_benchmark(command: list, env: dict) -> str:
    result = subprocess.run([str(c) for c in command], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout


def read_csv(path: Path) -> list:
    with open(path) as f:
        return list(csv.DictReader(f))


def fold_folder(workdir: Path, profile: str, trainer: str, fold: int) -> Path:
    return workdir / "nnUNet_results" / "nnFM_benchmark" / profile / DATASET / f"{trainer}__{PLANS}__3d_fullres" / \
        f"fold_{fold}"


@pytest.fixture(scope="module")
def smoke(nnunet_env, anatomix_checkpoint, tmp_path_factory) -> dict:
    workdir = tmp_path_factory.mktemp("benchmark")
    command = benchmark_command(workdir, "-tr", "nnFMTrainer", "nnFMTrainer_scratch", "--shots", 2,
                                "--profile", "smoke", "-w", anatomix_checkpoint)
    stdout = run_benchmark(command, nnunet_env)
    return {"workdir": workdir, "output": workdir / "nnUNet_results" / "nnFM_benchmark", "command": command,
            "stdout": stdout}


@pytest.mark.e2e
def test_runner_trains_predicts_and_reports_on_a_smoke_budget(smoke, anatomix_checkpoint):
    output, workdir = smoke["output"], smoke["workdir"]
    rows = {r["trainer"]: r for r in read_csv(output / "results.csv") if r["profile"] == "smoke"}
    assert sorted(rows) == ["nnFMTrainer", "nnFMTrainer_scratch"]
    for trainer, row in rows.items():
        assert row["status"] == "done" and row["trainer_class"] == trainer and row["plans"] == PLANS
        assert (row["epochs"], row["iterations_per_epoch"], row["epochs_run"]) == ("1", "2", "1")
        assert (row["base_fold"], row["fold"], row["shots"], row["n_train"], row["n_val"], row["seed"]) == \
            ("0", "5", "2", "2", "1", "0")
        assert row["test_n"] == "2"
        for column in ("val_dice_mean", "val_dice_Anterior", "val_dice_Posterior", "test_dice_mean",
                       "test_dice_Anterior", "test_dice_Posterior"):
            assert 0 <= float(row[column]) <= 1, (trainer, column, row[column])
        assert 0 < float(row["s_per_iteration"]) < 120 and 0 < float(row["wall_s"]) < 600
        assert 100 < float(row["peak_rss_mb"]) < 64000 and row["peak_gpu_mb"] == ""
        # the last epoch's losses as nnU-Net logged them in its checkpoint
        logging = torch.load(Path(row["output_folder"]) / "checkpoint_final.pth", map_location="cpu",
                             weights_only=False)["logging"]
        assert float(row["final_val_loss"]) == pytest.approx(float(logging["val_losses"][-1]), rel=1e-6)
        assert float(row["final_train_loss"]) == pytest.approx(float(logging["train_losses"][-1]), rel=1e-6)
    assert rows["nnFMTrainer"]["weights"] == str(anatomix_checkpoint)
    assert rows["nnFMTrainer"]["weights_sha256"] == hashlib.sha256(anatomix_checkpoint.read_bytes()).hexdigest()
    assert rows["nnFMTrainer_scratch"]["weights"] == "random"

    per_case = read_csv(output / "per_case_dice.csv")
    assert len(per_case) == 2 * (1 + 2) * 2  # trainers x (validation + test cases) x classes
    markdown = (output / "results.md").read_text()
    assert "| nnFMTrainer_scratch |" in markdown and "smoke (1x2)" in markdown
    for plot in ("dice_vs_labelled", "per_class_dice"):
        png = output / "plots" / f"{plot}_{DATASET}_3d_fullres_smoke.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000

    # the few-shot fold: 2 of fold 0's training cases, fold 0's validation cases
    preprocessed = workdir / "nnUNet_preprocessed" / DATASET
    folds = json.loads((preprocessed / "splits_final.json").read_text())
    assert len(folds) == 6 and set(folds[5]["train"]) < set(folds[0]["train"]) and folds[5]["val"] == folds[0]["val"]
    # held-out test cases are in no fold and not among nnU-Net's training images
    raw = workdir / "nnUNet_raw" / DATASET
    held_out = json.loads((raw / "nnfm_benchmark_source.json").read_text())["held_out_test_cases"]
    assert len(held_out) == 2 and sorted(p.name for p in (raw / "labelsTs").iterdir()) == \
        sorted(f"{c}.nii.gz" for c in held_out)
    assert not set(held_out) & {c for f in folds for c in f["train"] + f["val"]}
    assert not any((raw / "imagesTr" / f"{c}_0000.nii.gz").exists() for c in held_out)


@pytest.mark.e2e
def test_a_killed_run_continues_from_its_last_checkpoint(smoke, nnunet_env):
    workdir = smoke["workdir"]
    # at a CPU-sized patch and batch (nnFM_PATCH_SIZE / nnFM_BATCH_SIZE): the profile's name records them
    command = [str(c) for c in benchmark_command(workdir, "-tr", "nnFMTrainer_scratch", "--shots", "all",
                                                 "--profile", "3x2", "--patch-size", 32, 32, 32, "--batch-size", 1,
                                                 "--no-test")]
    profile = "3x2_p32x32x32_b1"
    folder = fold_folder(workdir, profile, "nnFMTrainer_scratch", 0)
    with open(workdir / "killed_run.txt", "w") as log:
        process = subprocess.Popen(command, env=nnunet_env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            deadline = time.time() + 300
            # "Epoch 1" is logged after epoch 0's checkpoint_latest.pth was written in full
            while not any(re.search(r": Epoch 1 *$", p.read_text(), re.M) for p in folder.glob("training_log_*.txt")):
                assert process.poll() is None and time.time() < deadline, (workdir / "killed_run.txt").read_text()
                time.sleep(0.2)
        finally:
            os.killpg(process.pid, signal.SIGKILL)  # the runner, nnU-Net and its augmentation workers
            process.wait()
    assert (folder / "checkpoint_latest.pth").is_file() and not (folder / "checkpoint_final.pth").exists()
    assert json.loads((folder / "nnfm_benchmark.json").read_text())["status"] == "running"
    first_logs = set(folder.glob("training_log_*.txt"))

    stdout = run_benchmark(command, nnunet_env)
    assert "training (resume)" in stdout
    record = json.loads((folder / "nnfm_benchmark.json").read_text())
    assert (record["status"], record["mode"], record["epochs_run"], record["profile"]) == \
        ("done", "resumed", 3, profile)
    resumed_log, = set(folder.glob("training_log_*.txt")) - first_logs
    text = resumed_log.read_text()
    assert not re.search(r": Epoch 0 *$", text, re.M) and re.search(r": Epoch 2 *$", text, re.M)
    assert "patch_size [48, 64, 48] -> [32, 32, 32] (from nnFM_PATCH_SIZE)" in text
    # the model's plans (what nnUNetv2_predict slides) carry the trained patch and batch
    trained = json.loads((folder.parent / "plans.json").read_text())["configurations"]["3d_fullres"]
    assert (trained["patch_size"], trained["batch_size"]) == ([32, 32, 32], 1)
    row, = [r for r in read_csv(smoke["output"] / "results.csv") if r["profile"] == profile]
    assert (row["mode"], row["n_train"], row["fold"], row["epochs"], row["test_n"]) == ("resumed", "4", "0", "3", "")
    assert (row["patch_size"], row["batch_size"]) == ("32x32x32", "1")
    # the resumed session's wall time is not the run's (the killed session's is unmeasured): none is reported
    assert record["wall_s"] is None and row["wall_s"] == "" and record["peak_rss_mb"] > 0


@pytest.mark.e2e
def test_finished_runs_are_skipped(smoke, nnunet_env):
    finals = {p: p.stat().st_mtime for p in smoke["output"].glob("smoke/*/*/fold_*/checkpoint_final.pth")}
    assert len(finals) == 2
    stdout = run_benchmark(smoke["command"], nnunet_env)
    assert stdout.count("skip (done)") == 2 and "training (" not in stdout and "predicting" not in stdout
    assert {p: p.stat().st_mtime for p in finals} == finals
    assert {r["trainer"] for r in read_csv(smoke["output"] / "results.csv") if r["profile"] == "smoke"} == \
        {"nnFMTrainer", "nnFMTrainer_scratch"}


@pytest.mark.e2e
def test_other_weights_on_a_finished_runs_fold_stop_the_benchmark_before_any_training(smoke, nnunet_env, tmp_path,
                                                                                       anatomix_checkpoint):
    # nnU-Net keeps one model per trainer/plans/fold, so the same trainer with other weights cannot share an output;
    # the runner must say so before it trains anything, not after the runs that come first
    finals = {p: p.stat().st_mtime for p in smoke["output"].glob("smoke/*/*/fold_*/checkpoint_final.pth")}
    other = tmp_path / "other_weights.pth"
    other.write_bytes(anatomix_checkpoint.read_bytes())
    command = benchmark_command(smoke["workdir"], "-tr", "nnFMTrainer_scratch", "nnFMTrainer", "--shots", 2,
                                "--profile", "smoke", "-w", other)
    result = subprocess.run([str(c) for c in command], env=nnunet_env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "nothing was started" in output, output[-3000:]
    assert "requested_weights" in output and str(other) in output and "use another --output" in output
    assert "training (" not in output
    assert {p: p.stat().st_mtime for p in finals} == finals


def test_a_draw_another_process_wrote_at_the_same_index_is_refused_not_trained_on(tmp_path, monkeypatch):
    """Two benchmarks appending at once: the second write replaced the first, and the first process returned the
    other draw's cases under its own N and seed. Now appends are serialised (flock) and the entry is checked."""
    (tmp_path / splits.SPLITS).write_text(json.dumps([{"train": ["a", "b", "c", "d"], "val": ["e"]}]))
    real = splits._complete_splits
    calls = []

    def other_process_wins(preprocessed):
        result = real(preprocessed)
        calls.append(1)
        if len(calls) == 2:  # right after this process's append: the other process's entry replaced it
            registry = json.loads((tmp_path / splits.FEW_SHOT_REGISTRY).read_text())
            registry["1"].update(n_train=3, seed=7)
            (tmp_path / splits.FEW_SHOT_REGISTRY).write_text(json.dumps(registry))
            return result[0], registry
        return result
    monkeypatch.setattr(splits, "_complete_splits", other_process_wins)
    with pytest.raises(splits.SplitConflict, match="not the draw asked for.*another process"):
        splits.few_shot_fold(tmp_path, 0, 2, 0)


@pytest.mark.parametrize("flags, whole", [([], True), (["--c"], False), (["--val"], False)])
def test_only_a_process_that_trained_from_the_first_epoch_claims_the_runs_wall_time(flags, whole, tmp_path,
                                                                                   monkeypatch):
    """A resumed run's killed sessions are not measured, so its last session's wall time is not the run's."""
    import nnunetv2.run.run_training as run_training

    from nnfm.benchmark import train_and_measure
    monkeypatch.setattr(run_training, "run_training_entry", lambda: None)
    out = tmp_path / "measurements.json"
    train_and_measure.main([str(out), "4", "3d_fullres", "0", "-tr", "nnFMTrainer", *flags])
    measured = json.loads(out.read_text())
    assert measured["whole_training"] is whole and measured["process_wall_s"] >= 0
