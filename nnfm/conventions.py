"""What an encoder's weights were fed, and how the authors fine-tune it: two small records, stated once.

An :class:`InputConvention` is a fact of a set of **weights**: the intensities (and grid) the encoder saw while it
was pretrained. Every weights entry (nnfm/weights/registry.py) and every file nnFM writes (pretraining exports,
embedded weights) names its convention; an encoder's registry entry (nnfm/registry.py) names the convention of its
published weights. The planner writes the convention's name into the plans' ``arch_kwargs["input_norm"]``, and the
network applies it inside ``forward``, so training, validation, ``nnUNetv2_predict`` and
``nnFM_extract_features`` all feed the weights what they saw. A network whose plans say one convention refuses
weights of another (nnfm/weights/input_convention.py).

A :class:`Recipe` is a fact of an **encoder**: optimiser, learning rates, schedule, as the authors fine-tune it.
The trainers read it; a trainer variant changes one field (``recipe_changes``). The documentation's encoder table
prints :meth:`Recipe.summary` and :meth:`InputConvention.summary`, so prose and numbers cannot disagree.

This module is a leaf: it imports nothing from nnFM.
"""
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Mapping, Optional, Tuple

OPTIMIZERS = ("Adam", "AdamW", "SGD")
LR_DECAYS = ("cosine", "poly", "constant")


@dataclass(frozen=True)
class InputConvention:
    """The input an encoder's weights were pretrained on.

    ``name`` is what the plans' ``arch_kwargs["input_norm"]`` say. ``planned_normalization``: the nnU-Net
    normalisation scheme the planner plans for every channel (None: nnU-Net's choice per channel, e.g.
    CTNormalization for CT). ``hu_window``: the CT clip in HU; the planner then plans CT channels raw (nnU-Net's
    NoNormalization, no clip to the labelled foreground's percentiles) and the network clips them to it.
    ``output_range``: what the network's input stage maps the window to. ``spacing_mm``: the grid the weights saw
    (None: any). ``source``: the authors' repository and file.
    """
    name: str
    what: str
    source: str
    planned_normalization: Optional[str] = None
    hu_window: Optional[Tuple[float, float]] = None
    output_range: Optional[Tuple[float, float]] = None
    spacing_mm: Optional[Tuple[float, float, float]] = None

    def summary(self) -> str:
        return f"`{self.name}`: {self.what} ({self.source})"


# ---- the conventions nnFM's networks can apply, one record each ------------------------------------------------
WINDOW01 = InputConvention(
    "window01", "planned 0.5/99.5 percentile window -> [0, 1], background 0",
    "neel-dey/anatomix anatomix/segmentation/segmentation_utils.py: MONAI ScaleIntensityd per volume",
    output_range=(0.0, 1.0))
ZSCORE = InputConvention(
    "zscore", "every channel z-scored per image, fed as it is",
    "MIC-DKFZ/nnssl src/nnssl/preprocessing/preprocessors/default_preprocessor.py: normalize per channel",
    planned_normalization="ZScoreNormalization")
NNUNET = InputConvention(
    "nnunet", "nnU-Net's own normalised intensities as they are (grey repeated to RGB for 2D ViTs)",
    "ricklisz/MedDINOv3 nnUNet/.../dinov3/models/primus.py: Primus_Multiscale.forward x.repeat only")
IMAGENET = InputConvention(
    "imagenet", "planned window -> [0, 1] -> ImageNet mean / std, grey repeated to RGB",
    "facebookresearch/dinov3 dinov3/data/transforms.py: make_normalize_transform", output_range=(0.0, 1.0))
HU_WINDOW = InputConvention(
    "hu_window", "raw CT clipped to [-1024, 240] HU -> [-1, 1] (other channels: percentile window -> [-1, 1]), "
    "1 mm isotropic",
    "batmanlab/DrasCLR data/copd_patch.py np.clip(x, -1024, 240) / 632 - 1; preprocess/4_patchify_images.py 1 mm",
    hu_window=(-1024.0, 240.0), output_range=(-1.0, 1.0),
    spacing_mm=(1.0, 1.0, 1.0))
WINDOW255 = InputConvention(
    "window255", "planned window -> [0, 255], grey repeated to RGB, no mean / std",
    "MrGiovanni/LVM-Med dataloader/dataset_ete.py: per-image min-max to [0, 255], cv2 3-channel read",
    output_range=(0.0, 255.0))

CONVENTIONS: Mapping[str, InputConvention] = MappingProxyType(
    {c.name: c for c in (WINDOW01, ZSCORE, NNUNET, IMAGENET, HU_WINDOW, WINDOW255)})


def get_convention(name: str) -> InputConvention:
    """The record named ``name``; ValueError naming the known conventions otherwise."""
    if name not in CONVENTIONS:
        raise ValueError(f"Unknown input convention {name!r}; known: {', '.join(CONVENTIONS)} (nnfm/conventions.py).")
    return CONVENTIONS[name]


@dataclass(frozen=True)
class Recipe:
    """How an encoder is fine-tuned (per nnU-Net epoch; fractions of ``num_epochs``).

    ``lr``: the decoder's (and, unless ``encoder_lr`` names the loaded weights' family, the encoder's) initial lr.
    ``encoder_lr``: checkpoint family -> the pretrained encoder's lr (ViT recipes fine-tune it gently).
    ``scratch_lr``: the lr from random initialisation where the authors give another one.
    ``momentum`` / ``nesterov``: SGD only (nnU-Net: 0.99, Nesterov). ``betas``: Adam / AdamW. ``grad_clip``: max
    gradient norm (None: nnU-Net's 12, which nnFMTrainer keeps). ``head_warmup_fraction``: epochs training the heads
    on a frozen encoder; ``full_warmup_fraction``: epochs warming the whole network up linearly.
    """
    optimizer: str
    lr: float
    weight_decay: float
    lr_decay: str
    source: str
    encoder_lr: Mapping[str, float] = field(default_factory=dict)
    scratch_lr: Optional[float] = None
    momentum: Optional[float] = None
    nesterov: bool = True
    betas: Optional[Tuple[float, float]] = None
    grad_clip: Optional[float] = None
    head_warmup_fraction: float = 0.0
    full_warmup_fraction: float = 0.0
    deep_supervision: bool = True

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"Recipe.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.lr_decay not in LR_DECAYS:
            raise ValueError(f"Recipe.lr_decay must be one of {LR_DECAYS}, got {self.lr_decay!r}")
        if (self.momentum is not None) != (self.optimizer == "SGD"):
            raise ValueError("Recipe.momentum is set for SGD and only for SGD")
        object.__setattr__(self, "encoder_lr", MappingProxyType(dict(self.encoder_lr)))

    def initial_lr(self, pretrained: bool) -> float:
        """The initial lr of the network (the decoder's), with pretrained weights or from random initialisation."""
        return self.lr if pretrained or self.scratch_lr is None else self.scratch_lr

    def with_changes(self, changes: Mapping) -> "Recipe":
        """A copy with ``changes`` (field -> value; a trainer variant's ``recipe_changes``)."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"Unknown Recipe fields {sorted(unknown)}")
        return replace(self, **dict(changes))

    def summary(self) -> str:
        """One line of prose generated from the numbers (README encoder table)."""
        parts = [self.optimizer + (f" (momentum {self.momentum}{', Nesterov' if self.nesterov else ''})"
                                   if self.momentum is not None else "")]
        encoder = sorted(set(self.encoder_lr.values()))
        parts.append(f"lr {self.lr:g}" + (f", pretrained encoder {'/'.join(f'{v:g}' for v in encoder)}"
                                          if encoder else ""))
        if self.scratch_lr is not None:
            parts.append(f"from scratch {self.scratch_lr:g}")
        if self.betas is not None:
            parts.append(f"betas {self.betas[0]:g}/{self.betas[1]:g}")
        parts.append(f"weight decay {self.weight_decay:g}")
        warm = []
        if self.head_warmup_fraction:
            warm.append(f"{self.head_warmup_fraction:.0%} frozen-encoder warm-up")
        if self.full_warmup_fraction:
            warm.append(f"{self.full_warmup_fraction:.0%} linear warm-up")
        parts.append(", ".join(warm + [f"{self.lr_decay} decay"]))
        if self.grad_clip is not None:
            parts.append(f"clip {self.grad_clip:g}")
        if not self.deep_supervision:
            parts.append("no deep supervision")
        return "; ".join(parts) + f" ({self.source})"
