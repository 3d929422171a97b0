"""Shared fixtures: nnU-Net folders, a small real Hippocampus dataset planned by nnFM, fake checkpoints.

Real data comes from ../shared (never copied into the project): a handful of MSD Hippocampus
cases are linked into a temporary MSD folder and converted with nnU-Net's own converter.
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
N_TRAIN, N_VAL, N_TEST = 6, 2, 2


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
    env.update(nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "preprocessed"),
               nnUNet_results=str(root / "results"), nnUNet_extTrainer=TRAINERS_DIR, nnUNet_n_proc_DA="1",
               nnUNet_compile="0", nnFM_EPOCHS="1", nnFM_ITERATIONS="2", nnFM_VAL_ITERATIONS="1",
               OMP_NUM_THREADS="2")
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
def hippocampus(nnunet_env, tmp_path_factory) -> dict:
    """A few real Hippocampus cases, converted, planned and preprocessed by nnFM, with a fixed split."""
    if not (HIPPOCAMPUS / "dataset.json").is_file():
        pytest.fail(f"MSD Hippocampus not found at {HIPPOCAMPUS}; tests need ../shared beside the repository")
    cases = sorted(p.name[:-len(".nii.gz")] for p in (HIPPOCAMPUS / "labelsTr").glob("*.nii.gz"))
    cases = cases[:N_TRAIN + N_VAL + N_TEST]
    msd = tmp_path_factory.mktemp("msd") / "Task04_Hippocampus"
    _link_msd_subset(HIPPOCAMPUS, msd, cases)
    run_cli(["nnUNetv2_convert_MSD_dataset", "-i", msd, "-overwrite_id", DATASET_ID, "-np", "1"], nnunet_env)
    run_cli(["nnFM_plan_and_preprocess", "-d", DATASET_ID, "-np", "1"], nnunet_env)
    name = f"Dataset{DATASET_ID:03d}_Hippocampus"
    train, val, test = cases[:N_TRAIN], cases[N_TRAIN:N_TRAIN + N_VAL], cases[N_TRAIN + N_VAL:]
    preprocessed = Path(nnunet_env["nnUNet_preprocessed"]) / name
    (preprocessed / "splits_final.json").write_text(json.dumps([{"train": train, "val": val}]))
    raw = Path(nnunet_env["nnUNet_raw"]) / name
    return {"id": DATASET_ID, "name": name, "raw": raw, "preprocessed": preprocessed,
            "results": Path(nnunet_env["nnUNet_results"]) / name, "train": train, "val": val, "test": test,
            "plans": json.loads((preprocessed / "nnFMPlans_anatomix.json").read_text())}
