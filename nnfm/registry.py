"""The encoder registry: lookups over the records that network modules register beside their networks.

Everything that knows which encoders exist reads this table: ``nnFM_plan_and_preprocess -e`` (choices,
planner, configuration, the trainer it suggests), the planners (preset kwargs, input convention, default weights),
the trainers (network, recipe; a plans file of another encoder is refused), ``nnFM_extract_features``, the
benchmark's trainer table and the documentation's encoder table (``python -m nnfm.registry --markdown``).

As timm keeps ``_registry.py`` a leaf, the record and ``register_encoder`` live in the leaf module
nnfm/encoder_entry.py, which the network modules import; this module imports the network modules (once, at the
first lookup) and never the other way round, so there is no import cycle (tests/test_import_structure.py). A new
encoder needs no edit here (documentation/design.md, "Adding an encoder").
"""
import argparse
import importlib
import pkgutil
from typing import List, Optional

from nnfm.encoder_entry import _ENCODERS, EncoderEntry
from nnfm.errors import ConfigurationError

_LOADED = False


def _load_network_modules() -> None:
    """Import every ``nnfm.networks`` module once: each registers the encoders defined beside its network."""
    global _LOADED
    if _LOADED:
        return
    import nnfm.networks as package

    for module in sorted(m.name for m in pkgutil.iter_modules(package.__path__)):
        importlib.import_module(f"{package.__name__}.{module}")
    # the wrong-family errors of nnfm.weights name the encoders that load a file's family from this table; the
    # weights package cannot import this module (the network modules just imported import it), so install it there
    from nnfm.weights.families import set_family_encoders

    set_family_encoders(encoders_loading)
    _LOADED = True


def encoders(configuration: Optional[str] = None, include_tiny: bool = True) -> List[EncoderEntry]:
    """All registered encoders (sorted by name), optionally of one nnU-Net configuration."""
    _load_network_modules()
    return [e for _, e in sorted(_ENCODERS.items())
            if (configuration is None or e.configuration == configuration) and (include_tiny or not e.tiny)]


def encoders_loading(family: str) -> List[EncoderEntry]:
    """The user-facing (not tiny) encoders whose networks load checkpoint family ``family``, sorted by name."""
    return [e for e in encoders(include_tiny=False) if family in e.families]


def encoder_names(configuration: Optional[str] = None) -> List[str]:
    return [e.name for e in encoders(configuration)]


def get_encoder(name: str) -> EncoderEntry:
    """The record of ``name``; ConfigurationError naming the registered encoders otherwise."""
    _load_network_modules()
    if name not in _ENCODERS:
        raise ConfigurationError(f"Unknown encoder {name!r}; registered encoders: {', '.join(encoder_names())} "
                                 f"(nnFM_plan_and_preprocess -e NAME).")
    return _ENCODERS[name]


def encoder_table_markdown(include_tiny: bool = False) -> str:
    """The documentation's encoder table, generated from the registry (README.md embeds it verbatim)."""
    rows = ["| `-e` encoder | configuration | trainer | checkpoint families | default weights | input | "
            "fine-tuning recipe | licence of the weights | status |",
            "|---|---|---|---|---|---|---|---|---|"]
    for e in encoders(include_tiny=include_tiny):
        rows.append(f"| `{e.name}` | {e.configuration} | `{e.trainer}` | {', '.join(e.families) or '-'} | "
                    f"{e.weights or 'random'} | {e.input_convention.summary()} | {e.recipe.summary()} | {e.license} | "
                    f"{e.status} |")
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
