"""Checkpoint families (nnfm/weights/families.py) against the published layouts the weights registry names.

Every registered weights file names its layout (``WeightsEntry.layout``, a file of ../shared/checkpoint_layouts),
so a new family or weights entry is tested here without editing a list: each family is detected from its own
layouts, and wherever two families' detections take one layout, the order between them is declared
(``detect_before``) instead of left to chance.
"""
import functools
import re

import pytest

import nnfm.weights.families as family_records
from conftest import LAYOUTS, published_checkpoint_from_layout
from nnfm.errors import WrongCheckpointFamilyError
from nnfm.registry import encoders
from nnfm.weights import available_weights, check_weights_source, get_weights_entry
from nnfm.weights.checkpoint_io import unwrap_state_dict
from nnfm.weights.families import (NNUNET_NETWORK_ENCODERS, NNUNET_PLANS_COMMAND, detect_family, families,
                                   fit_command, get_family, use_of)

# layout -> family of every registered weights file that names one
PUBLISHED = {e.layout: e.family for e in map(get_weights_entry, available_weights()) if e.layout}
# layouts of files no registry entry describes: an nnU-Net checkpoint of MedDINOv3's own segmentation network
# (Primus_Multiscale), which its authors do not publish (self-trained models only)
UNREGISTERED = {"meddinov3_primus_multiscale_nnunet.json": "meddinov3_primus_nnunet"}
LAYOUT_FAMILY = {**PUBLISHED, **UNREGISTERED}


@functools.lru_cache(maxsize=None)
def _detections(layout: str):
    """(detected family, every family whose ``detect`` takes the layout) for random tensors of its shapes, unwrapped
    as ``load_pretrained`` unwraps the file. Cached: a layout is generated once per session (ResEnc-L: 6 s)."""
    state = unwrap_state_dict(published_checkpoint_from_layout(LAYOUTS / layout))[0]
    keys = set(state)
    return detect_family(state), tuple(f.name for f in families() if f.detect(keys, state))


def _declared_after(name: str) -> set:
    """Every family ``name`` is tried before, directly or through others' ``detect_before``."""
    found, todo = set(), [name]
    while todo:
        for later in get_family(todo.pop()).detect_before:
            if later not in found and get_family(later) is not None:
                found.add(later)
                todo.append(later)
    return found


def test_every_registered_weights_file_is_of_a_loadable_family():
    for name in available_weights():
        family = get_family(get_weights_entry(name).family)
        assert family is not None and family.filter is not None, name


@pytest.mark.parametrize("family", sorted(f.name for f in families()))
def test_every_family_is_detected_from_its_own_published_layouts(family):
    layouts = sorted(layout for layout, of in LAYOUT_FAMILY.items() if of == family)
    if not layouts:
        pytest.skip(f"no published layout of {family} (name it in its weights' registry entry: WeightsEntry.layout)")
    for layout in layouts:
        assert _detections(layout)[0] == family, layout


def test_detection_order_is_declared_wherever_it_matters():
    order = [f.name for f in families()]
    for family in families():
        for later in family.detect_before:
            assert get_family(later) is not None, f"{family.name}: detect_before names no family ({later!r})"
            assert order.index(family.name) < order.index(later), (family.name, later)
    for layout, family in LAYOUT_FAMILY.items():
        taken_by = set(_detections(layout)[1])
        assert family in taken_by, layout
        # another family that takes this layout must come later, by declaration (not by name or import order)
        undeclared = taken_by - {family} - _declared_after(family)
        assert not undeclared, (f"{sorted(undeclared)} also detect {layout} ({family}): declare "
                                f"detect_before={tuple(sorted(undeclared))} in {family}'s record")
    # and each declaration is needed: the later family's detection takes a published layout of the earlier one
    for family in families():
        layouts = [layout for layout, of in LAYOUT_FAMILY.items() if of == family.name]
        for later in family.detect_before if layouts else ():
            assert any(later in _detections(layout)[1] for layout in layouts), \
                f"{family.name} is declared before {later}, whose detection takes none of {layouts}"


# "-e NAME [and train] with -tr TRAINER" in a family's derived use text (fit_command); registry names are lower case,
# the placeholder of several choices ("-e ENCODER") is not
_COMMAND = re.compile(r"-e ([a-z0-9_]+) (?:and train )?with -tr (\w+)")


def _loaders(family: str) -> set:
    """(encoder, trainer) of every user-facing registered encoder whose entry lists ``family``."""
    return {(e.name, e.trainer) for e in encoders(include_tiny=False) if family in e.families}


@pytest.mark.parametrize("family", sorted(f.name for f in families() if f.filter is not None))
def test_what_fits_a_family_names_exactly_the_encoders_whose_registry_entries_load_it(family):
    """Issue 26 (each fact once): which encoder and trainer load a family is the encoder registry's fact
    (EncoderEntry.families); the wrong-family errors derive it from there."""
    loaders = _loaders(family)  # loads the registry, which installs its lookup (nnfm/registry.py)
    assert loaders, f"no user-facing encoder lists {family}: a wrong-family error could name no command"
    text = use_of(family)
    assert text.startswith(get_family(family).description)
    pairs = _COMMAND.findall(text)
    assert sorted(pairs) == sorted(loaders), text  # each once, none missing, no tiny one
    assert set(re.findall(r"-e ([a-z0-9_]+)", text)) == {name for name, _ in loaders}, text
    # files of nnU-Net's own networks also go into nnU-Net's own plans (nnFM's default), named first
    nnunet_network = any(name in NNUNET_NETWORK_ENCODERS.values() for name, _ in loaders)
    default = {"nnFMTrainer_nnUNetPlans"} if nnunet_network else set()
    assert set(re.findall(r"nnFMTrainer\w*", text)) == {trainer for _, trainer in loaders} | default, text
    assert (NNUNET_PLANS_COMMAND in text) == bool(default), text


def test_no_family_record_names_a_trainer_or_a_command():
    for family in families():
        for spelled in ("nnFMTrainer", "-tr ", "-e ", "nnFM_plan_and_preprocess"):
            assert spelled not in family.description, (family.name, family.description)


def test_without_the_encoder_registry_the_text_says_where_to_find_the_encoder(monkeypatch):
    monkeypatch.setattr(family_records, "_FAMILY_ENCODERS", None)  # a process that never loaded nnfm.registry
    text = use_of("nnssl_resenc")
    assert text.startswith(get_family("nnssl_resenc").description)
    assert "-e ENCODER" in text and "'nnssl_resenc'" in text and "python -m nnfm.registry --markdown" in text


def test_a_registered_name_of_another_family_names_the_encoder_and_trainer_it_fits():
    (name, trainer), = _loaders("lvmmed_resnet50")
    anatomix = next(e for e in encoders() if e.name == "anatomix")
    with pytest.raises(WrongCheckpointFamilyError, match=re.escape(
            f"or, to use these weights, plan with nnFM_plan_and_preprocess -d ID -e {name} and train with -tr "
            f"{trainer}.") + "$"):
        check_weights_source("lvmmed_resnet50", anatomix.families)
    assert fit_command("lvmmed_resnet50").endswith(f"-e {name} and train with -tr {trainer}")


def test_families_of_the_same_layout_name_registered_families_that_detect_each_others_files():
    """``same_layout`` lets the loading network's family decide (nnfm/weights/families.py detect_family): only for
    families that really cannot be told apart, i.e. each one's detection takes the other's published layouts."""
    for family in families():
        for other in family.same_layout:
            assert get_family(other) is not None, f"{family.name}: same_layout names no family ({other!r})"
            for layout in [layout for layout, of in LAYOUT_FAMILY.items() if of in (family.name, other)]:
                assert {family.name, other} <= set(_detections(layout)[1]), (family.name, other, layout)
