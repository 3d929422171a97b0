"""nnU-Net ``ResidualEncoderUNet`` state dicts: two families with the same keys, told apart by what loads them.

- ``nnssl_resenc`` (``resenc_l``): nnssl / OpenMind pretraining checkpoints -> the encoder only, as below.
- ``nnunet_resenc`` (``resenc_unet``): a whole segmentation network (nnU-Net's ``checkpoint_final.pth`` of a ResEnc
  plan, or nnFM's own ``nnFM_pretrain synth --encoder resenc_unet`` export, whose decoder stages are pretrained
  too) -> everything but ``decoder.seg_layers``, as nnU-Net 2.8.1's ``-pretrained_weights`` and the PlainConvUNet
  family (nnfm/weights/filters_plainconv.py). A file carrying nnssl's adaptation plan is refused there: its decoder
  is nnssl's MAE reconstruction decoder, which nnU-Net master never transfers (nnfm/weights/transfer.py).

``load_pretrained`` reads a file whose keys several families take as the loading network's own family
(nnfm/weights/families.py ``detect_family(prefer=...)``, ``same_layout``); elsewhere (error messages)
``nnssl_resenc`` comes first.

nnssl_resenc in detail: the network's ``encoder`` is dynamic_network_architectures' ``ResidualEncoder``, so its keys
are the file's ``encoder.stem.*`` + ``encoder.stages.*`` without the ``encoder.`` prefix: exactly the two prefixes
nnU-Net master loads (``key_to_stem`` / ``key_to_encoder`` of the adaptation plan, MIC-DKFZ/nnUNet
nnunetv2/training/nnUNetTrainer/pretraining/pretrainedTrainer.py ``load_pretrained_weights``). Everything else is
dropped with its reason; the adapter checks the file's adaptation plan against the network and adapts every stem
convolution in ``keys_to_in_proj`` to the dataset's input channels.
"""
from typing import Any, Dict, Tuple

import torch

from nnfm.errors import CheckpointMismatchError
from nnfm.weights.adapters import adapt_stem_channels
from nnfm.weights.families import CheckpointFamily, StateDict, has_prefix, register_family
from nnfm.weights.filters_plainconv import ALIAS_REASON, nnunet_network_filter, whole_network_adapter
from nnfm.weights.nnssl_adaptation import (RESENC_KEY_TO_ENCODER, RESENC_KEY_TO_STEM, RESENC_KEYS_TO_IN_PROJ,
                                           nnssl_adaptation, read_adaptation_plan)

_DECODER_REASON = ("decoder of the pretraining network (nnssl's MAE reconstruction decoder, or the segmentation "
                   "decoder of an nnU-Net ResEnc checkpoint): only stem and encoder transfer (nnU-Net master "
                   "PretrainedTrainer.load_pretrained_weights); the decoder is re-initialised for the new task")
STEM_KEY = "stem.convs.0.conv.weight"
NNUNET_STEM_KEY = "encoder." + STEM_KEY  # the same kernel in a whole network's state dict


def nnssl_resenc_filter(state: StateDict) -> Tuple[StateDict, Dict[str, str]]:
    """``encoder.stem.*`` / ``encoder.stages.*`` (or a bare encoder's ``stem.*`` / ``stages.*``) are loaded,
    ``decoder.*`` is dropped with its reason; any other key is left for the strict comparison to report."""
    mapped, dropped = {}, {}
    for key, value in state.items():
        if key.startswith(("encoder.stem.", "encoder.stages.")):
            mapped[key[len("encoder."):]] = value
        elif key.startswith("decoder.encoder."):
            dropped[key] = ALIAS_REASON
        elif key.startswith("decoder."):
            dropped[key] = _DECODER_REASON
        else:
            mapped[key] = value
    return mapped, dropped


def _encoder_topology(module: torch.nn.Module):
    """(features per stage, residual blocks per stage) of a ResidualEncoder, or None for another module."""
    stages = getattr(module, "stages", None)
    if stages is None or not hasattr(module, "output_channels"):
        return None
    return list(module.output_channels), [len(getattr(s, "blocks", [])) for s in stages]


def adapt_nnssl_resenc(mapped: StateDict, module: torch.nn.Module, target: StateDict,
                       checkpoint: Any = None) -> Dict[str, str]:
    """Check the adaptation plan against the network, then map every ``keys_to_in_proj`` stem kernel to the
    network's input channels (1 -> N: repeat and divide by N, as nnU-Net master; N -> 1: sum; RGB -> N).

    Raises CheckpointMismatchError when the plan names other encoder / stem prefixes or another topology than
    the network was built with (the fix: plan with this checkpoint, ``nnFM_plan_and_preprocess -e resenc_l -w FILE``).
    """
    plan = read_adaptation_plan(checkpoint)
    adapted = {}
    adaptation = nnssl_adaptation(checkpoint) if plan is not None else None
    if adaptation is not None:
        if (adaptation.key_to_encoder, adaptation.key_to_stem) != (RESENC_KEY_TO_ENCODER, RESENC_KEY_TO_STEM):
            raise CheckpointMismatchError(
                f"CheckpointMismatchError: the checkpoint's nnssl_adaptation_plan puts the encoder under "
                f"{adaptation.key_to_encoder!r} and the stem under {adaptation.key_to_stem!r}; nnFM's ResEnc "
                f"network (nnU-Net's ResidualEncoderUNet) has them at {RESENC_KEY_TO_ENCODER!r} / "
                f"{RESENC_KEY_TO_STEM!r}. This file is not a ResEnc U-Net pretraining.")
        have = _encoder_topology(module)
        wanted = (adaptation.topology["features_per_stage"], adaptation.topology["n_blocks_per_stage"])
        if have is not None and (list(have[0]), list(have[1])) != (list(wanted[0]), list(wanted[1])):
            raise CheckpointMismatchError(
                f"CheckpointMismatchError: the checkpoint's adaptation plan ({adaptation.architecture}) describes "
                f"features {wanted[0]} with {wanted[1]} residual blocks per stage; the network was built with "
                f"features {have[0]} and blocks {have[1]}. Plan with this checkpoint so that the plans take its "
                f"topology: nnFM_plan_and_preprocess -d ID -e resenc_l -w FILE.")
        in_proj = adaptation.keys_to_in_proj
    else:
        in_proj = RESENC_KEYS_TO_IN_PROJ
    for name in in_proj:
        key = (name[len("encoder."):] if name.startswith("encoder.") else name) + ".weight"
        source, wanted = mapped.get(key), target.get(key)
        if source is None or wanted is None or source.dim() != wanted.dim() or source.shape == wanted.shape:
            continue
        if source.shape[0] != wanted.shape[0] or source.shape[2:] != wanted.shape[2:]:
            continue  # not a channel difference: the strict comparison reports it
        try:
            mapped[key], how = adapt_stem_channels(source, wanted.shape[1])
        except ValueError:
            continue  # load_pretrained raises ChannelMismatchError on the stem key
        adapted[key] = how + " (every keys_to_in_proj kernel, as nnU-Net master's PretrainedTrainer)"
    return adapted


def _is_whole_resenc(keys: set, state: StateDict = None) -> bool:
    return NNUNET_STEM_KEY in keys and has_prefix(keys, "encoder.stages.") and has_prefix(keys, "decoder.stages.")


# nnssl / OpenMind ResEnc-L and every nnU-Net ResidualEncoderUNet state dict (encoder.stem.* + encoder.stages.*;
# a PlainConvUNet has no encoder.stem, a Primus has eva.*): issue 15. Tried before nnunet_resenc, which takes the
# same keys: where no loading network says otherwise a ResEnc file is named as nnssl's (its published layout)
register_family(CheckpointFamily(
    "nnssl_resenc", lambda k, s: NNUNET_STEM_KEY in k and has_prefix(k, "encoder.stages.")
    or "stem.convs.0.conv.weight" in k and has_prefix(k, "stages.0.blocks."),
    "an nnssl / nnU-Net ResidualEncoderUNet", nnssl_resenc_filter, STEM_KEY, adapt_nnssl_resenc,
    detect_before=("nnunet_resenc",)))
# issue 27: nnFM's own ResEnc pretraining trains the whole network (SupCon taps on decoder stages), so its decoder
# transfers as a PlainConvUNet's does
register_family(CheckpointFamily(
    "nnunet_resenc", _is_whole_resenc,
    "an nnU-Net ResidualEncoderUNet segmentation network (nnU-Net's checkpoint, or nnFM's own pretraining export)",
    nnunet_network_filter, NNUNET_STEM_KEY, whole_network_adapter("encoder.stem.convs.0.all_modules.0.weight"),
    same_layout=("nnssl_resenc",)))
