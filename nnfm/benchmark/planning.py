"""Plan and preprocess a dataset for a trainer's plans, only where that has not been done yet."""
import json
from pathlib import Path
from typing import Optional

from nnfm.benchmark.commands import run_command
from nnfm.paths import console_script
from nnfm.benchmark.trainer_table import TrainerSpec


class PlanningError(RuntimeError):
    pass


def plan_command(dataset_id: int, spec: TrainerSpec, weights: Optional[str], num_processes: int) -> list:
    if spec.encoder is None:
        return [console_script("nnUNetv2_plan_and_preprocess"), "-d", dataset_id, "--no_pp", "-npfp", num_processes]
    command = [console_script("nnFM_plan_and_preprocess"), "-d", dataset_id, "-e", spec.encoder, "--no_pp",
               "-np", num_processes]
    return command + (["-w", weights] if weights else [])


def preprocessed_case_count(preprocessed: Path, plans_name: str, configuration: str) -> int:
    """How many cases nnU-Net has preprocessed for this plans/configuration (one .pkl per case)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = PlansManager(json.loads((preprocessed / f"{plans_name}.json").read_text()))
    if configuration not in plans.available_configurations:
        raise PlanningError(f"{plans_name} has no configuration {configuration!r} "
                            f"(it has {', '.join(plans.available_configurations)}).")
    data = preprocessed / plans.get_configuration(configuration).data_identifier
    return len(list(data.glob("*.pkl"))) if data.is_dir() else 0


def ensure_planned(dataset_id: int, dataset_name: str, spec: TrainerSpec, configuration: str, n_cases: int,
                   weights: Optional[str], env: dict, num_processes: int, log_file: Path,
                   verbose: bool = False) -> None:
    preprocessed = Path(env["nnUNet_preprocessed"]) / dataset_name
    if not (preprocessed / f"{spec.plans}.json").is_file():
        print(f"  planning {dataset_name} -> {spec.plans}")
        run_command(plan_command(dataset_id, spec, weights, num_processes), env, log_file, verbose)
    done = preprocessed_case_count(preprocessed, spec.plans, configuration)
    if done == n_cases:
        return
    # nnU-Net's preprocessing starts its output folder afresh, so an interrupted one is simply redone
    print(f"  preprocessing {dataset_name} {spec.plans} {configuration} ({done}/{n_cases} cases present)")
    run_command([console_script("nnUNetv2_preprocess"), "-d", dataset_id, "-plans_name", spec.plans,
                 "-c", configuration, "-np", num_processes], env, log_file, verbose)
    done = preprocessed_case_count(preprocessed, spec.plans, configuration)
    if done != n_cases:
        raise PlanningError(f"Preprocessing {spec.plans} {configuration} produced {done} of {n_cases} cases.")
