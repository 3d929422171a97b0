"""The anatomix-dev U-Net checkpoint family: anatomix's ``model.<idx>.*`` layout with instance norm.

anatomix.pth and anatomix-dev.pth are both bare state dicts of the same flat ``nn.Sequential``
(neel-dey/anatomix, anatomix/model/network.py ``Unet``), so their key *names* overlap. What tells them apart
is what the norm choice leaves in the file: the authors give the convolutions a bias only with non-affine
instance norm (``use_bias = norm == 'instance'``), which has no parameters or buffers; batch norm
(anatomix.pth) stores ``weight/bias/running_mean/running_var/num_batches_tracked`` and no conv biases.

The preset (depth, width, output channels, norm) can be read back from the shapes; pooling, upsampling mode
and the norm epsilon cannot (they have no parameters), which is why each published file has one registry
encoder whose preset fixes them (nnfm/networks/anatomix_dev_unet.py). The files load with anatomix's own filter
(nnfm/weights/filters.py ``anatomix_filter``); the family record below adds the preset check.
"""
import re
from typing import Any, Dict, Optional

import torch

from nnfm.errors import CheckpointMismatchError
from nnfm.weights.families import CheckpointFamily, StateDict, register_family
from nnfm.weights.filters import anatomix_filter, is_anatomix

_CONV_WEIGHT = re.compile(r"^model\.(\d+)\.weight$")


def _strip_encoder(key: str) -> str:
    return key[len("encoder."):] if key.startswith("encoder.model.") else key


def has_instance_norm_biases(keys: set) -> bool:
    """True when the stem convolution has a bias: only the authors' ``norm='instance'`` builds one."""
    return "model.0.bias" in keys or "encoder.model.0.bias" in keys


def anatomix_unet_preset(state: StateDict) -> Optional[dict]:
    """Read ``{in_channels, out_channels, num_downs, ngf, norm}`` of an anatomix ``Unet`` from its state dict.

    ``state``: ``model.<idx>.*`` keys (optionally ``encoder.model.<idx>.*``, a full nnFM network).
    Convolutions are the 5-D ``.weight`` tensors: a U-Net of depth ``num_downs`` has ``4 * num_downs + 4``
    (stem, two per encoder level, two at the bottleneck, two per decoder level, output). ``norm`` is the
    authors' name (anatomix/model/network.py ``get_norm_layer``): ``batch`` (running statistics stored),
    ``instance_affine`` (norm weights, no conv bias), ``instance`` (conv biases, no norm state) or ``none``.
    Returns None when the tensors do not form such a U-Net (the strict key comparison then reports why).
    """
    state = {_strip_encoder(k): v for k, v in state.items()}
    convs = sorted((int(m.group(1)), v) for k, v in state.items()
                   if (m := _CONV_WEIGHT.match(k)) and isinstance(v, torch.Tensor) and v.dim() == 5)
    if len(convs) < 8 or (len(convs) - 4) % 4:
        return None
    if "model.1.running_mean" in state:
        norm = "batch"
    elif "model.1.weight" in state:
        norm = "instance_affine"
    elif "model.0.bias" in state:
        norm = "instance"
    else:
        norm = "none"
    stem, output = convs[0][1], convs[-1][1]
    return {"in_channels": int(stem.shape[1]), "out_channels": int(output.shape[0]),
            "num_downs": (len(convs) - 4) // 4, "ngf": int(stem.shape[0]), "norm": norm}


def _describe(preset: dict) -> str:
    return (f"num_downs={preset['num_downs']}, ngf={preset['ngf']}, {preset['out_channels']} output channels, "
            f"norm={preset['norm']!r}")


def encoders_for_preset(preset: dict) -> list:
    """Registered encoders whose network_kwargs build an anatomix U-Net of ``preset``'s shapes. Called while a
    network loads weights, so its module (and the anatomix ones, which it imports) has registered its entries; the
    leaf record module is read, not nnfm.registry, which imports the network modules (no import cycle)."""
    from nnfm.encoder_entry import registered_encoders

    matches = []
    for entry in registered_encoders():
        kwargs = entry.network_kwargs
        if "num_downs" not in kwargs or "ngf" not in kwargs:
            continue
        if (kwargs["num_downs"], kwargs["ngf"], kwargs.get("encoder_out_channels", 16), kwargs.get("norm", "batch")) \
                == (preset["num_downs"], preset["ngf"], preset["out_channels"], preset["norm"]):
            matches.append(entry)
    return matches


def check_anatomix_dev_preset(mapped: StateDict, module: torch.nn.Module, target: StateDict,
                              checkpoint: Any = None) -> Dict[str, str]:
    """Adapter of the anatomix_dev_unet family: changes nothing, but refuses a file whose U-Net preset differs
    from the network's with a message that names the encoder to plan with (instead of ~48 shape mismatches).

    Input channels are left to the stem adaptation. Raises CheckpointMismatchError; returns ``{}`` otherwise.
    """
    have, need = anatomix_unet_preset(mapped), anatomix_unet_preset(target)
    compared = ("num_downs", "ngf", "out_channels", "norm")
    if have is None or need is None or all(have[k] == need[k] for k in compared):
        return {}
    fits = [e for e in encoders_for_preset(have) if not e.tiny] or encoders_for_preset(have)
    if fits:
        fix = "; ".join(f"plan with nnFM_plan_and_preprocess -d ID -e {e.name} and train with -tr {e.trainer}"
                        for e in fits)
    else:
        fix = ("no registered encoder has this preset (the anatomix repository's history has earlier 'anatomix-dev' "
               "releases of other sizes, e.g. num_downs=5, ngf=20 with 16 output channels): use the current "
               "anatomix-dev.pth (registry name 'anatomix-dev'), or plan with -e anatomix_dev_unet and set "
               f"num_downs={have['num_downs']}, ngf={have['ngf']}, encoder_out_channels={have['out_channels']} in "
               "the plans' arch_kwargs")
    raise CheckpointMismatchError(
        f"CheckpointMismatchError: the checkpoint is an anatomix U-Net with {_describe(have)}, but this network was "
        f"built with {_describe(need)}. Fix: {fix}.")


# before anatomix_unet, whose detection takes any model.<idx>.* layout: only the dev file's instance norm gives the
# convolutions biases
register_family(CheckpointFamily(
    "anatomix_dev_unet", lambda k, s: is_anatomix(k, s) and has_instance_norm_biases(k), "the anatomix-dev U-Net",
    anatomix_filter, "model.0.weight", check_anatomix_dev_preset, detect_before=("anatomix_unet",)))
