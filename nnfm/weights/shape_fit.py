"""Pretrained weights into nnU-Net's own, dataset-specific network: every tensor whose name and shape fit is loaded,
every other one keeps nnU-Net's initialisation, each with its reason in the report.

nnU-Net 2.8.1 can only start a network from a checkpoint of the same network (``-pretrained_weights`` asserts on
the first key that is missing or shaped differently, nnunetv2/run/load_pretrained_weights.py). nnU-Net master
(unreleased) loads weights into a dataset's own plans at load time (``DynamicPretrainedTrainer``); this module is
that step for nnU-Net 2.8.1, as nnFM does it:

- a tensor with the same name and shape is loaded;
- the input convolution (the network's first weight) with other input channels is adapted as every nnFM stem
  (1 -> N repeat / N, N -> 1 sum, RGB -> N mean; nnfm/weights/adapters.py);
- a convolution kernel that is 1 along an axis where the file's is odd-sized (nnU-Net plans 1x3x3 kernels for
  anisotropic stages) takes the file kernel's centre slice along that axis (a 3-tap filter restricted to its
  centre tap: what the pretrained filter does on an image that is constant across that axis);
- the decoder's levels are matched by resolution, not by index: dynamic-network-architectures numbers
  ``decoder.stages`` / ``transpconvs`` / ``seg_layers`` from the deepest level, so a file with more (or fewer)
  stages than the plans holds the same full-resolution level under another index; the network's decoder level
  ``i`` takes the file's ``i + (file levels - network levels)`` (the encoder's stages are numbered from the input
  and match by index);
- from a masked-image reconstruction pretraining (nnssl's, with ``nnssl_adaptation_plan``, or nnFM's MAE export)
  only the stem and encoder keys the file records (nnfm/weights/transfer.py), as nnU-Net master transfers them; the
  decoder keeps nnU-Net's initialisation;
- everything else keeps nnU-Net's initialisation (``InitWeights_He``, applied by ``get_network_from_plans``):
  the segmentation layers (the dataset's classes, as nnU-Net's own rule), stages or blocks the pretrained
  topology does not have, and tensors whose features differ.
"""
import re
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch

from nnfm.errors import CheckpointMismatchError
from nnfm.weights.adapters import adapt_stem_channels
from nnfm.weights.checkpoint_io import read_checkpoint, unwrap_state_dict
from nnfm.weights.input_convention import recorded_convention
from nnfm.weights.nnunet_pretrained import SEG_LAYERS
from nnfm.weights.transfer import ENCODER_ONLY_REASON, transfer_prefixes

# dynamic_network_architectures UNetDecoder: per-level module lists, index 0 = the deepest level
_DECODER_LEVEL = re.compile(r"^(decoder\.(?:stages|transpconvs|seg_layers))\.(\d+)\.")


@dataclass
class ShapeFitReport:
    """What :func:`load_fitting` did, key by key (network tensors under their first name: ``loaded``, ``adapted``
    (with how), ``initialised`` (with why); file keys: ``unused`` (with why))."""
    source: str
    path: str
    sha256: str
    input_convention: Optional[str] = None
    loaded: List[str] = field(default_factory=list)
    adapted: Dict[str, str] = field(default_factory=dict)
    initialised: Dict[str, str] = field(default_factory=dict)
    unused: Dict[str, str] = field(default_factory=dict)
    unwrapped: List[str] = field(default_factory=list)
    decoder_levels: Optional[str] = None
    # parameters (elements) of the network outside its segmentation layers, and of those from the file
    elements: int = 0
    pretrained_elements: int = 0

    @property
    def loaded_fraction(self) -> float:
        """Share of the network's parameters (elements, outside the segmentation layers) that came from the file:
        by elements, not tensors, so that a norm's or bias's few values do not count as much as a kernel."""
        return self.pretrained_elements / max(self.elements, 1)

    def format(self, max_items: int = 12) -> str:
        def listing(title, items):
            items = list(items)
            shown = [f"    {i}" for i in items[:max_items]]
            if len(items) > max_items:
                shown.append(f"    ... and {len(items) - max_items} more")
            return [f"  {title} ({len(items)}):"] + shown if items else []

        lines = [f"weights {self.source} -> {self.path} (shape-fitting load into the plans' network)",
                 f"  sha256 {self.sha256}; input convention {self.input_convention or 'not recorded'}; unwrapped: "
                 f"{', '.join(self.unwrapped) or 'nothing'}; decoder levels: {self.decoder_levels or 'by index'}",
                 f"  loaded {len(self.loaded)}, adapted {len(self.adapted)}, kept nnU-Net's initialisation "
                 f"{len(self.initialised)}, unused from the file {len(self.unused)} ({self.loaded_fraction:.0%} of the "
                 f"network outside its segmentation layers is pretrained)"]
        lines += listing("adapted", (f"{k}: {why}" for k, why in self.adapted.items()))
        lines += listing("kept nnU-Net's initialisation", (f"{k}: {why}" for k, why in self.initialised.items()))
        lines += listing("unused from the file", (f"{k}: {why}" for k, why in self.unused.items()))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return dict(asdict(self), loaded_fraction=self.loaded_fraction)


def _centre_slices(weight: torch.Tensor, target: Sequence[int]) -> Optional[torch.Tensor]:
    """``weight`` (out, in, *kernel) cut to ``target`` by taking centre slices along axes where the target kernel is
    1 and the file's is odd; None if that does not give ``target``."""
    if weight.dim() != len(target) or weight.dim() < 4 or list(weight.shape[:2]) != list(target[:2]):
        return None
    for axis in range(2, weight.dim()):
        have, need = weight.shape[axis], target[axis]
        if have != need:
            if need != 1 or have % 2 == 0:
                return None
            weight = weight.narrow(axis, have // 2, 1)
    return weight.contiguous()


def _alias_groups(state: Dict[str, torch.Tensor]) -> Dict[str, List[str]]:
    """First name of each tensor -> its other names (one storage, several keys)."""
    aliases: Dict[int, List[str]] = {}
    for key, value in state.items():
        aliases.setdefault(value.data_ptr() if value.numel() else id(value), []).append(key)
    return {names[0]: names[1:] for names in aliases.values()}


def _decoder_levels(keys) -> int:
    """Number of decoder levels (distinct ``decoder.transpconvs.<i>``) among ``keys``; 0 for another layout."""
    return len({m.group(2) for m in map(_DECODER_LEVEL.match, keys) if m and m.group(1).endswith("transpconvs")})


def _level_aligned(target_keys, file_keys) -> Callable[[str], str]:
    """Network key -> file key with the decoder's levels matched by resolution (module docstring)."""
    offset = _decoder_levels(file_keys) - _decoder_levels(target_keys)

    def file_key(key: str) -> str:
        match = _DECODER_LEVEL.match(key)
        if not match or not offset:
            return key
        return f"{match.group(1)}.{int(match.group(2)) + offset}.{key[match.end():]}"
    return file_key


def _stem_key(target: Dict[str, torch.Tensor]) -> Optional[str]:
    """The network's input convolution: its first weight with a kernel (nnU-Net's encoders build it first)."""
    return next((k for k, v in target.items() if k.endswith("weight") and v.dim() >= 4), None)


def _refuse_other_dimensionality(target, state, file_key, path, network) -> None:
    """CheckpointMismatchError when the file's convolutions have another number of spatial axes than the network's
    (3D weights into a 2D configuration): no kernel maps, and loading only the biases and norms around random
    kernels would call a randomly initialised network pretrained."""
    for key, value in target.items():
        weights = state.get(file_key(key))
        if weights is not None and value.dim() >= 3 and weights.dim() >= 3 and weights.dim() != value.dim():
            raise CheckpointMismatchError(
                f"{path} holds {weights.dim() - 2}D convolutions ({key}: {list(weights.shape)}), "
                f"{type(network).__name__} here {value.dim() - 2}D ones ({list(value.shape)}): no kernel can be "
                f"mapped. Fix: train a {weights.dim() - 2}D configuration (e.g. 3d_fullres) with these weights, or "
                f"this configuration from nnU-Net's initialisation (nnFM_WEIGHTS=random, or nnUNetTrainer).")


def load_fitting(network: torch.nn.Module, path, sha256: str, source: Optional[str] = None) -> ShapeFitReport:
    """Load the tensors of checkpoint ``path`` that fit ``network`` (see the module docstring); returns the report.

    Raises CheckpointMismatchError when nothing outside the segmentation layers fits (another architecture: the
    error names the first keys of both), or when the file's convolutions are of another dimensionality (3D weights
    into a 2D configuration)."""
    checkpoint = read_checkpoint(path)
    state, unwrapped = unwrap_state_dict(checkpoint)
    target = network.state_dict()
    report = ShapeFitReport(str(source or path), str(path), sha256,
                            recorded_convention(path, checkpoint), unwrapped=unwrapped)
    # dynamic-network-architectures registers some modules twice (``all_modules``, the decoder's reference to the
    # encoder): one tensor, several names. Each tensor is decided once, under its first name, for all of them
    canonical = _alias_groups(target)
    stem = _stem_key(target)
    file_key = _level_aligned(target, state)
    if _decoder_levels(target) != _decoder_levels(state) and _decoder_levels(state):
        report.decoder_levels = (f"matched by resolution (the file's {_decoder_levels(state)}, the network's "
                                 f"{_decoder_levels(target)}, from the full-resolution level up)")
    _refuse_other_dimensionality(target, state, file_key, path, network)
    transferable = transfer_prefixes(checkpoint)  # an MAE pretraining's decoder reconstructs images: left behind
    merged = {}
    for key, value in target.items():
        if key not in canonical:
            continue
        if SEG_LAYERS in key:
            report.initialised[key] = "segmentation layer: the dataset's own classes (nnU-Net's rule too)"
            continue
        report.elements += value.numel()
        source_key = file_key(key)
        if transferable is not None and not source_key.startswith(transferable):
            report.initialised[key] = ENCODER_ONLY_REASON
            continue
        if source_key not in state:
            report.initialised[key] = "not in the file: a stage, block or layer the pretrained topology does not have"
            continue
        weights = state[source_key]
        if weights.shape == value.shape:
            merged[key] = weights
            report.loaded.append(key)
            continue
        candidate, how = weights, []
        if key == stem and weights.dim() == value.dim() and weights.shape[1] != value.shape[1]:
            try:
                candidate, channels = adapt_stem_channels(weights, value.shape[1])
                how.append(f"input channels {channels}")
            except ValueError:
                pass
        if candidate.shape != value.shape:
            centre = _centre_slices(candidate, list(value.shape))
            if centre is not None:
                how.append(f"kernel {list(candidate.shape[2:])} -> {list(value.shape[2:])} (centre slice)")
                candidate = centre
        if candidate.shape == value.shape:
            merged[key] = candidate
            report.adapted[key] = "; ".join(how)
            continue
        report.initialised[key] = f"shape {list(weights.shape)} in the file, {list(value.shape)} here"
    aligned = {file_key(k) for k in target}
    file_tensors = _alias_groups(state)  # each file tensor under its first name
    report.unused = {k: "not in this network (a deeper stage, another block count or a pretraining head)"
                     for k in file_tensors if k not in aligned}
    if transferable is not None:
        report.unused.update({k: ENCODER_ONLY_REASON for k in file_tensors if not k.startswith(transferable)})
    report.pretrained_elements = sum(merged[k].numel() for k in merged)
    merged.update({alias: merged[key] for key in list(merged) for alias in canonical[key]})
    if not merged:
        raise CheckpointMismatchError(
            f"Nothing in {path} fits {type(network).__name__} outside its segmentation layers: the file has keys "
            f"like {', '.join(list(state)[:3]) or 'none'}, the network {', '.join(list(target)[:3])}. The file is "
            f"another architecture; pretrained weights of nnU-Net's own networks are PlainConvUNet or "
            f"ResidualEncoderUNet state dicts (an nnU-Net checkpoint_final.pth works as it is).")
    network.load_state_dict({**target, **{k: v.to(target[k].dtype) for k, v in merged.items()}}, strict=True)
    return report
