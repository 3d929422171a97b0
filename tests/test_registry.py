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
from nnfm.weights import get_weights_entry, load_pretrained
from nnfm.weights.families import get_family

# the published layout of each registry weights name (../shared/checkpoint_layouts)
LAYOUT_OF_WEIGHTS = {"anatomix": "anatomix_unet.json", "anatomix_mae_hippocampus": "anatomix_unet.json",
                     "anatomix_synth_nnfm": "anatomix_unet.json",
                     "dinov3_vits16": "dinov3_vits16.json",
                     "dinov3_vitb16": "dinov3_vitb16.json", "meddinov3_vitb16": "meddinov3_vitb16.json",
                     "primus_m_openmind_mae": "nnssl_primus_m.json"}
LAYOUT_OF_WEIGHTS["anatomix-dev"] = "anatomix_dev_unet.json"
LAYOUT_OF_WEIGHTS["anatomix-dev-vit"] = "anatomix_dev_vit.json"
LAYOUT_OF_WEIGHTS.update({"resenc_l_openmind_mae": "nnssl_resenc_l.json", "lvmmed_resnet50": "lvmmed_resnet50.json"})
LAYOUT_OF_WEIGHTS["drasclr_copdgene"] = "drasclr_encoder.json"
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
        assert f"{cls.network_class.__module__}.{cls.network_class.__qualname__}" == entry.network_class
    assert entry.families and all(get_family(f) is not None and get_family(f).filter for f in entry.families)
    if entry.weights is not None:
        weights = get_weights_entry(entry.weights)
        assert weights is not None and weights.family in entry.families, entry.weights
    network = _build(entry, meta=True)
    assert sum(p.numel() for p in network.parameters()) > 0


@pytest.mark.parametrize("name", [e.name for e in encoders() if e.weights is not None])
def test_every_encoders_default_weights_layout_loads_strictly(name, tmp_path):
    entry = get_encoder(name)
    assert entry.weights in LAYOUT_OF_WEIGHTS, f"add the published layout of {entry.weights!r} to this test"
    path = tmp_path / "published.pth"
    torch.save(published_checkpoint_from_layout(LAYOUTS / LAYOUT_OF_WEIGHTS[entry.weights]), path)
    network = _build(entry, input_channels=1)
    report = load_pretrained(network.encoder, path, family=entry.families)
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


def test_unknown_encoder_names_the_registered_ones():
    with pytest.raises(ConfigurationError, match="registered encoders: .*anatomix"):
        get_encoder("no_such_encoder")


def test_readme_encoder_table_is_the_registrys():
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert encoder_table_markdown() in readme, "regenerate with: python -m nnfm.registry --markdown"
