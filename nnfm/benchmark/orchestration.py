"""The benchmark loop: prepare each dataset, then every requested run in a fixed order."""
import json
import os
from pathlib import Path

from nnfm.benchmark import data, planning, splits
from nnfm.benchmark.commands import CommandFailed, nnunet_environment
from nnfm.benchmark.runs import Context, Run, RunConflict, RunFailed, execute, preflight
from nnfm.benchmark.trainer_table import trainer_class_for, trainer_spec


def run_benchmark(args, env: dict, output: Path) -> list:
    """Run everything asked for; the descriptions of the runs that failed."""
    budget = args.budget
    results_root = output / budget.name
    env = nnunet_environment(dict(env, nnUNet_results=str(results_root), nnUNet_def_n_proc=str(args.np)))
    os.environ.update(env)  # nnU-Net helpers used in this process read the same folders
    device = args.device or _default_device()
    weights = _absolute_if_path(args.weights or env.get("nnFM_WEIGHTS"))
    print(f"nnFM benchmark: profile {budget.name} ({budget.epochs} epochs x {budget.iterations} iterations"
          f"{'' if budget.overrides else ', nnU-Net defaults'}), device {device}, output {output}")
    failures = []
    for index, dataset_id in enumerate(args.datasets):
        try:
            context, name = _prepare_dataset(args, index, dataset_id, env, output, results_root)
            preprocessed = Path(env["nnUNet_preprocessed"]) / name
            folds = [f for base in args.folds for f in _folds(preprocessed, base, args.shots, args.seeds)]
        except (data.DataConflict, planning.PlanningError, splits.SplitConflict, CommandFailed) as error:
            raise SystemExit(f"Dataset {dataset_id}: {error}")
        specs = {trainer: trainer_spec(trainer) for trainer in args.trainers}
        runs = [Run(dataset_id, name, configuration, trainer, trainer_class_for(trainer, budget), spec.plans, fold,
                    budget, weights if spec.pretrained else None, device)
                for configuration in args.configurations for fold in folds for trainer, spec in specs.items()
                if spec.supports(configuration)]  # e.g. no 2d ViT trainer in a 3d_fullres run
        try:
            preflight(runs, results_root)
        except RunConflict as error:
            raise SystemExit(f"Dataset {dataset_id}: {error}")
        for run in runs:
            try:
                execute(run, context)
            except (RunFailed, RunConflict) as error:
                print(f"  FAILED: {error}", flush=True)
                failures.append(run.describe())
    return failures


def _prepare_dataset(args, index: int, dataset_id: int, env: dict, output: Path, results_root: Path) -> tuple:
    log = output / "logs" / f"Dataset{dataset_id:03d}_preparation.log"
    print(f"\nDataset {dataset_id}: preparing (log: {log})", flush=True)
    if args.msd:
        raw = data.prepare_msd(args.msd[index], dataset_id, args.test_cases, args.max_cases, args.case_seed, env,
                               args.np, log, args.verbose)
    else:
        raw = data.find_dataset_folder(Path(env["nnUNet_raw"]), dataset_id)
    name = data.dataset_name(env, dataset_id)
    if raw is None:
        raise data.DataConflict(f"{name} has no raw folder in nnUNet_raw: the benchmark needs it to plan and split.")
    cases = data.training_case_ids(raw)
    for configuration in args.configurations:
        specs = [trainer_spec(t) for t in args.trainers if trainer_spec(t).supports(configuration)]
        for plans in {spec.plans: spec for spec in specs}.values():
            planning.ensure_planned(dataset_id, name, plans, configuration, len(cases), args.weights, env, args.np,
                                    log, args.verbose)
    preprocessed = Path(env["nnUNet_preprocessed"]) / name
    splits.ensure_standard_splits(preprocessed, cases)
    test = None if args.no_test else data.test_set(raw, args.test_images, args.test_labels)
    if test is not None:
        _check_test_cases_unseen(test[1], cases, json.loads((raw / "dataset.json").read_text()))
    print(f"  {len(cases)} training cases; test set: {test[0] if test else 'none'}", flush=True)
    context = Context(env, results_root, json.loads((raw / "dataset.json").read_text()), test, args.np,
                      args.verbose)
    return context, name


def _folds(preprocessed: Path, base: int, shots: list, seeds: list) -> list:
    """The folds to train for one base fold: the base fold itself for 'all', a few-shot fold per number and seed."""
    folds = []
    for n in shots:
        if n == "all":
            folds.append(splits.base_fold(preprocessed, base))
        else:
            folds += [splits.few_shot_fold(preprocessed, base, n, seed) for seed in seeds]
    return folds


def _check_test_cases_unseen(labels: Path, training_cases: list, dataset_json: dict) -> None:
    ending = dataset_json.get("file_ending", ".nii.gz")
    test_cases = {p.name[:-len(ending)] for p in labels.iterdir() if p.name.endswith(ending)}
    seen = sorted(test_cases & set(training_cases))
    if seen:
        raise data.DataConflict(f"Test cases are also training cases: {seen[:5]}{' ...' if len(seen) > 5 else ''}")


def _default_device() -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def _absolute_if_path(weights):
    return str(Path(weights).resolve()) if weights and Path(weights).exists() else weights
