"""Few-shot folds: N labelled cases drawn from a base fold's training cases, its validation cases unchanged.

nnU-Net trains fold F from entry F of splits_final.json, whatever their number. Each few-shot fold
is appended there (existing entries, folds 0-4 included, are never changed) and recorded in
splits_fewshot.json (index -> base fold, N, seed, cases), so a rerun finds the same index.
Draws are nested: with the same seed, the N=3 cases contain the N=1 case.
"""
import contextlib
import fcntl
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

SPLITS = "splits_final.json"
FEW_SHOT_REGISTRY = "splits_fewshot.json"
NNUNET_SPLIT_SEED = 12345  # nnU-Net's own seed for its 5-fold split


class SplitConflict(RuntimeError):
    pass


@dataclass(frozen=True)
class Fold:
    index: int                 # the fold nnU-Net trains (nnUNetv2_train ... FOLD)
    base_fold: int
    n_train: int
    seed: Optional[int]        # None: the base fold itself (all labelled cases)
    train: tuple
    val: tuple


def ensure_standard_splits(preprocessed: Path, identifiers: list) -> list:
    """splits_final.json as it is, or nnU-Net's own 5-fold split of the identifiers when there is none."""
    path = Path(preprocessed) / SPLITS
    if path.is_file():
        return json.loads(path.read_text())
    from nnunetv2.utilities.crossval_split import generate_crossval_split
    splits = generate_crossval_split(sorted(identifiers), seed=NNUNET_SPLIT_SEED, n_splits=5)
    splits = [{"train": [str(c) for c in s["train"]], "val": [str(c) for c in s["val"]]} for s in splits]
    _write_json(path, splits)
    return splits


def draw_training_cases(train: list, n_train: int, base_fold: int, seed: int) -> list:
    """n_train of the training cases: a seeded shuffle, cut; a larger n keeps every smaller draw's cases."""
    ordered = sorted(train)
    random.Random(f"nnFM few-shot, base fold {base_fold}, seed {seed}").shuffle(ordered)
    return sorted(ordered[:n_train])


def base_fold(preprocessed: Path, fold: int) -> Fold:
    splits = _read_splits(preprocessed)
    if fold >= len(splits):
        raise SplitConflict(f"Fold {fold} is not in {Path(preprocessed) / SPLITS} ({len(splits)} entries).")
    if str(fold) in _read_registry(preprocessed):
        raise SplitConflict(f"Fold {fold} is itself a few-shot fold; use a cross-validation fold as base.")
    entry = splits[fold]
    return Fold(fold, fold, len(entry["train"]), None, tuple(entry["train"]), tuple(entry["val"]))


def few_shot_fold(preprocessed: Path, fold: int, n_train: int, seed: int) -> Fold:
    """The fold index training on n_train cases of base fold `fold`: found in the registry, else appended."""
    base = base_fold(preprocessed, fold)
    if not 1 <= n_train <= base.n_train:
        raise SplitConflict(f"Cannot draw {n_train} of the {base.n_train} training cases of fold {fold}.")
    if n_train == base.n_train:
        return base
    wanted = {"base_fold": fold, "n_train": n_train, "seed": seed}
    with _registry_lock(preprocessed):  # two benchmarks on one workdir append one after the other
        splits, registry = _complete_splits(preprocessed)
        index = next((int(i) for i, e in registry.items() if {k: e[k] for k in wanted} == wanted), None)
        if index is None:
            index = len(splits)
            train = draw_training_cases(list(base.train), n_train, fold, seed)
            registry[str(index)] = dict(wanted, train=train, val=list(base.val))
            # the registry first: a run killed in between finds its entry and completes splits_final.json
            _write_json(Path(preprocessed) / FEW_SHOT_REGISTRY, registry)
            splits, registry = _complete_splits(preprocessed)
    entry = registry.get(str(index), {})
    if {k: entry.get(k) for k in wanted} != wanted:  # another process's draw at this index: never train on it
        raise SplitConflict(f"Entry {index} of {Path(preprocessed) / FEW_SHOT_REGISTRY} is not the draw asked for "
                            f"({wanted}) but {({k: entry.get(k) for k in wanted})}: another process wrote the file "
                            f"meanwhile. Run the benchmark again (it finds or appends its own entry).")
    if entry["val"] != list(base.val) or index >= len(splits) or \
            splits[index] != {"train": entry["train"], "val": entry["val"]}:
        raise SplitConflict(f"Entry {index} of {Path(preprocessed) / SPLITS} is not the few-shot fold recorded in "
                            f"{FEW_SHOT_REGISTRY}, or fold {fold} changed since: the split file was edited. "
                            "Restore it, or start afresh without both files.")
    return Fold(index, fold, n_train, seed, tuple(entry["train"]), tuple(entry["val"]))


@contextlib.contextmanager
def _registry_lock(preprocessed: Path):
    """An exclusive lock (flock) on the dataset's few-shot registry while it is read, appended and written."""
    with open(Path(preprocessed) / (FEW_SHOT_REGISTRY + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _complete_splits(preprocessed: Path) -> tuple:
    """(splits, registry), appending registered few-shot folds that a killed run left out of the split file."""
    splits, registry = _read_splits(preprocessed), _read_registry(preprocessed)
    missing = False
    while str(len(splits)) in registry:
        entry = registry[str(len(splits))]
        splits.append({"train": entry["train"], "val": entry["val"]})
        missing = True
    if missing:
        _write_json(Path(preprocessed) / SPLITS, splits)
    return splits, registry


def _read_splits(preprocessed: Path) -> list:
    path = Path(preprocessed) / SPLITS
    if not path.is_file():
        raise SplitConflict(f"{path} is missing.")
    return json.loads(path.read_text())


def _read_registry(preprocessed: Path) -> dict:
    path = Path(preprocessed) / FEW_SHOT_REGISTRY
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_json(path: Path, content) -> None:
    """Write atomically: a killed run never leaves half a split file behind."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(content, indent=1))
    os.replace(temporary, path)
