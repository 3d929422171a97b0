"""The encoder registry: every registered encoder plans, builds and strictly loads its published layout.

A new encoder registers one entry (nnfm/registry.py); this file makes it prove, without downloads, that its
network builds from the entry's plain kwargs and that its default weights' published layout
(``../shared/checkpoint_layouts``) loads into it with every key accounted for.
"""
import pydoc

import pytest
import torch

from conftest import LAYOUTS, published_checkpoint_from_layout
from nnfm.errors import ConfigurationError
from nnfm.registry import encoder_names, encoder_table_markdown, encoders, get_encoder
from nnfm.weights import get_weights_entry, load_pretrained, pretrained_target
from nnfm.weights.families import get_family
from nnfm.weights.registry import embedded_path

# an input shape the encoder accepts at its published size (ViTs: the pretraining grid)
SHAPE_3D = {"primus_m": [160, 160, 160]}


def _build(entry, input_channels: int = 1, num_classes: int = 3, meta: bool = False):
    kwargs = entry.kwargs()
    if entry.name in SHAPE_3D or "input_shape" in pydoc.locate(entry.network_class).__init__.__code__.co_varnames:
        kwargs["input_shape"] = SHAPE_3D.get(entry.name, [32, 32, 32])
    cls = pydoc.locate(entry.network_class)
    if meta:
        with torch.device("meta"):
            return cls(input_channels, num_classes, False, **kwargs)
    return cls(input_channels, num_classes, False, **kwargs)


@pytest.mark.parametrize("name", encoder_names())
def test_every_encoder_entry_is_consistent_with_its_planner_trainer_and_families(name):
    entry = get_encoder(name)
    assert pydoc.locate(entry.network_class) is not None, entry.network_class
    assert pydoc.locate(entry.planner) is not None, entry.planner
    for trainer in filter(None, (entry.trainer, entry.scratch_trainer)):
        cls = pydoc.locate(f"nnfm_trainers.{_module_of(trainer)}.{trainer}")
        assert cls is not None and cls.encoder == name, trainer
        assert cls.network_class() is pydoc.locate(entry.network_class)  # derived from the entry, not restated
    assert entry.families and all(get_family(f) is not None and get_family(f).filter for f in entry.families)
    # the network can be fed its encoder's input convention, and that is what the default weights saw
    assert entry.input_convention.name in pydoc.locate(entry.network_class).INPUT_NORMS
    if entry.weights is not None:
        weights = get_weights_entry(entry.weights)
        assert weights is not None and weights.family in entry.families, entry.weights
        assert weights.input_convention == entry.input_convention.name, entry.weights
    network = _build(entry, meta=True)
    assert sum(p.numel() for p in network.parameters()) > 0


@pytest.mark.parametrize("name", [e.name for e in encoders() if e.weights is not None])
def test_every_encoders_default_weights_layout_loads_strictly(name, tmp_path):
    entry = get_encoder(name)
    weights = get_weights_entry(entry.weights)
    if weights.embedded and not weights.layout:  # nnFM's own file of nnFM's network: the shipped file is the layout
        path = embedded_path(weights)
    else:
        assert weights.layout, f"name the published layout of {entry.weights!r} in its registry entry (WeightsEntry.layout)"
        path = tmp_path / "published.pth"
        torch.save(published_checkpoint_from_layout(LAYOUTS / weights.layout), path)
    network = _build(entry, input_channels=1)
    report = load_pretrained(pretrained_target(network), path, family=entry.families)
    assert report.ok and report.loaded and not report.missing and not report.unexpected
    assert report.family == get_weights_entry(entry.weights).family


def _module_of(trainer: str) -> str:
    import importlib
    import pkgutil

    import nnfm_trainers
    for info in pkgutil.iter_modules(nnfm_trainers.__path__):
        if hasattr(importlib.import_module(f"nnfm_trainers.{info.name}"), trainer):
            return info.name
    raise AssertionError(f"trainer {trainer} not found in nnfm_trainers")


def test_a_trainer_refuses_plans_made_for_another_encoder():
    from types import SimpleNamespace

    from nnfm_trainers.nnfm_vit_trainer_variants import nnFMTrainer_DINOv3_S
    plans_of_base = SimpleNamespace(configuration={"nnfm": {"encoder": "dinov3_vitb16"}},
                                    network_arch_init_kwargs={"vit": "vit_base_patch16_dinov3_qkvb"})
    with pytest.raises(ConfigurationError, match=r"builds encoder 'dinov3_vits16'.*made for encoder 'dinov3_vitb16'"
                                                 r".*-tr nnFMTrainer_DINOv3_B"):
        nnFMTrainer_DINOv3_S.build_network_architecture(None, plans_of_base, 1, 2, False)


def test_an_encoders_trainer_refuses_nnfms_default_plans_and_names_the_trainer_they_were_made_for():
    """nnFM_plan_and_preprocess without -e plans nnU-Net's own network from nnFM's weights; -tr nnFMTrainer on them
    would have trained the anatomix U-Net (padded to its stride) from other weights without a word."""
    from types import SimpleNamespace

    from nnfm_trainers.nnfm_nnunet_plans_trainer import nnFMTrainer_nnUNetPlans
    from nnfm_trainers.nnfm_trainer import nnFMTrainer
    default_plans = SimpleNamespace(configuration={"nnfm": {"encoder": None, "weights": "plainconv_unet_synth_nnfm"}})
    with pytest.raises(ConfigurationError, match=r"nnFM's default.*-tr nnFMTrainer_nnUNetPlans.*-e anatomix"):
        nnFMTrainer.check_planned_encoder(default_plans)
    nnFMTrainer_nnUNetPlans.check_planned_encoder(default_plans)  # what they were made for
    nnFMTrainer.check_planned_encoder(SimpleNamespace(configuration={}))  # nnUNetv2_plan_and_preprocess's plans


def test_unknown_encoder_names_the_registered_ones():
    with pytest.raises(ConfigurationError, match="registered encoders: .*anatomix"):
        get_encoder("no_such_encoder")


def test_readme_encoder_table_is_the_registrys():
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert encoder_table_markdown() in readme, "regenerate with: python -m nnfm.registry --markdown"


def test_every_plugin_trainer_builds_a_registered_encoder_and_restates_nothing_of_its_entry():
    """documentation/design.md, "Adding an encoder": a trainer names its encoder (and a variant its recipe change);
    the network class, recipe numbers, families and weights come from the registry entry, stated once."""
    import importlib
    import inspect
    import pkgutil

    import nnfm_trainers
    from nnfm_trainers.nnfm_trainer import nnFMTrainer

    trainers = set()
    for info in pkgutil.iter_modules(nnfm_trainers.__path__):
        module = importlib.import_module(f"nnfm_trainers.{info.name}")
        trainers |= {c for _, c in inspect.getmembers(module, inspect.isclass)
                     if issubclass(c, nnFMTrainer) and c.__module__ == module.__name__}
    assert len(trainers) > 20
    # the attributes each trainer class once restated (issue 26); derived properties are fine
    restatable = {"network_class", "optimizer_name", "recipe_lr", "recipe_weight_decay", "encoder_lr_by_family",
                  "decoder_lr", "vit_weight_decay", "lr_decay", "head_warmup_fraction", "full_warmup_fraction",
                  "grad_clip", "encoder_lr_multiplier"}
    for cls in trainers:
        # encoder None: nnU-Net's own network from nnU-Net's plans (nnFMTrainer_nnUNetPlans), no preset
        assert cls.encoder is None or get_encoder(cls.encoder).name == cls.encoder, cls.__name__
        restated = {n for n in restatable & set(vars(cls)) if not isinstance(vars(cls)[n], (property, classmethod))}
        assert not restated, (cls.__name__, restated)
        cls.recipe()  # the encoder's recipe with the variant's changes builds
    named = {t for e in encoders() for t in (e.trainer, e.scratch_trainer) if t}
    assert named <= {c.__name__ for c in trainers}
