"""The network a pretraining engine trains, and where its dense features are tapped.

Two kinds of network, one interface (``network``, ``default_taps``, ``channels``, ``features``):

- :class:`AnatomixTaps`: the anatomix U-Net, tapped by index into its flat ``model`` Sequential, as the authors'
  ``Unet.forward(x, layers)`` (neel-dey/anatomix ``anatomix/model/network.py``); the export is the bare U-Net
  (``model.<i>.*``), the layout of the published weights.
- :class:`ModuleTaps`: any registered encoder network with a dense output (nnU-Net's ``PlainConvUNet`` and
  ``ResidualEncoderUNet`` at their fixed topologies, ...), built from its registry record exactly as nnU-Net builds
  it from plans (``get_network_from_plans``, so nnU-Net's initialisation), tapped at named submodules with forward
  hooks; the export is the network's whole state dict, the layout nnU-Net's checkpoints have.

Default taps of a dynamic-network-architectures U-Net mirror anatomix's six (deepest encoder stage but one, the
bottleneck, then every decoder level up to full resolution), taken at the stage outputs (after norm and
nonlinearity), where anatomix taps convolution outputs before their batch norm.
"""
from typing import Dict, Sequence, Tuple, Union

import torch
from torch import nn

from nnfm.errors import ConfigurationError

Tap = Union[int, str]
# neel-dey/anatomix pretraining/scripts/pretrain_anatomix.py --nce_layers 27,31,38,45,52,65 (see supcon_model.py)
ANATOMIX_TAPS = (27, 31, 38, 45, 52, 65)


def tap_channels(encoder: nn.Module, tap: int) -> int:
    """Channels of layer ``tap``'s output; ValueError for a layer index out of range or a pooling layer."""
    if not 0 <= tap < len(encoder.model):
        raise ValueError(f"tap {tap} is not a layer of the U-Net (0..{len(encoder.model) - 1})")
    for layer in reversed(list(encoder.model)[:tap + 1]):   # norm/ReLU keep the channels of the conv before
        if isinstance(layer, nn.Conv3d):
            if tap in encoder.upsample_at:
                raise ValueError(f"tap {tap} is an upsampling layer; tap a convolution, norm or ReLU")
            return layer.out_channels
        if isinstance(layer, (nn.MaxPool3d, nn.Upsample)):
            raise ValueError(f"tap {tap} is a pooling/upsampling layer; tap a convolution, norm or ReLU")
    raise ValueError(f"tap {tap} has no convolution before it")


def tapped_features(encoder: nn.Module, x: torch.Tensor, taps: Tuple[int, ...]) -> Dict[int, torch.Tensor]:
    """Outputs of the layers ``taps`` for input ``x`` (N, C, Z, Y, X), as anatomix's ``Unet.forward(x, layers)``.

    A tapped conv output is safe from the in-place ReLUs (they act on the batch norm's new tensor);
    any other tapped output is cloned, so a following in-place ReLU cannot change it.
    """
    wanted, found, skips = set(taps), {}, []
    for index, layer in enumerate(encoder.model):
        x = layer(x)
        if index in encoder.upsample_at:
            x = torch.cat((skips.pop(), x), dim=1)
        elif index in encoder.skip_after:
            skips.append(x)
        if index in wanted:
            found[index] = x if isinstance(layer, nn.Conv3d) else x.clone()
        if len(found) == len(wanted):
            break                      # nothing after the last tap contributes to the loss
    return found




class AnatomixTaps:
    """The anatomix U-Net tapped by layer index (nnfm/pretraining/supcon_model.py has the published taps)."""
    kind = "anatomix"

    def __init__(self, network: nn.Module = None):
        from nnfm.networks.anatomix_unet import AnatomixUNet

        self.network = network if network is not None else AnatomixUNet()

    def default_taps(self) -> Tuple[int, ...]:
        return ANATOMIX_TAPS

    def channels(self, tap: Tap) -> int:
        return tap_channels(self.network, int(tap))

    def features(self, x: torch.Tensor, taps: Sequence[Tap]) -> Dict[Tap, torch.Tensor]:
        return tapped_features(self.network, x, tuple(int(t) for t in taps))


def dna_unet_taps(network: nn.Module) -> Tuple[str, ...]:
    """anatomix's six taps on a dynamic-network-architectures U-Net of n stages: encoder stages n-2 and n-1 (the
    bottleneck), then decoder levels 0 .. n-2 (deepest to full resolution). ConfigurationError for another layout."""
    encoder, decoder = getattr(network, "encoder", None), getattr(network, "decoder", None)
    stages = getattr(encoder, "stages", None)
    if stages is None or getattr(decoder, "stages", None) is None:
        raise ConfigurationError(
            f"{type(network).__name__} has no encoder.stages / decoder.stages (a dynamic-network-architectures "
            f"U-Net): name its dense layers with --taps MODULE ... (names from network.named_modules()).")
    n = len(stages)
    return (f"encoder.stages.{n - 2}", f"encoder.stages.{n - 1}") + tuple(f"decoder.stages.{i}"
                                                                           for i in range(len(decoder.stages)))


class ModuleTaps:
    """A registered encoder's network tapped at named submodules (forward hooks).

    ``probe``: a spatial size the network accepts, used once to read each tap's channels.
    Raises ConfigurationError for a tap that is not a submodule of the network."""
    kind = "module"

    def __init__(self, network: nn.Module, probe: Sequence[int]):
        self.network = network
        self._modules = dict(network.named_modules())
        self._probe = tuple(int(p) for p in probe)
        self._channels: Dict[str, int] = {}

    def default_taps(self) -> Tuple[str, ...]:
        return dna_unet_taps(self.network)

    def _module(self, tap: Tap) -> nn.Module:
        if str(tap) not in self._modules or not str(tap):
            raise ConfigurationError(f"tap {tap!r} is not a submodule of {type(self.network).__name__}; taps are "
                                     f"names from network.named_modules(), e.g. {', '.join(self.default_taps())}")
        return self._modules[str(tap)]

    def features(self, x: torch.Tensor, taps: Sequence[Tap]) -> Dict[Tap, torch.Tensor]:
        """Outputs of the submodules ``taps`` for input ``x`` (B, C, *spatial); every tap must run in the forward."""
        found: Dict[Tap, torch.Tensor] = {}
        handles = [self._module(tap).register_forward_hook(
            lambda module, inputs, output, tap=tap: found.__setitem__(tap, output)) for tap in taps]
        try:
            self.network(x)
        finally:
            for handle in handles:
                handle.remove()
        missing = [t for t in taps if t not in found]
        if missing:
            raise ConfigurationError(f"taps {missing} did not run in {type(self.network).__name__}'s forward")
        return found

    def channels(self, tap: Tap) -> int:
        if str(tap) not in self._channels:
            self._module(tap)
            with torch.no_grad():
                device = next(self.network.parameters()).device
                probe = torch.zeros((1, self.input_channels) + self._probe, device=device)
                was_training = self.network.training
                self.network.eval()
                out = self.features(probe, [tap])[tap]
                self.network.train(was_training)
            self._channels[str(tap)] = int(out.shape[1])
        return self._channels[str(tap)]

    @property
    def input_channels(self) -> int:
        first = next(m for m in self.network.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d)))
        return first.in_channels


def pretraining_network(encoder: str) -> nn.Module:
    """The network of registry encoder ``encoder`` with one input channel and nnU-Net's initialisation.

    "anatomix" is the bare anatomix U-Net (the published layout); any other 3D encoder is its registry network,
    built by nnU-Net's ``get_network_from_plans`` from the record's kwargs with one output class (loaders drop the
    segmentation layers of an export). Raises ConfigurationError for an unknown or 2D encoder."""
    from nnfm.registry import get_encoder

    entry = get_encoder(encoder)
    if entry.name == "anatomix":
        from nnfm.networks.anatomix_unet import AnatomixUNet
        return AnatomixUNet()
    if entry.configuration != "3d_fullres":
        raise ConfigurationError(f"encoder {entry.name!r} is a {entry.configuration} network; nnFM's voxel "
                                 f"pretraining engines train 3D networks with a dense output.")
    from nnfm.networks.from_plans import build_network

    return build_network(entry.network_class, entry.kwargs(), [], 1, 1, False)


def pretraining_taps(encoder: str, probe: Sequence[int]) -> Union[AnatomixTaps, ModuleTaps]:
    """:func:`pretraining_network` ready to tap; ``probe``: a spatial size it accepts (reads tap channels)."""
    network = pretraining_network(encoder)
    return AnatomixTaps(network) if encoder == "anatomix" else ModuleTaps(network, probe)
