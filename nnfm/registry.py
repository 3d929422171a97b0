"""The encoder registry: one record per encoder, registered beside its network (as timm's ``@register_model``).

Everything that knows which encoders exist reads this table: ``nnFM_plan_and_preprocess -e`` (choices,
planner, configuration, the trainer it suggests), the planners (preset kwargs, default weights), the
trainers (which encoder they build; a plans file of another encoder is refused), the benchmark's trainer
table and the documentation's encoder table (``python -m nnfm.registry --markdown``).

A network module registers its encoders at import time; :func:`encoders` imports every module of
``nnfm.networks`` first, so a new encoder needs no edit here (documentation/design.md, "Adding an encoder").
"""
import argparse
import importlib
import pkgutil
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Dict, List, Mapping, Optional, Tuple

from nnfm.errors import ConfigurationError

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
    """
    name: str
    network_class: str
    network_kwargs: Mapping
    configuration: str
    planner: str
    trainer: str
    families: Tuple[str, ...]
    weights: Optional[str]
    input_convention: str
    recipe: str
    token_stride: int
    min_axis: int
    description: str
    license: str
    status: str
    scratch_trainer: Optional[str] = None
    # where a table should not show the encoder as a user-facing choice (test-sized presets)
    tiny: bool = False
    extra: Mapping = field(default_factory=dict)

    def __post_init__(self):
        if self.configuration not in CONFIGURATIONS:
            raise ValueError(f"{self.name}: configuration must be one of {CONFIGURATIONS}, got {self.configuration!r}")
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
_LOADED = False


def register_encoder(entry: EncoderEntry) -> EncoderEntry:
    """Add ``entry``; a second, different entry under the same name is an error (two modules disagree)."""
    old = _ENCODERS.get(entry.name)
    if old is not None and old != entry:
        raise ValueError(f"Encoder {entry.name!r} is registered twice with different records "
                         f"({old.network_class} and {entry.network_class}).")
    _ENCODERS[entry.name] = entry
    return entry


def _load_network_modules() -> None:
    """Import every ``nnfm.networks`` module once: each registers the encoders defined beside its network."""
    global _LOADED
    if _LOADED:
        return
    import nnfm.networks as package

    for module in sorted(m.name for m in pkgutil.iter_modules(package.__path__)):
        importlib.import_module(f"{package.__name__}.{module}")
    _LOADED = True


def encoders(configuration: Optional[str] = None, include_tiny: bool = True) -> List[EncoderEntry]:
    """All registered encoders (sorted by name), optionally of one nnU-Net configuration."""
    _load_network_modules()
    return [e for _, e in sorted(_ENCODERS.items())
            if (configuration is None or e.configuration == configuration) and (include_tiny or not e.tiny)]


def encoder_names(configuration: Optional[str] = None) -> List[str]:
    return [e.name for e in encoders(configuration)]


def get_encoder(name: str) -> EncoderEntry:
    """The record of ``name``; ConfigurationError naming the registered encoders otherwise."""
    _load_network_modules()
    if name not in _ENCODERS:
        raise ConfigurationError(f"Unknown encoder {name!r}; registered encoders: {', '.join(encoder_names())} "
                                 f"(nnFM_plan_and_preprocess -e NAME).")
    return _ENCODERS[name]


def encoder_of_plans_name(plans_name: str) -> Optional[str]:
    """``nnFMPlans_<encoder>`` -> encoder name (None for other plans, e.g. nnUNetPlans)."""
    prefix = "nnFMPlans_"
    if plans_name.startswith(prefix) and plans_name[len(prefix):] in encoder_names():
        return plans_name[len(prefix):]
    return None


def encoder_table_markdown(include_tiny: bool = False) -> str:
    """The documentation's encoder table, generated from the registry (README.md embeds it verbatim)."""
    rows = ["| `-e` encoder | configuration | trainer | checkpoint families | default weights | input | "
            "fine-tuning recipe | licence of the weights | status |",
            "|---|---|---|---|---|---|---|---|---|"]
    for e in encoders(include_tiny=include_tiny):
        rows.append(f"| `{e.name}` | {e.configuration} | `{e.trainer}` | {', '.join(e.families) or '-'} | "
                    f"{e.weights or 'random'} | {e.input_convention} | {e.recipe} | {e.license} | {e.status} |")
    return "\n".join(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="List nnFM's registered encoders.")
    parser.add_argument("--markdown", action="store_true", help="print the documentation's encoder table")
    args = parser.parse_args(argv)
    if args.markdown:
        print(encoder_table_markdown())
        return
    for e in encoders():
        print(f"{e.name:22s} {e.configuration:10s} {e.trainer:28s} weights: {e.weights or 'random'}")


if __name__ == "__main__":
    # run as ``python -m nnfm.registry``: use the imported module, whose table the network modules fill
    from nnfm.registry import main as registry_main
    registry_main()
