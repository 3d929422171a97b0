"""The runner's figures from finished-run records (no training): the budget curve appears only where runs of the
same sizing differ in their number of iterations, and plots what the records say."""
from nnfm.benchmark import plots
from nnfm.benchmark.plots import _by_sizing, write_plots


def _record(profile, epochs, trainer, n_train, seed, dice, patch=(32, 48, 32)):
    return dict(status="done", dataset="Dataset904_Hippocampus", configuration="3d_fullres", profile=profile,
                epochs=epochs, iterations_per_epoch=20, patch_size=list(patch), batch_size=2, val_cases=4,
                test_tta=False, trainer=trainer, trainer_class=trainer, n_train=n_train, seed=seed,
                val_dice_mean=dice, test_dice_mean=dice, classes=["Anterior", "Posterior"])


def test_a_budget_curve_only_for_runs_that_differ_in_budget(tmp_path):
    records = [_record(f"{e}x20_p32x48x32_b2_v4_notta", e, t, n, s, 0.1 * e / 20 + 0.01 * s)
               for e in (5, 20) for t in ("nnFMTrainer", "nnFMTrainer_scratch") for n in (1, 3) for s in (0, 1, 2)]
    # another sizing with a single budget: no curve of its own, and not mixed into the first
    records += [_record("20x20_p48x64x48_b2_v4_notta", 20, "nnFMTrainer", 1, 0, 0.5, patch=(48, 64, 48))]
    groups = _by_sizing(records)
    assert sorted(len(g) for g in groups.values()) == [1, 24]
    assert ("Dataset904_Hippocampus", "3d_fullres", "p32x48x32_b2_v4_notta") in groups
    written = write_plots(records, tmp_path)
    curves = [p.name for p in written if p.name.startswith("dice_vs_budget")]
    assert curves == ["dice_vs_budget_Dataset904_Hippocampus_3d_fullres_p32x48x32_b2_v4_notta.png"]
    assert (tmp_path / curves[0]).stat().st_size > 10_000
    # one profile only: no budget curve at all
    single = [r for r in records if r["epochs"] == 20 and r["patch_size"] == [32, 48, 32]]
    assert not [p for p in write_plots(single, tmp_path / "single") if p.name.startswith("dice_vs_budget")]


def test_a_trainer_keeps_its_colour_in_every_panel(tmp_path, monkeypatch):
    # a trainer run only at 3 labelled cases must not shift the colours of the others in that panel
    records = [_record(f"{e}x20_p32x48x32_b2_v4_notta", e, t, n, s, 0.5)
               for e in (5, 20) for t in ("nnFMTrainer", "nnFMTrainer_scratch") for n in (1, 3) for s in (0, 1)]
    records += [_record("20x20_p32x48x32_b2_v4_notta", 20, "nnFMTrainer_Adam", 3, s, 0.6) for s in (0, 1)]
    figures = []
    monkeypatch.setattr(plots, "_save", lambda figure, path: figures.append(figure) or path)
    plots.plot_dice_vs_budget(records, tmp_path / "budget.png")
    plots.plot_dice_vs_labelled(records, tmp_path / "labelled.png")
    for figure in figures:
        colours = {}
        for axis in figure.axes:
            for bars in axis.containers:  # one ErrorbarContainer per line
                colours.setdefault(bars.get_label().split(" (")[0], set()).add(bars.lines[0].get_color())
        assert colours.keys() >= {"nnFMTrainer", "nnFMTrainer_scratch"}
        assert all(len(c) == 1 for c in colours.values()), colours
        assert len(set.union(*colours.values())) == len(colours)
