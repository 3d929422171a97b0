"""``nnFM_demo``: the whole pipeline on real MRI, on the CPU, in minutes, with nnU-Net's own commands.

MSD Hippocampus -> nnUNetv2_convert_MSD_dataset -> nnFM_plan_and_preprocess -> nnUNetv2_train
(nnFM's default: nnU-Net's own plans and network started from nnFM's pretrained weights, nnFMTrainer_nnUNetPlans;
``-e ENCODER`` for a registered encoder; fold 0, short budget) -> nnUNetv2_predict on held-back cases ->
nnUNetv2_evaluate_folder ->
segmentation.png (worst, median and best held-back case). Everything lives in its own workspace folder, emptied at
the start; nothing is downloaded. Each command is printed with the environment it ran in, so it reruns as shown.
"""
import argparse
import json
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from nnfm.benchmark.profiles import PROFILES
from nnfm.flags import parse_args
from nnfm.segmentation_figure import write_segmentation_figure

DEFAULT_MSD = Path("..") / "shared" / "data" / "Task04_Hippocampus"
DATASET_ID = 904
# the CPU budget of the README's first command: nnFM_benchmark's "demo" profile (documentation/benchmarks.md,
# "Demo budget"), so the benchmark can repeat the demo's training over draws
BUDGET = PROFILES["demo"]
TRAIN_CASES, VAL_CASES, TEST_CASES = 40, 4, 10
CASE_SEED = 0


def case_draw(train_cases: int = TRAIN_CASES, val_cases: int = VAL_CASES, test_cases: int = TEST_CASES) -> tuple:
    """(held-back test cases, cases used at all, case seed): how the demo draws its cases from the MSD folder
    (``nnfm.benchmark.data.draw_cases`` / ``prepare_msd``)."""
    return test_cases, train_cases + val_cases + test_cases, CASE_SEED


def shell_environment(env: dict, shown: dict) -> list:
    """The export / unset lines that make a printed command rerunnable in a fresh shell: variables of ``env`` that
    differ from this process's environment and were not printed yet (``shown`` records what was)."""
    lines = []
    for name in sorted(set(env) | set(shown) | set(os.environ)):
        value = env.get(name)
        if value == shown.get(name, os.environ.get(name)):
            continue
        lines.append(f"export {name}={shlex.quote(value)}" if value is not None else f"unset {name}")
        shown[name] = value
    return lines


def print_environment(env: dict, shown: dict) -> None:
    for line in shell_environment(env, shown):
        print(f"$ {line}")


def run(command: list, env: dict, shown: dict) -> None:
    print()
    print_environment(env, shown)
    print(f"$ {shlex.join(command)}", flush=True)
    subprocess.run(command, env=env, check=True)


def resolve_demo_weights(requested: str) -> str:
    """What ``-w`` gets: ``requested`` (a registry name stays a name, so the plans record what the weights are, not
    where this installation keeps them) if it is available offline; otherwise say so and return "random"."""
    from nnfm.errors import NNFMError
    from nnfm.weights import get_weights_entry, is_random_init, resolve_checkpoint
    if is_random_init(requested):
        return "random"
    try:
        path, sha = resolve_checkpoint(requested)
        print(f"Pretrained weights: {requested} -> {path} (sha256 {sha})")
        return str(requested) if get_weights_entry(str(requested)) is not None else str(path)
    except NNFMError as error:
        print(f"\nNOTE: pretrained weights '{requested}' are not available offline:\n{error}\n"
              "The demo goes on with the encoder randomly initialised (weights=random); "
              "pass --weights PATH to use a local checkpoint.\n")
        return "random"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--msd", type=Path, default=Path(os.environ.get("nnFM_DEMO_DATA", DEFAULT_MSD)),
                        help="MSD Task04_Hippocampus folder (default: ../shared/data/Task04_Hippocampus)")
    parser.add_argument("--workdir", type=Path, default=Path("nnfm_work") / "demo",
                        help="the demo's nnU-Net folders and outputs; emptied at the start of every run")
    parser.add_argument("-e", "--encoder", default=None,
                        help="a registered 3d_fullres encoder (python -m nnfm.registry), planned and trained as "
                             "nnFM_plan_and_preprocess -e ENCODER; default: none, nnFM's default (nnU-Net's own plans "
                             "and network from nnFM's pretrained weights)")
    parser.add_argument("--weights", default=None,
                        help="registry name, checkpoint path, or 'random'; default: the planner's default (without "
                             "-e nnFM's embedded plainconv_unet_synth_nnfm, offline; it saw no real image)")
    parser.add_argument("-tr", "--trainer", default=None,
                        help="trainer (default: what nnFM_plan_and_preprocess names: nnFMTrainer_nnUNetPlans, or the "
                             "encoder's)")
    parser.add_argument("--train-cases", type=int, default=TRAIN_CASES,
                        help="fold 0's training cases (default: %(default)s)")
    parser.add_argument("--val-cases", type=int, default=VAL_CASES,
                        help="fold 0's validation cases (nnU-Net's final validation; few keep the demo short; "
                             "default: %(default)s)")
    parser.add_argument("--test-cases", type=int, default=TEST_CASES,
                        help="held-back cases, never seen in training (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=BUDGET.epochs, help="default: %(default)s")
    parser.add_argument("--iterations", type=int, default=BUDGET.iterations,
                        help="training iterations per epoch (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=BUDGET.batch_size,
                        help="overrides the planned batch size to fit the CPU budget (0 keeps the plan's; default: "
                             "%(default)s)")
    parser.add_argument("--patch-size", type=int, nargs=3, default=BUDGET.patch_size, metavar=("Z", "Y", "X"),
                        help="overrides the planned patch (multiples of the network's stride) to fit the CPU budget; "
                             "0 0 0 keeps the plan's (on Hippocampus, whose images are about 36 x 51 x 35: 40 56 40 "
                             "in nnU-Net's plans, 48 64 48 with -e anatomix)")
    parser.add_argument("--tta", action="store_true",
                        help="predict the test cases with nnU-Net's test-time mirroring (8 passes per window in 3D; "
                             "off by default to keep the demo within minutes on a CPU)")
    parser.add_argument("--device", default="cpu")
    args = parse_args(parser, argv)

    start = time.time()
    if not (args.msd / "dataset.json").is_file():
        raise SystemExit(f"No MSD dataset at {args.msd.resolve()}: pass --msd /path/to/Task04_Hippocampus.")
    # what the arguments choose, checked before the previous demo's outputs are removed
    plans_name, trainer, default_weights = demo_setup(args.encoder)
    trainer = args.trainer or trainer
    weights = resolve_demo_weights(args.weights or default_weights)
    work = args.workdir.resolve()
    if work.exists():
        shutil.rmtree(work)
    env = dict(os.environ, nnUNet_raw=str(work / "raw"), nnUNet_preprocessed=str(work / "preprocessed"),
               nnUNet_results=str(work / "results"), nnFM_EPOCHS=str(args.epochs),
               nnFM_ITERATIONS=str(args.iterations), nnFM_VAL_ITERATIONS=str(BUDGET.val_iterations),
               nnUNet_compile="0",
               nnUNet_n_proc_DA=env_default("nnUNet_n_proc_DA", "2"),
               # nnU-Net's final validation exports through a pool of 8 spawned processes by default, each importing
               # torch and nnU-Net: about a minute of a 2-core CPU for 4 validation cases
               nnUNet_def_n_proc=env_default("nnUNet_def_n_proc", "1"))
    for name in ("nnFM_WEIGHTS", "nnFM_PATCH_SIZE", "nnFM_BATCH_SIZE"):
        env.pop(name, None)
    shown = {}  # the environment printed so far: each printed command reruns as shown in a fresh shell

    # only the cases the demo uses are converted (nnU-Net's MSD converter on a linked subset); the
    # held-back test cases go to imagesTs / labelsTs and never into the fingerprint, plans or training
    from nnfm.benchmark.data import prepare_msd
    from nnfm.paths import console_script
    print("nnU-Net folders and budget of every command below (export these to rerun one in your shell):")
    print_environment(env, shown)
    raw = prepare_msd(args.msd, DATASET_ID, *case_draw(args.train_cases, args.val_cases, args.test_cases), env, 2,
                      work / "convert.log", verbose=True)
    dataset_name = raw.name
    pool = sorted(p.name[:-len("_0000.nii.gz")] for p in (raw / "imagesTr").glob("*_0000.nii.gz"))
    train, val = pool[:args.train_cases], pool[args.train_cases:]

    run([console_script("nnFM_plan_and_preprocess"), "-d", str(DATASET_ID)] +
        (["-e", args.encoder] if args.encoder else []) + ["-w", weights, "-np", "2"], env, shown)
    preprocessed = work / "preprocessed" / dataset_name
    (preprocessed / "splits_final.json").write_text(json.dumps([{"train": train, "val": val}], indent=1))
    # more, smaller steps learn more within a few CPU minutes than the GPU-sized planned batch and patch; the
    # trainer writes them into the model's plans, so nnUNetv2_predict uses the trained patch
    if args.batch_size:
        env["nnFM_BATCH_SIZE"] = str(args.batch_size)
    if any(args.patch_size):
        env["nnFM_PATCH_SIZE"] = ",".join(map(str, args.patch_size))
    train_start = time.time()
    run([console_script("nnUNetv2_train"), str(DATASET_ID), "3d_fullres", "0", "-tr", trainer,
         "-p", plans_name, "-device", args.device], env, shown)
    train_seconds = time.time() - train_start

    predictions = work / "test_predictions"
    run([console_script("nnUNetv2_predict"), "-i", str(raw / "imagesTs"), "-o", str(predictions), "-d", str(DATASET_ID),
         "-c", "3d_fullres", "-tr", trainer, "-p", plans_name, "-f", "0", "-device", args.device,
         "-npp", "0", "-nps", "0"] + ([] if args.tta else ["--disable_tta"]), env, shown)  # sequential: no workers on 2 cores
    run([console_script("nnUNetv2_evaluate_folder"), str(raw / "labelsTs"), str(predictions),
         "-djfile", str(predictions / "dataset.json"), "-pfile", str(predictions / "plans.json")], env, shown)

    summary = json.loads((predictions / "summary.json").read_text())
    config = json.loads((predictions / "plans.json").read_text())["configurations"]["3d_fullres"]
    labels = json.loads((raw / "dataset.json").read_text())["labels"]
    names = {str(v): k for k, v in labels.items()}
    print("\n==== nnFM demo result (held-back test cases, never used for training) ====")
    print(f"trainer {trainer}, plans {plans_name}, weights: {weights}, budget {args.epochs} epochs x {args.iterations} iterations "
          f"(batch {config['batch_size']}, patch {config['patch_size']}), {len(train)} training cases, "
          f"{len(val)} validation cases, {args.test_cases} test cases, "
          f"test-time mirroring {'on' if args.tta else 'off'}")
    for label, metrics in summary["mean"].items():
        print(f"Dice {names.get(label, label):>10}: {metrics['Dice']:.4f}")
    print(f"Dice       mean: {summary['foreground_mean']['Dice']:.4f}")
    figure = work / "segmentation.png"
    write_segmentation_figure(predictions / "summary.json", raw / "imagesTs", figure, labels)
    print(f"segmentations (worst, median and best test case, reference | prediction): {figure}")
    print(f"predicted label maps (NIfTI, e.g. for ITK-SNAP or 3D Slicer): {predictions}")
    print(f"wall time: {time.time() - start:.0f} s (training {train_seconds:.0f} s); outputs in {work}")


def demo_setup(encoder: str = None) -> tuple:
    """(plans name, trainer, default weights) of what ``nnFM_plan_and_preprocess -d ID [-e ENCODER]`` plans: nnFM's
    default without an encoder (nnU-Net's own plans, tests/test_embedded_weights.py keeps its weights embedded)."""
    from nnfm.registry import get_encoder
    from nnfm_planners.plan_and_preprocess import NNUNET_NETWORK_ENCODER, NNUNET_PLANS, NNUNET_PLANS_TRAINER
    from nnfm.errors import NNFMError
    if encoder is None:
        return NNUNET_PLANS, NNUNET_PLANS_TRAINER, get_encoder(NNUNET_NETWORK_ENCODER).weights
    try:
        entry = get_encoder(encoder)
    except NNFMError as error:
        raise SystemExit(f"--encoder {encoder}: {error}") from None
    if entry.configuration != "3d_fullres":
        raise SystemExit(f"--encoder {encoder}: the demo trains 3d_fullres; {encoder} is a {entry.configuration} "
                         f"encoder (use nnFM_benchmark for it).")
    return entry.plans_name, entry.trainer, entry.weights


def env_default(name: str, default: str) -> str:
    return os.environ.get(name) or default


if __name__ == "__main__":
    main()
