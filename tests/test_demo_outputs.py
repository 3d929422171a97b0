"""What the demo shows a user: the segmentation figure of held-back cases, and printed commands that rerun as shown."""
import os
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pytest

from conftest import HIPPOCAMPUS
from nnfm.demo import shell_environment
from nnfm.errors import WeightsUnavailableError
from nnfm.segmentation_figure import case_dice, pick_cases, write_segmentation_figure

CASES = ["hippocampus_001", "hippocampus_003", "hippocampus_004", "hippocampus_006"]


def _predictions(tmp_path):
    """Real images and reference labels, 'predictions' damaged by known amounts, scored by nnU-Net's evaluator."""
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    images, references, predictions = (tmp_path / "imagesTs", tmp_path / "labelsTs", tmp_path / "pred")
    for folder in (images, references, predictions):
        folder.mkdir()
    for i, case in enumerate(CASES):
        shutil.copy(HIPPOCAMPUS / "imagesTr" / f"{case}.nii.gz", images / f"{case}_0000.nii.gz")
        shutil.copy(HIPPOCAMPUS / "labelsTr" / f"{case}.nii.gz", references / f"{case}.nii.gz")
        label = nib.load(str(references / f"{case}.nii.gz"))
        data = np.asarray(label.dataobj).astype(np.uint8)
        if i == 1:
            data[data == 2] = 0  # posterior missed: mean Dice 0.5
        elif i == 2:
            data[: data.shape[0] // 2] = 0  # half of the volume missed
        elif i == 3:
            data[:] = 0  # nothing found: Dice 0
        nib.save(nib.Nifti1Image(data, label.affine, label.header), str(predictions / f"{case}.nii.gz"))
    compute_metrics_on_folder(str(references), str(predictions), str(predictions / "summary.json"), SimpleITKIO(),
                              ".nii.gz", [1, 2], num_processes=1)
    return images, predictions / "summary.json"


def test_the_figure_shows_the_worst_median_and_best_held_back_case(tmp_path):
    import json

    images, summary = _predictions(tmp_path)
    ranked = case_dice(json.loads(summary.read_text()))
    assert [c[0] for c in ranked][0] == "hippocampus_006" and ranked[0][1] == 0
    assert ranked[-1][0] == "hippocampus_001" and ranked[-1][1] == pytest.approx(1)
    assert [c[0] for c in ranked][1:3] == sorted(CASES[1:3], key=lambda c: dict((r[0], r[1]) for r in ranked)[c])

    out = tmp_path / "figure" / "segmentation.png"
    shown = write_segmentation_figure(summary, images, out, {"background": 0, "Anterior": 1, "Posterior": 2})
    assert [c for c, _ in shown] == [ranked[0][0], ranked[1][0], ranked[-1][0]]
    assert [d for _, d in shown] == [ranked[0][1], ranked[1][1], ranked[-1][1]]
    import matplotlib.image
    pixels = matplotlib.image.imread(out)
    assert pixels.shape[0] > 400 and pixels.shape[1] > 1000
    assert pick_cases(ranked[:2]) == ranked[:2]


def test_a_missing_image_is_named(tmp_path):
    images, summary = _predictions(tmp_path)
    (images / "hippocampus_001_0000.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="hippocampus_001_0000.nii.gz"):
        write_segmentation_figure(summary, images, tmp_path / "x.png")


def test_printed_environment_lines_recreate_the_commands_environment(monkeypatch):
    monkeypatch.setenv("nnFM_WEIGHTS", "some_file.pth")
    monkeypatch.setenv("nnFM_KEEP", "same")
    env = dict(os.environ, nnUNet_raw="/data/with space/raw", nnFM_EPOCHS="30")
    env.pop("nnFM_WEIGHTS")
    shown = {}
    lines = shell_environment(env, shown)
    assert not any("nnFM_KEEP" in line for line in lines)
    assert shell_environment(env, shown) == []  # printed once
    env["nnFM_PATCH_SIZE"] = "32,48,32"
    assert shell_environment(env, shown) == ["export nnFM_PATCH_SIZE=32,48,32"]
    script = "; ".join(shell_environment(env, {}) + ['env -0'])
    out = subprocess.run(["bash", "-c", script], env=dict(os.environ), capture_output=True, text=True, check=True)
    rerun = dict(item.split("=", 1) for item in out.stdout.split("\0") if "=" in item)
    for name in ("nnUNet_raw", "nnFM_EPOCHS", "nnFM_PATCH_SIZE", "nnFM_KEEP"):
        assert rerun[name] == env[name]
    assert "nnFM_WEIGHTS" not in rerun


def test_the_demo_plans_a_registry_name_as_the_name_and_falls_back_to_random_offline(monkeypatch, tmp_path):
    from nnfm.demo import resolve_demo_weights

    assert resolve_demo_weights("anatomix_synth_nnfm") == "anatomix_synth_nnfm"  # not the installed file's path
    mine = tmp_path / "mine.pth"
    mine.write_bytes(b"x")
    assert resolve_demo_weights(str(mine)) == str(mine)
    monkeypatch.setenv("nnFM_weights_cache", str(tmp_path / "empty_cache"))

    def offline(entry):
        raise WeightsUnavailableError(f"{entry.name}: no network")

    monkeypatch.setattr("nnfm.weights.loading.download_entry", offline)
    assert resolve_demo_weights("anatomix") == "random"
    assert resolve_demo_weights("Random") == "random"


@pytest.mark.e2e
def test_the_demo_runs_nnfms_default_end_to_end_and_draws_the_figure(nnunet_env, tmp_path):
    """README command 1 at a tiny budget: nnU-Net's converter, nnFM_plan_and_preprocess (nnU-Net's own plans),
    nnUNetv2_train -tr nnFMTrainer_nnUNetPlans from the embedded weights, nnUNetv2_predict, evaluation, figure."""
    from conftest import run_cli
    work = tmp_path / "demo"
    env = {k: v for k, v in nnunet_env.items()  # the demo sets its own nnU-Net folders
           if k not in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    result = run_cli(["nnFM_demo", "--msd", HIPPOCAMPUS, "--workdir", work, "--train-cases", 3, "--val-cases", 1,
                      "--test-cases", 2, "--epochs", 1, "--iterations", 2], env)
    out = result.stdout
    assert "$ " in out and "-tr nnFMTrainer_nnUNetPlans -p nnUNetPlans" in out
    assert "trainer nnFMTrainer_nnUNetPlans, plans nnUNetPlans, weights: plainconv_unet_synth_nnfm" in out
    assert "Dice       mean:" in out and (work / "segmentation.png").stat().st_size > 10_000
    assert len(list((work / "test_predictions").glob("*.nii.gz"))) == 2


@pytest.mark.parametrize("encoder, message", [("no_such_encoder", "--encoder no_such_encoder: Unknown encoder"),
                                              ("dinov3_vitb16", "the demo trains 3d_fullres")])
def test_a_wrong_encoder_stops_the_demo_before_the_last_demos_outputs_are_removed(encoder, message, tmp_path):
    """Before, the work folder was emptied and the dataset converted (minutes) before -e was looked at, and an
    unknown name ended in a traceback."""
    from nnfm.demo import main

    work = tmp_path / "demo"
    work.mkdir()
    (work / "segmentation.png").write_bytes(b"the last demo's figure")
    with pytest.raises(SystemExit, match=message):
        main(["--msd", str(HIPPOCAMPUS), "--workdir", str(work), "-e", encoder])
    assert (work / "segmentation.png").read_bytes() == b"the last demo's figure"
