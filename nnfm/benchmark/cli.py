"""``nnFM_benchmark``: nnFM trainers vs nnU-Net's own, on nnU-Net datasets, with few-shot folds.

For every dataset x configuration x fold x labelled-case count (x draw seed) x trainer: plan and
preprocess where needed, train with nnU-Net (nnUNetv2_train through a memory-measuring wrapper),
validate, and optionally predict and evaluate a held-out test set with nnUNetv2_predict and
nnUNetv2_evaluate_folder. Rerunning the same command skips finished runs and continues killed
ones. Results (results.csv, per_case_dice.csv, results.md, plots/) go to --output.

Example (CPU, MSD Hippocampus, the few-shot protocol of documentation/benchmarks.md: 40 held-out test cases,
nnFM's default against nnU-Net's own trainer, CPU-sized patch and batch for both):
  nnFM_benchmark -d 904 --msd ../shared/data/Task04_Hippocampus --test-cases 40 --shots 1 3 10 --seeds 0 1 2 \\
      -tr nnUNetTrainer nnFMTrainer_nnUNetPlans --profile 20x20 --patch-size 32 48 32 --batch-size 2 \\
      --val-cases 4 --disable-tta -device cpu
An encoder is compared by adding its trainer and _scratch twin (-tr ... nnFMTrainer nnFMTrainer_scratch); -w applies
to every nnFM trainer of the run, so compare weights of different networks in separate runs.
"""
import argparse
import os
import sys
from pathlib import Path

from nnfm.benchmark.profiles import PROFILES, resolve_profile
from nnfm.benchmark.trainer_table import trainer_table
from nnfm.flags import parse_args as parse_in_dialect
from nnfm.paths import NNUNET_FOLDERS, missing_nnunet_paths

# nnU-Net's own trainer and nnFM's default (nnU-Net's network from nnFM's weights): the initialisation is the only
# difference between them (issue 27); add an encoder's trainer and its _scratch twin to compare encoders
DEFAULT_TRAINERS = ["nnUNetTrainer", "nnFMTrainer_nnUNetPlans"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="nnFM_benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("-d", "--datasets", type=int, nargs="+", required=True, help="nnU-Net dataset ids")
    data.add_argument("--msd", type=Path, nargs="+",
                      help="MSD task folders, one per dataset id, converted as that id (nnUNetv2_convert_MSD_dataset)")
    data.add_argument("--test-cases", type=int, default=0,
                      help="with --msd: hold this many cases out of training entirely and evaluate on them")
    data.add_argument("--max-cases", type=int, default=None,
                      help="with --msd: use only this many cases (test cases included), drawn reproducibly")
    data.add_argument("--case-seed", type=int, default=0, help="seed of the --test-cases/--max-cases draw")
    data.add_argument("--test-images", type=Path, help="labelled test set of an existing dataset: images folder")
    data.add_argument("--test-labels", type=Path, help="... and its labels folder")
    data.add_argument("--no-test", action="store_true", help="do not predict a test set even when there is one")
    runs = parser.add_argument_group("runs")
    runs.add_argument("-tr", "--trainers", nargs="+", default=DEFAULT_TRAINERS, choices=sorted(trainer_table()),
                      metavar="TRAINER", help=f"any of {', '.join(sorted(trainer_table()))} (default: {DEFAULT_TRAINERS})")
    runs.add_argument("-c", "--configurations", nargs="+", default=["3d_fullres"])
    runs.add_argument("-f", "--folds", type=int, nargs="+", default=[0], help="cross-validation folds")
    runs.add_argument("--shots", nargs="+", default=["all"],
                      help="labelled training cases per fold: numbers and/or 'all' (default: all)")
    runs.add_argument("--seeds", type=int, nargs="+", default=[0], help="few-shot draws per number of cases")
    runs.add_argument("--profile",
                      help=f"budget: {', '.join(f'{k} ({b.epochs}x{b.iterations})' for k, b in PROFILES.items())}, "
                           "or EPOCHSxITERATIONS (required unless --report-only)")
    runs.add_argument("--patch-size", type=int, nargs="+", default=None, metavar="N",
                      help="train every row at this patch (nnU-Net axis order) instead of the planned one, e.g. "
                           "32 48 32 on a CPU; the profile's name records it")
    runs.add_argument("--batch-size", type=int, default=None, help="train every row at this batch size")
    runs.add_argument("--val-cases", type=int, default=None,
                      help="nnU-Net's final validation on the first N cases of each fold only (its 8 mirrored "
                           "sliding-window passes per case are minutes per run on a CPU)")
    runs.add_argument("--disable-tta", action="store_true",
                      help="predict the test set without mirroring (nnUNetv2_predict --disable_tta)")
    runs.add_argument("-w", "--weights", default=None,
                      help="pretrained weights for the nnFM trainers (registry name, path or 'random'); "
                           "default: nnFM_WEIGHTS, else the plans' or the trainer's default weights")
    runs.add_argument("-device", default=None, choices=["cpu", "cuda", "mps"], help="default: cuda if available")
    runs.add_argument("-np", type=int, default=max(1, min(4, os.cpu_count() or 1)),
                      help="processes for conversion, preprocessing, prediction and evaluation (1: nnUNetv2_predict runs "
                           "sequentially, -npp 0 -nps 0)")
    out = parser.add_argument_group("output")
    out.add_argument("-o", "--output", type=Path, default=None,
                     help="benchmark folder (default: $nnUNet_results/nnFM_benchmark); trained models go to "
                          "OUTPUT/PROFILE/ in nnU-Net's layout")
    out.add_argument("--workdir", type=Path, default=None,
                     help="use WORKDIR/nnUNet_raw, _preprocessed and _results instead of the environment's")
    out.add_argument("--report-only", action="store_true", help="only rebuild tables and plots from finished runs")
    out.add_argument("--add-results", type=Path, nargs="+", default=[], metavar="CSV",
                     help="also report the runs of earlier benchmarks (their results.csv; per-case Dice from the "
                          "per_case_dice.csv beside it), e.g. from another session or machine; of two records of one "
                          "run the first is kept (runs under --output first, then the files in the order given), "
                          "except that a finished run replaces an unfinished one")
    out.add_argument("--reference", default=None, metavar="TRAINER",
                     help="trainer (as the tables name it) whose run on the same draw each row is compared to in "
                          "results.md's per-draw table (default: nnUNetTrainer, nnU-Net's own trainer)")
    out.add_argument("-v", "--verbose", action="store_true", help="show nnU-Net's output (always in the logs)")
    args = parse_in_dialect(parser, argv)
    if args.msd and len(args.msd) != len(args.datasets):
        parser.error("give one --msd folder per dataset id")
    if (args.test_images or args.test_labels) and len(args.datasets) != 1:
        parser.error("--test-images/--test-labels go with a single dataset")
    if (args.test_cases or args.max_cases) and not args.msd:
        parser.error("--test-cases and --max-cases need --msd")
    if not args.profile and not args.report_only:
        parser.error("--profile is required")
    missing = [str(p) for p in args.add_results if not p.is_file()]
    if missing:
        parser.error(f"--add-results: no file {', '.join(missing)} (give the results.csv of an earlier benchmark)")
    try:
        args.budget = resolve_profile(args.profile, args.patch_size, args.batch_size, args.val_cases,
                                     not args.disable_tta) if args.profile else None
        args.shots = [parse_shots(s) for s in args.shots]
    except ValueError as error:
        parser.error(str(error))
    return args


def parse_shots(value: str):
    if value == "all":
        return "all"
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise ValueError(f"--shots takes positive numbers or 'all', not {value!r}")


def nnunet_folders(args) -> dict:
    """The environment with nnUNet_raw/_preprocessed/_results set (from --workdir, or as exported)."""
    env = dict(os.environ)
    if args.workdir:
        for name in NNUNET_FOLDERS:
            env[name] = str((args.workdir / name).resolve())
    missing = missing_nnunet_paths(env=env)
    if missing:
        raise SystemExit(f"Set {', '.join(missing)} (export them, or pass --workdir DIR).")
    for name in NNUNET_FOLDERS:
        Path(env[name]).mkdir(parents=True, exist_ok=True)
    return env


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.report_only and args.output:  # only reads results: needs no nnU-Net folders
        output = args.output.resolve()
    else:
        env = nnunet_folders(args)
        output = (args.output or Path(env["nnUNet_results"]) / "nnFM_benchmark").resolve()
    output.mkdir(parents=True, exist_ok=True)
    failures = []
    if not args.report_only:
        from nnfm.benchmark.orchestration import run_benchmark
        failures = run_benchmark(args, env, output)
    report(output, args.add_results, args.reference)
    if failures:
        print(f"\n{len(failures)} run(s) failed; rerun the same command to retry them:")
        for failure in failures:
            print(f"  {failure}")
        sys.exit(1)


def report(output: Path, add_results=(), reference=None) -> None:
    """results.csv, per_case_dice.csv, results.md and plots/ for the runs under output and the imported ones."""
    from nnfm.benchmark.imported_results import NotResultsFile, merge, records_from_csv
    from nnfm.benchmark.plots import write_plots
    from nnfm.benchmark.results import DEFAULT_REFERENCE, collect_records, write_csv, write_markdown, write_per_case_csv

    records = collect_records(output)
    try:
        imported = [r for path in add_results for r in records_from_csv(path)]
    except NotResultsFile as error:
        raise SystemExit(str(error))
    records, superseded = merge(records, imported)
    for record in superseded:
        print(f"  not reported: {record['trainer']} {record['profile']} N={record['n_train']} seed {record['seed']} "
              f"({record['status']}) of {record.get('imported_from', output)}: the same run is reported from "
              "another source")
    if not records:
        print(f"No runs under {output} yet.")
        return
    write_csv(records, output / "results.csv")
    write_per_case_csv(records, output / "per_case_dice.csv")
    write_markdown(records, output / "results.md", reference or DEFAULT_REFERENCE)
    plots = write_plots(records, output / "plots")
    print("\n" + (output / "results.md").read_text().split("\n## Runs")[0])
    done = sum(r["status"] == "done" for r in records)
    print(f"{done} of {len(records)} runs done; tables: {output / 'results.csv'}, {output / 'results.md'}; "
          f"{len(plots)} plots in {output / 'plots'}")


if __name__ == "__main__":
    main()
