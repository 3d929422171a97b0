"""One benchmark run: train (fresh, resumed, or validation only) -> collect -> optionally predict a test set.

Everything about a run lives in its nnU-Net fold folder: nnU-Net's own files, plus
nnfm_benchmark.json (the record: what was asked, status and results), nnfm_benchmark.log (all
command output) and nnfm_benchmark_test/ (test predictions and nnU-Net's evaluation of them).
A run whose record says done is skipped; one with checkpoint_latest.pth and no
checkpoint_final.pth continues with ``nnUNetv2_train --c``.
"""
import datetime
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from nnfm.benchmark import nnunet_outputs
from nnfm.benchmark.commands import CommandFailed, python_module, run_command
from nnfm.paths import console_script
from nnfm.benchmark.profiles import Budget, budget_environment
from nnfm.benchmark.splits import Fold

RECORD = "nnfm_benchmark.json"
LOG = "nnfm_benchmark.log"
MEASUREMENTS = "nnfm_benchmark_measurements.json"
TEST_FOLDER = "nnfm_benchmark_test"


class RunConflict(RuntimeError):
    pass


class RunFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Run:
    dataset_id: int
    dataset: str
    configuration: str
    trainer: str                 # as asked for
    trainer_class: str           # as run (a budget twin of nnUNetTrainer below the full profile)
    plans: str
    fold: Fold
    budget: Budget
    weights: Optional[str]       # nnFM_WEIGHTS for pretrained trainers; None: the plans' or registry default
    device: str

    @property
    def shots(self) -> str:
        return "all" if self.fold.seed is None else str(self.fold.n_train)

    def folder(self, results_root: Path) -> Path:
        return Path(results_root) / self.dataset / f"{self.trainer_class}__{self.plans}__{self.configuration}" / \
            f"fold_{self.fold.index}"

    def identity(self) -> dict:
        """What a finished record must match to stand for this run."""
        return dict(self.budget.as_record(), trainer_class=self.trainer_class, plans=self.plans,
                    configuration=self.configuration, fold=self.fold.index, base_fold=self.fold.base_fold,
                    n_train=self.fold.n_train, seed=self.fold.seed, requested_weights=self.weights)

    def describe(self) -> str:
        seed = "" if self.fold.seed is None else f", seed {self.fold.seed}"
        return (f"{self.dataset} {self.configuration} {self.trainer_class} fold {self.fold.base_fold} "
                f"({self.shots} labelled{seed} -> nnU-Net fold {self.fold.index}), {self.budget.name} "
                f"{self.budget.epochs}x{self.budget.iterations}")


@dataclass(frozen=True)
class Context:
    env: dict                    # nnU-Net variables, nnUNet_results pointing at results_root
    results_root: Path
    dataset_json: dict
    test: Optional[tuple]        # (images folder, labels folder) or None
    num_processes: int
    verbose: bool = False


def check_no_conflict(run: Run, results_root: Path) -> None:
    """RunConflict when the run's nnU-Net fold folder already holds another run (e.g. other weights or budget).

    nnU-Net keys a model by trainer, plans, configuration and fold only, so one output folder can hold one run of
    each; what else differs (requested weights, profile, patch) is named in the error with the fix.
    """
    folder = run.folder(results_root)
    _refuse_conflict(run, folder, _read_record(folder))


def _refuse_conflict(run: Run, folder: Path, record: Optional[dict]) -> None:
    if record is None or record["identity"] == run.identity():
        return
    old, new = record["identity"], run.identity()
    differs = ", ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} asked" for k in sorted(set(old) | set(new))
                        if old.get(k) != new.get(k))
    raise RunConflict(f"{folder} holds another run of {run.trainer_class} on this fold ({differs}). nnU-Net keeps "
                      f"one model per trainer, plans, configuration and fold in a results folder: use another "
                      f"--output for this run (e.g. one output per weights), or remove that folder to replace it.")


def preflight(runs: list, results_root: Path) -> None:
    """Check every run before any is trained, so a conflict stops the benchmark before hours of work, not after."""
    problems = []
    for run in runs:
        try:
            check_no_conflict(run, results_root)
        except RunConflict as error:
            problems.append(str(error))
    if problems:
        raise RunConflict(f"{len(problems)} of {len(runs)} runs conflict with finished runs; nothing was started:\n"
                          + "\n".join(f"  - {p}" for p in problems))


def training_state(folder: Path) -> str:
    """'finished' (trained and validated), 'validate' (trained only), 'resume' or 'fresh'."""
    if (folder / "checkpoint_final.pth").is_file():
        return "finished" if (folder / "validation" / "summary.json").is_file() else "validate"
    return "resume" if (folder / "checkpoint_latest.pth").is_file() else "fresh"


def execute(run: Run, context: Context) -> dict:
    """Do what is left of the run and return its record (marked 'skipped' when nothing was left)."""
    folder = run.folder(context.results_root)
    record = _read_record(folder)
    _refuse_conflict(run, folder, record)
    if record is not None and record["status"] == "done" and (context.test is None or record.get("test_n")):
        print(f"skip (done): {run.describe()}", flush=True)
        return dict(record, skipped=True)

    print(f"run: {run.describe()}", flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    record = _new_record(run, folder)
    _write_record(folder, record)
    try:
        record["mode"] = _train(run, context, folder)
        record.update(_collect_training(run, context, folder))
        if context.test is not None:
            record.update(_predict_and_evaluate(run, context, folder))
    except (CommandFailed, OSError) as error:
        _write_record(folder, dict(record, status="failed", error=str(error)[-4000:]))
        raise RunFailed(f"{run.describe()} failed: {error}") from error
    record.update(status="done", finished_at=_now())
    _write_record(folder, record)
    return record


def _train(run: Run, context: Context, folder: Path) -> str:
    state = training_state(folder)
    if state == "finished":
        return "collected"
    flag = {"fresh": [], "resume": ["--c"], "validate": ["--val"]}[state]
    env = budget_environment(run.budget, context.env)
    if run.weights:
        env["nnFM_WEIGHTS"] = run.weights
    (folder / MEASUREMENTS).unlink(missing_ok=True)
    print(f"  training ({state})", flush=True)
    run_command(python_module("nnfm.benchmark.train_and_measure") +
                [folder / MEASUREMENTS, run.dataset_id, run.configuration, run.fold.index, "-tr", run.trainer_class,
                 "-p", run.plans, "-device", run.device] + flag, env, folder / LOG, context.verbose)
    return {"fresh": "trained", "resume": "resumed", "validate": "validated"}[state]


def _collect_training(run: Run, context: Context, folder: Path) -> dict:
    validation = nnunet_outputs.read_dice(folder / "validation" / "summary.json", context.dataset_json)
    logging = nnunet_outputs.training_log(folder / "checkpoint_final.pth")
    durations = nnunet_outputs.epoch_durations(logging)
    measured = json.loads((folder / MEASUREMENTS).read_text()) if (folder / MEASUREMENTS).is_file() else {}
    return dict(nnunet_outputs.pretrained_provenance(folder), classes=sorted(validation["dice"]),
                val_dice_mean=validation["dice_mean"], val_dice=validation["dice"],
                val_per_case=validation["per_case"], epochs_run=len(durations), epochs_time_s=sum(durations),
                s_per_iteration=nnunet_outputs.seconds_per_iteration(durations, run.budget.iterations),
                # the training's wall time only where one process ran all of it (a resumed run's earlier sessions
                # are not measured); peak memory: that of the last training process
                wall_s=measured.get("process_wall_s") if measured.get("whole_training") else None,
                peak_rss_mb=measured.get("peak_rss_mb"),
                peak_gpu_mb=measured.get("peak_gpu_mb"), **nnunet_outputs.final_losses(logging))


def _predict_and_evaluate(run: Run, context: Context, folder: Path) -> dict:
    images, labels = context.test
    predictions = folder / TEST_FOLDER / "predictions"
    summary = predictions / "summary.json"
    seconds = None
    if not summary.is_file():
        print("  predicting the test set", flush=True)
        start = time.time()
        n = str(context.num_processes)
        # -np 1: nnU-Net's sequential prediction (-npp 0 -nps 0), which spares spawning two worker processes that
        # import torch and nnU-Net again
        workers = "0" if context.num_processes <= 1 else n
        run_command([console_script("nnUNetv2_predict"), "-i", images, "-o", predictions, "-d", run.dataset_id,
                     "-c", run.configuration, "-tr", run.trainer_class, "-p", run.plans, "-f", run.fold.index,
                     "-device", run.device, "-npp", workers, "-nps", workers, "--disable_progress_bar"]
                    + ([] if run.budget.test_tta else ["--disable_tta"]),
                    context.env, folder / LOG, context.verbose)
        seconds = time.time() - start
        run_command([console_script("nnUNetv2_evaluate_folder"), labels, predictions,
                     "-djfile", predictions / "dataset.json", "-pfile", predictions / "plans.json", "-np", n],
                    context.env, folder / LOG, context.verbose)
    test = nnunet_outputs.read_dice(summary, context.dataset_json)
    return {"test_n": test["n"], "test_dice_mean": test["dice_mean"], "test_dice": test["dice"],
            "test_per_case": test["per_case"], "predict_s": seconds}


def _new_record(run: Run, folder: Path) -> dict:
    return dict(run.budget.as_record(), identity=run.identity(), status="running", started_at=_now(),
                dataset=run.dataset, dataset_id=run.dataset_id, configuration=run.configuration,
                trainer=run.trainer, trainer_class=run.trainer_class, plans=run.plans,
                weights=run.weights, base_fold=run.fold.base_fold, fold=run.fold.index, shots=run.shots,
                n_train=run.fold.n_train, n_val=min(len(run.fold.val), run.budget.val_cases or len(run.fold.val)),
                seed=run.fold.seed, device=run.device,
                output_folder=str(folder), command=" ".join(sys.argv))


def _read_record(folder: Path) -> Optional[dict]:
    path = folder / RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def _write_record(folder: Path, record: dict) -> None:
    temporary = folder / (RECORD + ".tmp")
    temporary.write_text(json.dumps(record, indent=1))
    temporary.replace(folder / RECORD)


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")
