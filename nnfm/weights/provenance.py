"""Provenance in the model folder's plans.json, which every fold of a model shares.

nnU-Net rewrites ``<model>/plans.json`` from the plans of whichever fold started training last,
and ``nnUNetv2_predict`` copies that file next to the predictions. A single ``provenance`` entry
there would name one fold's weights for all folds, so the shared file holds
``provenance_by_fold`` (merged over the folds that wrote it) and no unkeyed ``provenance``; each
fold's own checkpoints and ``nnfm_pretrained.json`` keep that fold's provenance.
"""
import copy
from typing import Optional


def model_folder_plans(plans: dict, earlier: Optional[dict], configuration: str) -> dict:
    """``plans`` (this fold's) with ``provenance_by_fold`` merged from ``earlier`` (the file on disk)."""
    merged = copy.deepcopy(plans)
    nnfm = merged["configurations"][configuration].setdefault("nnfm", {})
    own = nnfm.pop("provenance_by_fold", {})
    nnfm.pop("provenance", None)
    previous = ((earlier or {}).get("configurations", {}).get(configuration, {}).get("nnfm", {})
                .get("provenance_by_fold", {}))
    nnfm["provenance_by_fold"] = dict(sorted({**previous, **own}.items()))
    return merged
