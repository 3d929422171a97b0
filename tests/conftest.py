"""Shared fixtures: nnU-Net folders, one small real Hippocampus dataset, one trained model, fake checkpoints.

Real data comes from ../shared (never copied into the project): a handful of MSD Hippocampus cases are
linked into a temporary MSD folder and converted once per session with nnU-Net's own converter; each
encoder's plans are made the first time a test asks for them (``plan_hippocampus``). Tests that need
these fixtures run nnU-Net's command-line tools and are marked ``e2e`` automatically.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
HIPPOCAMPUS = SHARED / "data" / "Task04_Hippocampus"
LAYOUTS = SHARED / "checkpoint_layouts"
BIN = Path(sys.executable).parent
DATASET_ID = 991
# 6 cases in two folds (fold 0 validates on the last, fold 1 on the first) and 2 held back for prediction;
# one validation case per fold: nnU-Net's final validation (8 mirrored passes per case) is most of a short training
N_FOLDED, N_TEST = 6, 2
# fixtures that run nnU-Net's CLIs (conversion, planning, training): a test using one is marked e2e
E2E_FIXTURES = {"hippocampus_converted"}
# nnUNetv2_predict runs with -npp 0 -nps 0 (nnU-Net's sequential path) in most tests: every spawned worker of the
# default path imports torch and nnU-Net again (about 9 s of CPU each); test_pipeline keeps the default path
# under pytest-xdist (scripts/test.sh: one worker per core, a test file per worker) every process keeps to one
# torch thread, so that the workers share the cores instead of oversubscribing them
THREADS = "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2"
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
# nnFM's networks otherwise re-choose their threads from the CPU share (nnfm/training/cpu_threads.py): under xdist
# the other worker looks like a busy process, and a changing thread count changes float summation order, which the
# exact-resume tests see. Fixed here (and in the CLIs the tests start); tests/test_cpu_threads.py tests the choice.
os.environ.setdefault("nnFM_CPU_THREADS", THREADS)


def pytest_collection_modifyitems(items):
    for item in items:
        if E2E_FIXTURES & set(item.fixturenames) and not item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.e2e)


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: runs nnU-Net CLIs / training subprocesses (slow; deselect with -m 'not e2e')")


def tool(name: str) -> str:
    return str(BIN / name) if (BIN / name).exists() else name


def run_cli(args: list, env: dict, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    result = subprocess.run([tool(args[0])] + [str(a) for a in args[1:]], env=env, capture_output=True, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{args[0]} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


# tensors larger than this (DrasCLR's MoCo queue: 128 x 4096 x 581 = 1.2 GB) are one random value broadcast to the
# exact shape (stride 0): torch.save writes a 1-element storage, torch.load restores the full shape
HUGE_ELEMENTS = 1 << 26


def layout_keys(layout: dict) -> dict:
    """A layout's ``keys`` as {key: {shape, dtype}}: older layouts store a dict, newer ones a list of
    {key, shape, dtype} entries in state-dict order."""
    keys = layout["keys"]
    return keys if isinstance(keys, dict) else {entry["key"]: entry for entry in keys}


def random_state_dict_from_layout(layout_file: Path, seed: int = 0) -> dict:
    """Random tensors with the exact keys, shapes and dtypes of a published checkpoint."""
    generator = torch.Generator().manual_seed(seed)
    layout = layout_keys(json.loads(Path(layout_file).read_text()))
    state = {}
    for key, spec in layout.items():
        dtype = getattr(torch, spec["dtype"])
        if math.prod(spec["shape"]) > HUGE_ELEMENTS:
            state[key] = torch.randn((), generator=generator).to(dtype).expand(spec["shape"])
        elif dtype.is_floating_point:
            state[key] = torch.randn(spec["shape"], generator=generator).to(dtype) * 0.05
        else:
            state[key] = torch.zeros(spec["shape"], dtype=dtype)
    for key in state:  # keep batch-norm variances positive, as in any real checkpoint
        if key.endswith("running_var"):
            state[key] = state[key].abs() + 1
    return state


def published_checkpoint_from_layout(layout_file: Path, seed: int = 0):
    """A random checkpoint as its authors' code saves it: the layout's keys, inside its container dict, with the
    invariants real files have (DINOv3's masked k-bias is zero, as ``bias_mask`` says)."""
    layout = json.loads(Path(layout_file).read_text())
    state = random_state_dict_from_layout(layout_file, seed)
    for key in [k for k in state if k.endswith("qkv.bias_mask")]:
        third = state[key].shape[0] // 3
        state[key] = torch.cat([torch.ones(third), torch.zeros(third), torch.ones(third)])
        state[key[:-len("_mask")]][third:2 * third] = 0
    # dynamic-network-architectures' ConvDropoutNormReLU holds its conv and norm twice (``conv`` / ``all_modules.0``,
    # ``norm`` / ``all_modules.1``): one tensor under two keys, equal in every real file
    for key in state:
        for alias, name in ((".all_modules.0.", ".conv."), (".all_modules.1.", ".norm.")):
            if alias in key and key.replace(alias, name) in state:
                state[key] = state[key.replace(alias, name)]
    container = layout.get("container_key")
    return {container: state} if container else state


def write_preprocessed_cases(folder: Path, n_cases: int, label: int) -> None:
    """The first n_cases Hippocampus images, z-scored, in nnU-Net's preprocessed layout (blosc2), in-process.

    For the pretraining engines' own tests: they read a preprocessed folder and nothing else, so they need
    no nnU-Net command (and stay in the fast loop); the labels are a constant ``label``.
    """
    import numpy as np
    import SimpleITK as sitk
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

    folder.mkdir(parents=True)
    for image in sorted((HIPPOCAMPUS / "imagesTr").glob("hippocampus_*.nii.gz"))[:n_cases]:
        volume = sitk.GetArrayFromImage(sitk.ReadImage(str(image))).astype(np.float32)
        volume = (volume - volume.mean()) / (volume.std() + 1e-8)     # nnU-Net's z-score for MRI
        seg = np.full((1, *volume.shape), label, np.int8)
        nnUNetDatasetBlosc2.save_case(volume[None], seg, {"spacing": [1, 1, 1]},
                                      str(folder / image.name[:-len(".nii.gz")]), chunks=(1, *volume.shape),
                                      blocks=(1, *volume.shape), chunks_seg=(1, *volume.shape),
                                      blocks_seg=(1, *volume.shape))


@pytest.fixture(scope="session")
def anatomix_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "anatomix.pth"
    torch.save(random_state_dict_from_layout(LAYOUTS / "anatomix_unet.json"), path)
    return path


@pytest.fixture(scope="session")
def nnunet_env(tmp_path_factory) -> dict:
    """Environment for nnU-Net CLIs: private folders, nnFM trainers registered, CPU-sized budgets."""
    from nnfm_trainers import TRAINERS_DIR

    root = tmp_path_factory.mktemp("nnunet")
    env = dict(os.environ)
    # nnUNet_def_n_proc: nnU-Net's validation, evaluation and ensembling pools spawn 8 processes by default,
    # each importing torch and nnU-Net again: on a 2-core machine that was half of every short training
    env.update(nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "preprocessed"),
               nnUNet_results=str(root / "results"), nnUNet_extTrainer=TRAINERS_DIR, nnUNet_n_proc_DA="1",
               nnUNet_def_n_proc="1", nnUNet_compile="0", nnFM_EPOCHS="1", nnFM_ITERATIONS="2",
               nnFM_VAL_ITERATIONS="1", OMP_NUM_THREADS=THREADS)
    env.pop("nnFM_WEIGHTS", None)
    for name in ("raw", "preprocessed", "results"):
        (root / name).mkdir()
    return env


def _link_msd_subset(source: Path, target: Path, cases: list) -> None:
    for sub in ("imagesTr", "labelsTr"):
        (target / sub).mkdir(parents=True)
        for case in cases:
            (target / sub / f"{case}.nii.gz").symlink_to(source / sub / f"{case}.nii.gz")
    (target / "imagesTs").mkdir()
    meta = json.loads((source / "dataset.json").read_text())
    meta["training"] = [t for t in meta["training"] if Path(t["image"]).name[:-len(".nii.gz")] in cases]
    meta["numTraining"] = len(meta["training"])
    meta["test"], meta["numTest"] = [], 0
    (target / "dataset.json").write_text(json.dumps(meta, indent=1))


@pytest.fixture(scope="session")
def hippocampus_converted(nnunet_env, tmp_path_factory) -> dict:
    """A few real Hippocampus cases converted by nnU-Net's MSD converter, with a fixed two-fold split."""
    if not (HIPPOCAMPUS / "dataset.json").is_file():
        pytest.fail(f"MSD Hippocampus not found at {HIPPOCAMPUS}; tests need ../shared beside the repository")
    cases = sorted(p.name[:-len(".nii.gz")] for p in (HIPPOCAMPUS / "labelsTr").glob("*.nii.gz"))
    cases = cases[:N_FOLDED + N_TEST]
    msd = tmp_path_factory.mktemp("msd") / "Task04_Hippocampus"
    _link_msd_subset(HIPPOCAMPUS, msd, cases)
    run_cli(["nnUNetv2_convert_MSD_dataset", "-i", msd, "-overwrite_id", DATASET_ID, "-np", "1"], nnunet_env)
    name = f"Dataset{DATASET_ID:03d}_Hippocampus"
    folded, test = cases[:N_FOLDED], cases[N_FOLDED:]
    folds = [{"train": folded[:-1], "val": folded[-1:]}, {"train": folded[1:], "val": folded[:1]}]
    preprocessed = Path(nnunet_env["nnUNet_preprocessed"]) / name
    preprocessed.mkdir(exist_ok=True)  # planning keeps an existing split file
    (preprocessed / "splits_final.json").write_text(json.dumps(folds))
    return {"id": DATASET_ID, "name": name, "raw": Path(nnunet_env["nnUNet_raw"]) / name,
            "preprocessed": preprocessed, "results": Path(nnunet_env["nnUNet_results"]) / name,
            "train": folds[0]["train"], "val": folds[0]["val"], "folds": folds, "test": test}


@pytest.fixture(scope="session")
def plan_hippocampus(hippocampus_converted, nnunet_env):
    """plan(encoder, *options) -> the plans: nnFM_plan_and_preprocess -e ENCODER, run the first time it is asked."""
    done = {}

    def plan(encoder: str, *options) -> dict:
        key = (encoder, *map(str, options))
        if key not in done:
            run_cli(["nnFM_plan_and_preprocess", "-d", DATASET_ID, "-e", encoder, "-np", 1, *options], nnunet_env)
            done[key] = True
        return json.loads((hippocampus_converted["preprocessed"] / f"nnFMPlans_{encoder}.json").read_text())
    return plan


@pytest.fixture(scope="session")
def hippocampus(hippocampus_converted, plan_hippocampus) -> dict:
    """The Hippocampus subset planned and preprocessed for the default encoder (anatomix)."""
    return dict(hippocampus_converted, plans=plan_hippocampus("anatomix"))


@pytest.fixture(scope="session")
def trained_anatomix(hippocampus, nnunet_env, anatomix_checkpoint, tmp_path_factory) -> dict:
    """nnFMTrainer, fold 0, from the anatomix-layout checkpoint: the one trained model that the predict,
    evaluate, resume, ensemble and provenance tests share. --npz: find_best_configuration ensembles it."""
    weights = tmp_path_factory.mktemp("trained_weights") / "anatomix_pretrained.pth"
    weights.write_bytes(anatomix_checkpoint.read_bytes())  # its own file: the resume test hides it for a while
    result = run_cli(["nnUNetv2_train", DATASET_ID, "3d_fullres", 0, "-tr", "nnFMTrainer", "-p", "nnFMPlans_anatomix",
                      "-device", "cpu", "--npz"], dict(nnunet_env, nnFM_WEIGHTS=str(weights)))
    model = hippocampus["results"] / "nnFMTrainer__nnFMPlans_anatomix__3d_fullres"
    return {"model": model, "fold_0": model / "fold_0", "weights": weights, "stdout": result.stdout}


def trainer_in_process(trainer_class: type, hippocampus: dict, nnunet_env: dict, monkeypatch, results: Path,
                       argv: tuple = (), **env):
    """A trainer built as nnUNetv2_train builds it (fold 0, 3d_fullres, CPU), in this process.

    nnU-Net's folders and the budget come from ``nnunet_env``, results go to ``results`` (never the shared
    results, where the shared model's checkpoints are), ``env`` adds variables (e.g. nnFM_WEIGHTS) and
    ``argv`` the flags nnFM reads from the command line (``-pretrained_weights``).
    """
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnFM_EPOCHS", "nnFM_ITERATIONS", "nnFM_VAL_ITERATIONS"):
        monkeypatch.setenv(key, nnunet_env[key])
    monkeypatch.setenv("nnUNet_results", str(results))
    monkeypatch.delenv("nnFM_WEIGHTS", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "argv", ["nnUNetv2_train", str(hippocampus["id"]), "3d_fullres", "0", "-tr",
                                      trainer_class.__name__, "-p", hippocampus["plans"]["plans_name"], *argv])
    plans = dict(json.loads(json.dumps(hippocampus["plans"])), continue_training=False)  # as run_training passes it
    dataset_json = json.loads((hippocampus["preprocessed"] / "dataset.json").read_text())
    return trainer_class(plans, "3d_fullres", 0, dataset_json, torch.device("cpu"))


def predict_held_back(hippocampus: dict, env: dict, tmp_path: Path, trainer: str, plans_name: str,
                      configuration: str, tta: bool = True) -> Path:
    """nnUNetv2_predict (fold 0, CPU, -npp 0 -nps 0; without mirroring unless ``tta``) of the held-back cases;
    checks one prediction per case, of its image's size, with Hippocampus' labels (0, 1, 2) only. Returns the
    predictions folder."""
    import numpy as np
    import SimpleITK as sitk

    images, predictions = tmp_path / "images", tmp_path / "predictions"
    images.mkdir()
    for case in hippocampus["test"]:
        (images / f"{case}_0000.nii.gz").symlink_to(hippocampus["raw"] / "imagesTr" / f"{case}_0000.nii.gz")
    run_cli(["nnUNetv2_predict", "-i", images, "-o", predictions, "-d", hippocampus["id"], "-c", configuration,
             "-tr", trainer, "-p", plans_name, "-f", 0, "-device", "cpu", "-npp", 0, "-nps", 0,
             *([] if tta else ["--disable_tta"])], env)
    assert sorted(p.name for p in predictions.glob("*.nii.gz")) == sorted(f"{c}.nii.gz" for c in hippocampus["test"])
    for case in hippocampus["test"]:
        predicted = sitk.ReadImage(str(predictions / f"{case}.nii.gz"))
        assert predicted.GetSize() == sitk.ReadImage(str(images / f"{case}_0000.nii.gz")).GetSize()
        assert set(np.unique(sitk.GetArrayFromImage(predicted)).tolist()) <= {0, 1, 2}
    return predictions


def train_and_predict(hippocampus: dict, env: dict, tmp_path: Path, trainer: str, plans_name: str,
                      configuration: str = "3d_fullres", weights=None, predict: bool = True, tta: bool = True) -> dict:
    """What every encoder's end-to-end test does: nnUNetv2_train fold 0 on the CPU with ``env``'s budget
    (``nnunet_env``: one epoch of 2 iterations), ``weights`` (if any) as nnFM_WEIGHTS, then (``predict``)
    :func:`predict_held_back` (``tta``) with ``env``, which names no weights: the trained checkpoint holds them.

    Returns {fold, provenance (nnfm_pretrained.json), checkpoint (checkpoint_final.pth, loaded), log (the
    training logs' text), predictions (folder, or None)}: each test adds what is specific to its encoder.
    """
    train_env = dict(env, nnFM_WEIGHTS=str(weights)) if weights is not None else env
    run_cli(["nnUNetv2_train", hippocampus["id"], configuration, 0, "-tr", trainer, "-p", plans_name, "-device", "cpu"],
            train_env)
    fold = hippocampus["results"] / f"{trainer}__{plans_name}__{configuration}" / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file()
    return {"fold": fold, "provenance": json.loads((fold / "nnfm_pretrained.json").read_text()),
            "checkpoint": torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False),
            "log": "".join(p.read_text() for p in sorted(fold.glob("training_log_*.txt"))),
            "predictions": predict_held_back(hippocampus, env, tmp_path, trainer, plans_name, configuration, tta)
            if predict else None}
