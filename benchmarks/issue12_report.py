"""Issue 12's table and figures (documentation/benchmarks.md) from the committed per-run CSVs.

    python benchmarks/issue12_report.py documentation/figures/issue12_results_*.csv \
        documentation/figures/issue11_sgd_mae_results_2026-12-02.csv --figures documentation/figures

Prints the markdown table (one row per budget, labelled cases and initialisation: test Dice per draw, mean +- sd,
paired difference to random initialisation on the same draw) and writes issue12_dice_vs_labelled_20x20.png and
issue12_dice_vs_budget.png. Unfinished runs are left out.

The synthetic-data rows of 2026-12-02 fine-tuned the fp32 export of the synthetic run
(``synth32/anatomix_synth.pth``); later rows fine-tuned its shipped fp16 copy (``-w anatomix_synth_nnfm``, max.
relative rounding 4.9e-4). ``nnFM_benchmark``'s own report keeps runs from different files apart; here they are
one initialisation, and the table's initialisation column says which file each budget's runs used.
"""
import argparse
from pathlib import Path

from nnfm.benchmark.draws import finished_runs, iterations, mean_sd, paired, per_draw
from nnfm.benchmark.plots import plot_dice_vs_budget, plot_dice_vs_labelled
from nnfm.weights.registry import get_weights_entry

SYNTH_FP32_SHA256 = "17e0438662d3a0ac7dac280f60ad19de38e8bd482e2ba5cc09f942e73587f37c"  # synth32/anatomix_synth.pth
SHIPPED = "anatomix_synth_nnfm"
LABELS = {  # (trainer class, weights stem) -> initialisation as the table names it
    ("nnFMTrainer_scratch", None): "random init (`nnFMTrainer_scratch`)",
    ("nnFMTrainer", SHIPPED): f"synthetic (`nnFMTrainer -w {SHIPPED}`)",
    ("nnFMTrainer", "anatomix_mae_hippocampus"): "MAE on Hippocampus images (`nnFMTrainer -w anatomix_mae_hippocampus`)",
    ("nnUNetTrainer_nnFMBudget", None): "nnU-Net (`nnUNetTrainer`, its own plans and recipe)",
    ("nnFMTrainer_SGD", None): "random init, nnU-Net's SGD recipe (`nnFMTrainer_SGD -w random`)",
    ("nnFMTrainer_SGD", "anatomix_mae_hippocampus"): "MAE, nnU-Net's SGD recipe (`nnFMTrainer_SGD`)",
}
ORDER = list(LABELS.values())
REFERENCE = LABELS[("nnFMTrainer_scratch", None)]


def load(paths: list) -> list:
    done = finished_runs(paths)
    shipped_sha = get_weights_entry(SHIPPED).sha256
    for r in done:
        r["weights_file"] = Path(str(r.get("weights") or "random")).name
        if r.get("weights_sha256") == SYNTH_FP32_SHA256:  # the fp32 export: the same initialisation as shipped
            r["weights"], r["weights_sha256"] = SHIPPED, shipped_sha
    return done


def initialisation(record: dict) -> str:
    weights = record.get("weights")
    stem = None if weights in (None, "random") else Path(str(weights)).name.split(".")[0]
    key = (record["trainer_class"], stem)
    if key not in LABELS:
        raise SystemExit(f"No table label for trainer {key[0]} with weights {weights}: add it to LABELS.")
    return LABELS[key]


def table(done: list) -> list:
    groups = {}
    for r in done:
        groups.setdefault((iterations(r), int(r["n_train"]), initialisation(r)), []).append(r)
    reference = {(k[0], k[1], r["seed"]): r["test_dice_mean"] for k, g in groups.items() if k[2] == REFERENCE
                 for r in g}
    lines = ["| fine-tuning iterations | labelled cases | initialisation | test Dice seed 0 / 1 / 2 | mean ± sd | "
             "− random init, per draw (mean) |", "|---|---|---|---|---|---|"]
    for (its, shots, init), group in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], ORDER.index(kv[0][2]))):
        by_seed = {r["seed"]: r["test_dice_mean"] for r in group}
        seeds = sorted(by_seed)
        diffs = [] if init == REFERENCE else [by_seed[s] - reference[(its, shots, s)] for s in seeds
                                              if (its, shots, s) in reference]
        files = sorted({r["weights_file"] for r in group} - {"random"})
        note = f" [{', '.join(files)}]" if init.startswith("synthetic") else ""
        lines.append(f"| {its} | {shots} | {init}{note} | {per_draw(by_seed)} | "
                     f"{mean_sd([by_seed[s] for s in seeds])} | {paired(diffs)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="nnFM_benchmark results.csv files")
    parser.add_argument("--figures", type=Path, help="folder for the two figures (default: none written)")
    args = parser.parse_args()
    done = load(args.results)
    print("\n".join(table(done)))
    if args.figures:
        args.figures.mkdir(parents=True, exist_ok=True)
        anatomix_sizing = [r for r in done if r.get("patch_size") == "32x48x32" and int(r["batch_size"]) == 2]
        at_400 = [r for r in anatomix_sizing if r["profile"].startswith("20x20")]
        plot_dice_vs_labelled(at_400, args.figures / "issue12_dice_vs_labelled_20x20.png")
        few = [r for r in anatomix_sizing if int(r["n_train"]) in (1, 3)]
        plot_dice_vs_budget(few, args.figures / "issue12_dice_vs_budget.png")


if __name__ == "__main__":
    main()
