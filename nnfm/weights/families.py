"""Checkpoint families as records: how a published file is recognised, mapped and adapted, in one place.

A family is the key layout one group of authors' code writes (anatomix's ``model.*``, nnssl's ``eva.*`` +
``down_projection.*``, DINOv3's bare backbone, ...). ``load_pretrained`` detects the family of a state dict
with :func:`detect_family`, maps it with the record's ``filter``, lets its ``adapter`` change shapes whose
meaning survives (position embeddings) and adapts the input channels of ``stem_key``. An encoder's registry
entry (nnfm/registry.py) lists the families its network loads.

This module is the registry only and imports no filter: each record is registered beside its filter
(nnfm/weights/filters*.py), and ``nnfm/weights/__init__.py`` imports every filter module, so that importing
anything from ``nnfm.weights`` registers all families before one is looked up (timm's pattern: the registry
module is a leaf, the package imports the modules that register).

A record says what its files are (``description``), never which encoder or trainer loads them: that is the encoder
registry's (``EncoderEntry.families``). The registry imports the network modules, which import this package, so
this module cannot import it; the registry installs its lookup here instead (:func:`set_family_encoders`), and
:func:`use_of` words what fits a family from it (the wrong-family errors of nnfm/weights/loading.py).

Detection tries the records in :func:`families` order: the order their ``detect_before`` declares (a layout that
another family's detection also takes is tried first), other ties by name, so that it never depends on which
module was imported first. tests/test_weight_families.py checks that every overlap on a published layout is
declared.
"""
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

StateDict = Dict[str, torch.Tensor]
# (state dict) -> (mapped, {dropped key: why}): nnfm/weights/filters.py
Filter = Callable[[StateDict], Tuple[StateDict, Dict[str, str]]]
# (mapped, target module, target state dict, the whole checkpoint as read) -> {key: how}: nnfm/weights/adapters.py
Adapter = Callable[[StateDict, torch.nn.Module, StateDict, Any], Dict[str, str]]
# (a state dict in the network's names: the mapped checkpoint, or the network's own) -> the architecture kwargs its
# shapes imply, e.g. {"embed_dim": 32, "depth": 4, "num_heads": 2} for a ViT (the plans' vit_kwargs)
Architecture = Callable[[StateDict], Dict[str, Any]]


@dataclass(frozen=True)
class CheckpointFamily:
    """``detect(keys, state)`` says whether a state dict has this layout; ``filter`` maps it to the network's
    names (returning the keys it drops on purpose, with reasons); ``description`` says what a file of it is, as a
    noun phrase ("an nnssl / nnU-Net ResidualEncoderUNet"), never which encoder or trainer loads it (:func:`use_of`
    adds that from the encoder registry). ``filter`` None: recognised, so that a wrong-family error can say what the
    file is, but not loadable.
    ``detect_before``: the families whose ``detect`` also takes this family's files, so this one is tried first.
    ``same_layout``: families whose files are this one's layout exactly; :func:`detect_family` lets the loading
    network's family decide between them."""
    name: str
    detect: Callable[[set, StateDict], bool]
    description: str
    filter: Optional[Filter] = None
    stem_key: Optional[str] = None
    adapter: Optional[Adapter] = None
    # axis of the stem weight that holds the input channels (1 for a plain conv; 2 for DrasCLR's
    # location-conditioned conv, whose weight is [experts, out, in, k, k, k])
    stem_in_dim: int = 1
    detect_before: Tuple[str, ...] = ()
    # what the shapes say about the architecture (for a mismatch error that says which size the file is)
    architecture: Optional[Architecture] = None
    # families whose files have exactly this layout (no key tells them apart): the loading network's family decides
    same_layout: Tuple[str, ...] = ()


_FAMILIES: Dict[str, CheckpointFamily] = {}
# family name -> the user-facing encoder entries (nnfm.encoder_entry.EncoderEntry) whose ``families`` list it;
# installed by nnfm/registry.py (dependency inversion: the registry imports this package, never the reverse)
_FAMILY_ENCODERS: Optional[Callable[[str], Sequence[Any]]] = None


def register_family(family: CheckpointFamily) -> CheckpointFamily:
    if family.name in _FAMILIES and _FAMILIES[family.name] != family:
        raise ValueError(f"Checkpoint family {family.name!r} is registered twice with different records.")
    _FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Optional[CheckpointFamily]:
    return _FAMILIES.get(name)


def families() -> List[CheckpointFamily]:
    """The registered families in detection order: every ``detect_before`` kept (names not registered are
    ignored), otherwise by name. Raises ValueError when the declarations form a cycle."""
    after = {name: {n for n in f.detect_before if n in _FAMILIES} for name, f in _FAMILIES.items()}
    waiting = {name: sum(name in later for later in after.values()) for name in _FAMILIES}
    order = []
    while len(order) < len(_FAMILIES):
        ready = sorted(n for n, count in waiting.items() if count == 0 and n not in order)
        if not ready:
            raise ValueError(f"Checkpoint families' detect_before declarations form a cycle, among: "
                             f"{', '.join(sorted(n for n in _FAMILIES if n not in order))}.")
        order.append(ready[0])
        for name in after[ready[0]]:
            waiting[name] -= 1
    return [_FAMILIES[name] for name in order]


def detect_family(state: StateDict, prefer: Sequence[str] = ()) -> Optional[str]:
    """The name of the first family (in :func:`families` order) whose layout ``state`` has, or None; except where
    that family and one of ``prefer`` (the loading network's own families) declare the same layout
    (``same_layout``: files no key tells apart, such as nnssl's and nnU-Net's ResEnc files): then the preferred one,
    as the network that loads the file reads it. A family merely tried later (``detect_before``) never wins so."""
    keys = set(state)
    found = next((f.name for f in families() if f.detect(keys, state)), None)
    if found is None or found in prefer:
        return found
    siblings = same_layout_families(found)
    return next((name for name in prefer if name in siblings and _FAMILIES[name].detect(keys, state)), found)


def same_layout_families(name: str) -> List[str]:
    """The families whose files are family ``name``'s layout exactly (``same_layout``, declared on either side)."""
    record = _FAMILIES.get(name)
    declared = set(record.same_layout if record else ())
    return sorted((declared | {f.name for f in _FAMILIES.values() if name in f.same_layout}) & set(_FAMILIES))


def has_prefix(keys: set, *prefixes: str) -> bool:
    """Whether any key starts with one of ``prefixes`` (the usual ``detect`` test)."""
    return any(k.startswith(prefixes) for k in keys)


def set_family_encoders(lookup: Optional[Callable[[str], Sequence[Any]]]) -> None:
    """Install the encoder registry's answer to "which encoders load family F" (nnfm/registry.py calls this)."""
    global _FAMILY_ENCODERS
    _FAMILY_ENCODERS = lookup


# nnU-Net's network classes (a plans' network_class_name, last part) -> the registered nnFM encoder that is that
# class at a fixed topology. Its checkpoint families are state dicts of nnU-Net's own networks, which
# nnFMTrainer_nnUNetPlans loads by name and shape into the network nnU-Net plans for any dataset (nnFM's default,
# nnfm/weights/shape_fit.py), and its registry default weights start that network
NNUNET_NETWORK_ENCODERS = {"PlainConvUNet": "plainconv_unet", "ResidualEncoderUNet": "resenc_unet"}
NNUNET_PLANS_COMMAND = ("plan nnU-Net's own plans with nnFM_plan_and_preprocess -d ID -w FILE and train with "
                        "-tr nnFMTrainer_nnUNetPlans (nnFM's default)")


def fit_command(name: str) -> str:
    """The command that fine-tunes a file of family ``name``: each user-facing registered encoder that loads it,
    with its trainer, e.g. "plan with nnFM_plan_and_preprocess -d ID -e resenc_l and train with -tr
    nnFMTrainer_ResEncL". Where the encoder registry has not been loaded in this process, where to look them up."""
    if _FAMILY_ENCODERS is None:
        return (f"plan with nnFM_plan_and_preprocess -d ID -e ENCODER and train with its trainer, for an ENCODER whose "
                f"checkpoint families include '{name}': python -m nnfm.registry --markdown lists each encoder's "
                f"families and trainer")
    entries = sorted(_FAMILY_ENCODERS(name), key=lambda e: e.name)
    nnunet_plans = any(e.name in NNUNET_NETWORK_ENCODERS.values() for e in entries)
    first = f"{NNUNET_PLANS_COMMAND}, or " if nnunet_plans else ""
    if not entries:
        return f"no registered nnFM encoder loads '{name}' files"
    if len(entries) == 1:
        return (f"{first}plan with nnFM_plan_and_preprocess -d ID -e {entries[0].name} and train with "
                f"-tr {entries[0].trainer}")
    return (f"{first}plan with nnFM_plan_and_preprocess -d ID -e ENCODER and train with its trainer, one of: "
            + "; ".join(f"-e {e.name} with -tr {e.trainer}" for e in entries))


def scratch_advice(families: Sequence[str]) -> str:
    """How to train without such weights: nnFM_WEIGHTS=random, and the scratch trainer of each registered encoder that
    loads one of ``families`` (its registry record's ``scratch_trainer``), where the registry is loaded."""
    entries = [e for f in families for e in (_FAMILY_ENCODERS(f) if _FAMILY_ENCODERS else [])]
    trainers = sorted({e.scratch_trainer for e in entries if e.scratch_trainer})
    return "train from random initialisation (nnFM_WEIGHTS=random" + \
        (f", or -tr {' / '.join(trainers)})" if trainers else ")")


def use_of(name: str) -> str:
    """What fits a file of family ``name``, for error messages: what the file is and :func:`fit_command`."""
    record = _FAMILIES.get(name)
    what = record.description if record else f"a '{name}' checkpoint"
    return f"{what} ({fit_command(name)})"
