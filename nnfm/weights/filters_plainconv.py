"""nnU-Net ``PlainConvUNet`` state dicts (dynamic_network_architectures) -> the whole network but its seg layers.

A PlainConvUNet state dict holds ``encoder.stages.<stage>.<i>.convs.<conv>.{conv,norm,all_modules.<n>}.*`` (the
first stage is the stem: no ``encoder.stem``, unlike a ResidualEncoderUNet), ``decoder.stages.*``,
``decoder.transpconvs.*``, ``decoder.seg_layers.*`` and ``decoder.encoder.*`` (the decoder's reference to the encoder,
the same tensors again). It comes bare, or as nnU-Net's ``checkpoint_final.pth`` (``network_weights``, unwrapped by
nnfm/weights/checkpoint_io.py ``unwrap_state_dict``, ``_orig_mod.`` of a compiled network stripped there too).

As nnU-Net's own ``-pretrained_weights`` (nnunetv2 2.8.1 nnunetv2/run/load_pretrained_weights.py: every key but
those containing ``.seg_layers.``), everything is loaded, encoder and decoder, except the per-class
``decoder.seg_layers.*`` (the dataset's classes), which keep nnU-Net's initialisation. The network's
``pretrained_part()`` (nnfm/networks/dna_unet.py ``NetworkWithoutSegLayers``) has exactly the loaded keys.
"""
from typing import Any, Dict, Tuple

import torch

from nnfm.errors import CheckpointMismatchError
from nnfm.weights.adapters import adapt_stem_channels
from nnfm.weights.families import (NNUNET_PLANS_COMMAND, Adapter, CheckpointFamily, StateDict, fit_command,
                                   has_prefix, register_family)
from nnfm.weights.nnssl_adaptation import read_adaptation_plan
from nnfm.weights.transfer import ENCODER_ONLY_REASON, transfer_prefixes

STEM_KEY = "encoder.stages.0.0.convs.0.conv.weight"
# the same kernel under DNA's ConvDropoutNormReLU.all_modules (DNA PlainConvUNet.keys_to_in_proj lists both)
STEM_ALIAS = "encoder.stages.0.0.convs.0.all_modules.0.weight"
_SEG_REASON = ("segmentation layers of the dataset the file was trained on (its classes): re-initialised for the new "
               "task, as nnU-Net's -pretrained_weights (nnunetv2/run/load_pretrained_weights.py skips .seg_layers.)")
ALIAS_REASON = ("alias of encoder.* (dynamic_network_architectures' UNetDecoder keeps a reference to the encoder, "
                 "so the state dict lists it twice); loaded from encoder.*")


def nnunet_network_filter(state: StateDict) -> Tuple[StateDict, Dict[str, str]]:
    """Every key as it is but ``decoder.seg_layers.*`` and the ``decoder.encoder.*`` alias (each dropped with its
    reason); a key the network lacks is left for the strict comparison to report. Any DNA U-Net's whole-network
    file (PlainConvUNet here, ResidualEncoderUNet in nnfm/weights/filters_resenc.py ``nnunet_resenc``)."""
    mapped, dropped = {}, {}
    for key, value in state.items():
        if key.startswith("decoder.seg_layers."):
            dropped[key] = _SEG_REASON
        elif key.startswith("decoder.encoder."):
            dropped[key] = ALIAS_REASON
        else:
            mapped[key] = value
    return mapped, dropped


def whole_network_adapter(alias: str) -> Adapter:
    """The adapter of a whole-network family (a fixed-topology network loads every key but the seg layers, strictly).

    It refuses a file that records that only its encoder transfers (nnfm/weights/transfer.py: an MAE pretraining,
    whose decoder reconstructs images) with a CheckpointMismatchError naming the trainer that loads encoders into
    nnU-Net's own plans; then maps the stem kernel's ``all_modules.0`` alias ``alias`` (DNA's ConvDropoutNormReLU
    lists the conv twice) to the network's input channels as ``load_pretrained`` adapts the stem key itself (1 -> N
    repeat / N, N -> 1 sum, RGB -> N). Where that cannot be mapped nothing changes here: ``load_pretrained`` then
    refuses the stem with a ChannelMismatchError."""
    def adapt(mapped: StateDict, module: torch.nn.Module, target: StateDict, checkpoint: Any = None) -> Dict[str, str]:
        if transfer_prefixes(checkpoint) is not None:
            nnssl = f"; for nnssl's encoder, {fit_command('nnssl_resenc')}" if read_adaptation_plan(checkpoint) else ""
            raise CheckpointMismatchError(
                f"CheckpointMismatchError: {ENCODER_ONLY_REASON}, and this network loads whole files. Fix: "
                f"{NNUNET_PLANS_COMMAND}, which takes the file's encoder only{nnssl}.")
        source, wanted = mapped.get(alias), target.get(alias)
        if source is None or wanted is None or source.dim() != wanted.dim() or source.shape == wanted.shape \
                or source.shape[0] != wanted.shape[0] or source.shape[2:] != wanted.shape[2:]:
            return {}
        try:
            mapped[alias], how = adapt_stem_channels(source, wanted.shape[1])
        except ValueError:
            return {}
        return {alias: how}
    return adapt


def is_nnunet_plainconv(keys: set, state: StateDict = None) -> bool:
    """A PlainConvUNet: its first stage's first conv under ``encoder.stages`` and no ResEnc stem (``encoder.stem.*``
    is ``nnssl_resenc``'s, nnfm/weights/filters_resenc.py), with DNA's ``UNetDecoder``."""
    return STEM_KEY in keys and not has_prefix(keys, "encoder.stem.") and has_prefix(keys, "decoder.stages.")


# no other family's detection takes these files: nnssl_resenc needs encoder.stem.* (or a bare stem.*), the others
# their own prefixes (tests/test_dna_unet_encoders.py checks every registered family against one)
register_family(CheckpointFamily(
    "nnunet_plainconv", is_nnunet_plainconv, "an nnU-Net PlainConvUNet (dynamic-network-architectures)",
    nnunet_network_filter, STEM_KEY, whole_network_adapter(STEM_ALIAS)))
