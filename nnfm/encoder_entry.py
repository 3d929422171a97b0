"""The record of one encoder, and ``register_encoder``: a leaf module that the network modules import to register
the encoders defined beside their networks (as timm's ``@register_model``). Lookups are in nnfm/registry.py."""
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Dict, Mapping, Optional, Tuple

from nnfm.conventions import InputConvention, Recipe

CONFIGURATIONS = ("2d", "3d_fullres")


@dataclass(frozen=True)
class EncoderEntry:
    """One encoder nnFM can plan, build, load and fine-tune.

    ``name`` is what ``-e`` takes and the plans are named after (``nnFMPlans_<name>``).
    ``network_kwargs`` are the plain kwargs the planner writes into the plans' ``arch_kwargs`` (with what it
    plans: patch-dependent shapes, intensity window); the network is ``pydoc.locate(network_class)``.
    ``token_stride`` / ``min_axis``: every patch axis is a multiple of ``token_stride`` and at least ``min_axis``
    voxels. ``families`` are the checkpoint families (nnfm.weights.families) the network loads strictly;
    ``weights`` the registry weights used when neither ``-w`` nor ``nnFM_WEIGHTS`` names any (None: random).
    ``input_convention``: what the encoder's published weights were pretrained on (weights that state another
    convention are planned with theirs, nnfm/conventions.py); ``recipe``: how the authors fine-tune it.
    """
    name: str
    network_class: str
    network_kwargs: Mapping
    configuration: str
    planner: str
    trainer: str
    families: Tuple[str, ...]
    weights: Optional[str]
    input_convention: InputConvention
    recipe: Recipe
    token_stride: int
    min_axis: int
    description: str
    license: str
    status: str
    scratch_trainer: Optional[str] = None
    # where a table should not show the encoder as a user-facing choice (test-sized presets)
    tiny: bool = False
    # train in torch.channels_last_3d on the CPU: a measured property of the network (benchmarks/cpu_profile.py),
    # not a general rule (nnU-Net's instance-norm PlainConvUNet is slower in it)
    cpu_channels_last: bool = False
    extra: Mapping = field(default_factory=dict)

    def __post_init__(self):
        if self.configuration not in CONFIGURATIONS:
            raise ValueError(f"{self.name}: configuration must be one of {CONFIGURATIONS}, got {self.configuration!r}")
        if not isinstance(self.input_convention, InputConvention) or not isinstance(self.recipe, Recipe):
            raise TypeError(f"{self.name}: input_convention and recipe are records (nnfm/conventions.py)")
        object.__setattr__(self, "network_kwargs", MappingProxyType(dict(self.network_kwargs)))
        object.__setattr__(self, "families", tuple(self.families))

    @property
    def plans_name(self) -> str:
        return f"nnFMPlans_{self.name}"

    def kwargs(self) -> dict:
        """A fresh, mutable copy of the preset kwargs."""
        return {k: (dict(v) if isinstance(v, Mapping) else list(v) if isinstance(v, (list, tuple)) else v)
                for k, v in self.network_kwargs.items()}


_ENCODERS: Dict[str, EncoderEntry] = {}


def registered_encoders() -> Tuple[EncoderEntry, ...]:
    """The entries registered so far, without importing any network module (nnfm.registry.encoders() imports them
    all first). For code below the network modules, e.g. a checkpoint adapter running while a network loads."""
    return tuple(_ENCODERS[name] for name in sorted(_ENCODERS))


def register_encoder(entry: EncoderEntry) -> EncoderEntry:
    """Add ``entry``; a second, different entry under the same name is an error (two modules disagree)."""
    old = _ENCODERS.get(entry.name)
    if old is not None and old != entry:
        raise ValueError(f"Encoder {entry.name!r} is registered twice with different records "
                         f"({old.network_class} and {entry.network_class}).")
    _ENCODERS[entry.name] = entry
    return entry
