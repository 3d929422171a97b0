"""A frozen encoder's dense features as extra input channels of nnU-Net's own network (DropGen, arXiv 2604.02564).

``FeatureInputNetwork(features, network)``: ``forward(x) = network(dropout(cat([x, instance_norm(features(x))])))``.
``features`` is a registered nnFM encoder network (e.g. the anatomix U-Net) that is frozen (no gradients, eval mode
always, its batch-norm statistics never change); ``network`` is what nnU-Net plans for the dataset, built with
``image channels + feature channels`` inputs. Because the features are computed inside ``forward``, nnU-Net's
training, its validation and ``nnUNetv2_predict`` compute them identically, and there is no feature file to go stale.

DropGen's recipe, read from the authors' code (sebodiaz/DropGen, commit c1a40ee; documentation/dropgen.md has the
table): the values below carry their source. Where nnFM departs from it, the comment says so and why.

What the frozen encoder is fed. anatomix's weights saw their input min-max scaled to [0, 1] (``window01``; MONAI
``ScaleIntensityd``: in DropGen's and anatomix's training on the augmented crop, at DropGen's evaluation on the
whole volume; sebodiaz/DropGen src/augmentations.py, neel-dey/anatomix anatomix/segmentation/segmentation_utils.py).
nnU-Net's plans z-score MRI per image (``ZScoreNormalization``; CT: ``CTNormalization``, clipped to the foreground's
0.5 / 99.5 percentiles and standardised with the dataset's mean / std), and the network only ever sees a patch,
never the whole image, so a per-image min-max cannot be taken inside it. What nnFM's anatomix network already does
(nnfm/networks/intensity_window.py, segmentation_unet.py ``input_norm``) is used: a fixed window ``[lo, hi]`` in
nnU-Net's normalised units, clipped and scaled to [0, 1], with ``lo`` / ``hi`` the 0.5 / 99.5 percentiles of each
normalised image, median over up to 20 preprocessed cases of the dataset (nnfm/planning/intensity.py; nnFM's planner
measures the same on the raw images). For z-scored MRI this is per-volume min-max up to each image's spread of its
percentiles in z units; it is robust to single outliers, as nnFM's window for fine-tuning anatomix is. Channels
nnU-Net normalises inside the nonzero mask map their exact zeros (outside the mask, padding) to 0, anatomix's
background. Weights pretrained on nnU-Net's z-scores (``zscore``) get them as they are, where the plans z-score
every channel without a mask. Any other convention cannot be produced from nnU-Net's normalised input and is refused
(``check_feature_convention``).
"""
import inspect
import time
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nnfm.conventions import NNUNET, WINDOW01, ZSCORE, get_convention
from nnfm.errors import ConfigurationError
from nnfm.networks.intensity_window import IntensityWindow

# the plans (configuration level) carry the whole feature input, so nnUNetv2_predict rebuilds the same wrapper from
# the model folder's plans.json whatever the trainer class's defaults are by then
FEATURE_INPUT_KEY = "nnfm_feature_input"

DROPGEN_CODE = "sebodiaz/DropGen (commit c1a40ee)"
# sebodiaz/DropGen options.py: --dropout_prob default 0.75 (README's example commands pass --dropout_prob 0.75 too)
DROPGEN_DROPOUT = 0.75
# sebodiaz/DropGen main.py, training loop: inputs = torch.cat([inputs, feat_maps], dim=1) -- image first, then features
# sebodiaz/DropGen main.py: F.dropout3d(inputs, p=opts.dropout_prob, training=True) on that concatenation: each
#   channel of each sample zeroed with probability p, the image channel included, survivors scaled by 1 / (1 - p)
# sebodiaz/DropGen src/network.py InferenceExtractor.forward: cat([x, feat_extractor(x)]) and no dropout at inference
# sebodiaz/DropGen src/misc.py load_feature_extractor: Sequential(Unet(..., output_nc=16), InstanceNorm3d(16)): the
#   anatomix U-Net's final 16-channel output, instance-normalised per sample and channel (no affine, eps 1e-5)
DROPGEN_RECIPE = {
    "combine": "concatenate [image channels, feature channels] (image first)",
    "feature_norm": "instance",
    "dropout": DROPGEN_DROPOUT,
    "dropout_unit": "whole channels, per sample (F.dropout3d)",
    "dropout_channels": "image and feature channels",
    "rescale": "survivors x 1 / (1 - p)",
    "inference": "no dropout",
    "source": f"{DROPGEN_CODE} main.py (training loop: cat, F.dropout3d), src/misc.py (load_feature_extractor: "
              f"InstanceNorm3d(16)), src/network.py (InferenceExtractor), options.py (--dropout_prob 0.75)",
}
FEATURE_NORMS = ("instance", "none")


def feature_conventions(schemes: Sequence[str], use_mask: Sequence[bool]) -> Dict[str, str]:
    """The input conventions a frozen encoder can be fed from nnU-Net's normalised input with these plans, each with
    how (nnfm/conventions.py names)."""
    fits = {WINDOW01.name: "nnU-Net's intensities clipped to a window measured in nnU-Net's units, scaled to [0, 1]",
            NNUNET.name: "nnU-Net's intensities as they are"}
    if set(schemes) == {"ZScoreNormalization"} and not any(use_mask):
        fits[ZSCORE.name] = "nnU-Net's per-image z-scores as they are"
    return fits


def check_feature_convention(convention: str, network_class: type, schemes: Sequence[str],
                             use_mask: Sequence[bool], what: str) -> None:
    """ConfigurationError unless weights pretrained on ``convention`` can be fed it from these plans by the feature
    network (``network_class.INPUT_NORMS``). ``what`` names the weights in the message."""
    fits = feature_conventions(schemes, use_mask)
    applicable = [n for n in getattr(network_class, "INPUT_NORMS", ()) if n in fits]
    if convention not in applicable:
        fed = (f"nnU-Net's normalised input ({', '.join(sorted(set(schemes)))}"
               f"{', inside the nonzero mask' if any(use_mask) else ''})")
        can = (f"from which it can produce {' or '.join(applicable)} only" if applicable else
               f"from which none of the conventions it takes ({', '.join(getattr(network_class, 'INPUT_NORMS', ()))}) "
               f"can be produced")
        fix = (f"weights pretrained on {' or '.join(applicable)} (nnFM_FEATURE_WEIGHTS; python -m nnfm.registry lists "
               f"them), or another encoder (nnFM_FEATURE_ENCODER)" if applicable else
               "another encoder (nnFM_FEATURE_ENCODER, e.g. anatomix)")
        raise ConfigurationError(
            f"{what} were pretrained on input convention {get_convention(convention).summary()}. The frozen feature "
            f"encoder ({network_class.__name__}) is fed {fed}, {can}; fed anything else the features would shift "
            f"silently. Fix: {fix}.")


def build_feature_encoder(network_class_name: str, preset_kwargs: dict, num_input_channels: int,
                          input_norm: str, patch_size: Sequence[int],
                          input_window: Optional[Sequence[Sequence[float]]] = None,
                          zero_is_background: Optional[Sequence[bool]] = None) -> nn.Module:
    """A registered encoder's segmentation network as a frozen feature extractor (random weights: the trainer
    loads the pretrained ones, ``nnUNetv2_predict`` the checkpoint's). Its ``dense_features`` give the features.

    ``preset_kwargs``: the encoder's registry preset; ``input_norm``: the weights' convention (nnfm/conventions.py);
    ``input_window`` / ``zero_is_background``: the window01 window in nnU-Net's units and the masked channels."""
    import pydoc

    from nnfm.networks.from_plans import build_network

    network_class = pydoc.locate(network_class_name)
    if not hasattr(network_class, "dense_features"):
        raise ConfigurationError(f"{network_class_name} gives no dense features; a feature encoder needs them "
                                 f"(nnFM_extract_features lists the encoders that do).")
    kwargs = dict(preset_kwargs, **getattr(network_class, "DENSE_FEATURE_KWARGS", {}))
    parameters = inspect.signature(network_class).parameters
    if "input_norm" in parameters:
        kwargs["input_norm"] = input_norm
    if "input_shape" in parameters:  # ViTs are built for one input shape: nnU-Net's patch
        kwargs["input_shape"] = [int(p) for p in patch_size]
    if "pad_to_stride" in parameters:  # nnU-Net's patch (e.g. 40x56x40) need not be a multiple of the stride
        kwargs["pad_to_stride"] = True
    windowed = get_convention(input_norm).output_range is not None
    if windowed and "input_window" in parameters:
        kwargs.update(input_window=[list(w) for w in input_window], zero_is_background=list(zero_is_background))
    network = build_network(network_class_name, kwargs, [], num_input_channels, 1, False)
    if windowed and "input_window" not in parameters:
        network.input_window = IntensityWindow(num_input_channels, input_window,
                                               zero_is_background=list(zero_is_background))
    return network


class FeatureInputNetwork(nn.Module):
    """nnU-Net's ``network`` fed ``[image, features]``; ``features`` frozen in eval mode.

    For nnU-Net's trainer and predictor it is nnU-Net's network: the same outputs (deep supervision list or one
    tensor), ``decoder`` (``decoder.deep_supervision`` is what nnUNetTrainer.set_deep_supervision_enabled sets) and
    ``encoder`` name ``network``'s. ``state_dict`` holds both (``features.*``, ``network.*``), so a checkpoint or an
    exported model folder is self-contained. ``train()`` never puts ``features`` into training mode.

    ``dropout``: probability of zeroing each channel of each sample in training (image and features, DropGen's
    ``F.dropout3d``; 0 = off); ``feature_norm``: "instance" (DropGen's InstanceNorm3d after the encoder) or "none".
    ``timing``: accumulate the wall time of the feature pass (``pop_feature_seconds``), CUDA synchronised.
    """

    def __init__(self, features: nn.Module, network: nn.Module, num_image_channels: int,
                 dropout: float = DROPGEN_DROPOUT, feature_norm: str = "instance"):
        super().__init__()
        if not 0 <= dropout < 1:
            raise ConfigurationError(f"feature dropout must be in [0, 1), got {dropout}")
        if feature_norm not in FEATURE_NORMS:
            raise ConfigurationError(f"feature_norm must be one of {FEATURE_NORMS}, got {feature_norm!r}")
        self.features = features
        self.network = network
        self.num_image_channels = int(num_image_channels)
        self.num_feature_channels = int(features.dense_feature_channels)
        self.dropout = float(dropout)
        self.feature_norm = feature_norm
        self.timing = False
        self._seconds = {True: 0.0, False: 0.0}   # training mode -> seconds of feature passes
        self._calls = {True: 0, False: 0}
        self.features.requires_grad_(False)
        self.features.eval()

    # ---- what nnU-Net's trainer and predictor touch ---------------------------------------------------------
    @property
    def decoder(self) -> nn.Module:
        return self.network.decoder

    @property
    def encoder(self) -> nn.Module:
        return self.network.encoder

    def train(self, mode: bool = True) -> "FeatureInputNetwork":
        super().train(mode)
        self.features.eval()  # frozen: batch-norm statistics and any dropout of the encoder stay as pretrained
        return self

    # ---- forward ------------------------------------------------------------------------------------------------
    @torch.compiler.disable  # eager and outside nnU-Net's compiled graph: the timing synchronises, nothing to train
    def frozen_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *patch) nnU-Net-normalised -> (B, F, *patch) features (instance-normalised per DropGen)."""
        if self.timing and x.is_cuda:
            torch.cuda.synchronize(x.device)
        start = time.perf_counter()
        with torch.no_grad():
            features = self.features.dense_features(x).float()
            if self.feature_norm == "instance":
                # DropGen: torch.nn.InstanceNorm3d(16) (affine False, eps 1e-5) over each sample's patch
                features = F.instance_norm(features, eps=1e-5)
        if self.timing:
            if x.is_cuda:
                torch.cuda.synchronize(x.device)
            self._seconds[self.training] += time.perf_counter() - start
            self._calls[self.training] += 1
        return features.to(x.dtype)

    def network_input(self, x: torch.Tensor) -> torch.Tensor:
        """What ``network`` gets: [image, features], whole channels dropped per sample in training mode."""
        combined = torch.cat([x, self.frozen_features(x)], dim=1)
        if self.training and self.dropout > 0:
            # DropGen main.py: F.dropout3d(inputs, p, training=True), image channel included, x 1 / (1 - p)
            combined = F.dropout3d(combined, p=self.dropout, training=True) if combined.ndim == 5 else \
                F.dropout2d(combined, p=self.dropout, training=True)
        return combined

    def forward(self, x: torch.Tensor):
        return self.network(self.network_input(x))

    def pop_feature_seconds(self) -> Dict[str, tuple]:
        """{"train": (seconds, calls), "eval": (seconds, calls)} since the last call; resets the counters."""
        out = {"train": (self._seconds[True], self._calls[True]), "eval": (self._seconds[False], self._calls[False])}
        self._seconds, self._calls = {True: 0.0, False: 0.0}, {True: 0, False: 0}
        return out
