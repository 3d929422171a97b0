"""nnFM's shipped weights (issue 12): they load offline into the network, and their provenance is consistent with
the benchmark's held-out test set."""
import json

import pytest

from conftest import HIPPOCAMPUS
from nnfm.benchmark.data import draw_cases, msd_case_ids
from nnfm.networks.plainconv_segmentation import PLAINCONV_TOPOLOGY, PlainConvSegmentationNetwork
from nnfm.networks.segmentation_unet import AnatomixSegmentationNetwork
from nnfm.registry import get_encoder
from nnfm.weights import load_pretrained, pretrained_target, resolve_checkpoint
from nnfm.weights.registry import embedded_path, embedded_weights, get_weights_entry

# checkpoint family -> the module an embedded file of that family loads into (3 classes: not the file's own)
TARGETS = {"anatomix_unet": lambda: AnatomixSegmentationNetwork(1, 3).encoder,
           "nnunet_plainconv": lambda: pretrained_target(PlainConvSegmentationNetwork(1, 3, True, **PLAINCONV_TOPOLOGY))}

NAME = "anatomix_mae_hippocampus"


def _provenance(name: str) -> dict:
    """The JSON that python -m nnfm.weights.embed wrote beside an embedded weights file."""
    return json.loads(embedded_path(get_weights_entry(name)).with_suffix(".json").read_text())


@pytest.fixture(scope="module")
def provenance() -> dict:
    return _provenance(NAME)


@pytest.mark.parametrize("name", [e.name for e in embedded_weights()])
def test_every_embedded_weights_file_loads_strictly_into_its_network_offline(name):
    entry = get_weights_entry(name)
    facts = _provenance(name)
    path, sha = resolve_checkpoint(name)
    assert sha == entry.sha256 == facts["sha256"] and path == embedded_path(entry)
    report = load_pretrained(TARGETS[entry.family](), name, family=(entry.family,))
    assert report.family == entry.family and report.ok
    assert not report.missing and not report.unexpected and not report.shape_mismatched
    # every stored tensor (aliases, e.g. DNA's all_modules.0, are the same tensors under a second name) is loaded
    # or dropped on purpose (a PlainConvUNet file's segmentation layers: the dataset's classes are new)
    assert len(report.loaded) + len(report.intentionally_dropped) == facts["tensors"] + facts.get("aliases", 0)
    assert all(".seg_layers." in k or k.startswith("decoder.encoder.") for k in report.intentionally_dropped)
    # what a user needs to trust a shipped file: how it was made, on what, for how long, under which licence
    assert {"command", "dataset", "steps", "license"} <= set(facts) and entry.license


def test_nnfms_pretraining_results_are_shipped():
    assert {"anatomix_mae_hippocampus", "anatomix_synth_nnfm", "plainconv_unet_synth_nnfm"} <= \
        {e.name for e in embedded_weights()}


def test_provenance_names_disjoint_pretraining_and_held_out_cases_as_the_benchmark_draws_them(provenance):
    seen, held_out = set(provenance["pretrained_on_cases"]), set(provenance["held_out_cases"])
    assert (len(seen), len(held_out)) == (160, 40) and not seen & held_out
    # nnFM_benchmark --test-cases 40 (case seed 0) holds out exactly these cases
    assert draw_cases(msd_case_ids(HIPPOCAMPUS), 40, None, 0) == (sorted(seen), sorted(held_out))


def test_the_defaults_are_embedded_and_the_demo_tests_on_cases_no_shipped_weights_saw():
    from nnfm import demo
    # nnFM's default (no -e: nnU-Net's own plans from the plainconv_unet weights) and the anatomix encoder's
    plans, trainer, default = demo.demo_setup()
    assert (plans, trainer, default) == ("nnUNetPlans", "nnFMTrainer_nnUNetPlans", "plainconv_unet_synth_nnfm")
    for weights in (default, get_encoder("anatomix").weights):
        assert get_weights_entry(weights).embedded
    # the demo's draw (the arguments it gives prepare_msd) must stay inside every shipped file's held-out cases,
    # otherwise its "never seen" Dice would be measured on images some default was pretrained on
    _, demo_test = draw_cases(msd_case_ids(HIPPOCAMPUS), *demo.case_draw())
    assert len(demo_test) == demo.TEST_CASES
    for entry in embedded_weights():
        facts = _provenance(entry.name)
        assert not set(demo_test) & set(facts.get("pretrained_on_cases", [])), entry.name
        if "pretrained_on_cases" in facts:
            assert set(demo_test) <= set(facts["held_out_cases"])


@pytest.mark.parametrize("name", ["anatomix_synth_nnfm", "plainconv_unet_synth_nnfm"])
def test_the_synthetic_weights_saw_no_real_case(name):
    facts = _provenance(name)
    assert "pretrained_on_cases" not in facts and facts["dataset"].startswith("none: synthetic")


def test_an_embedded_nnunet_state_dict_stores_each_tensor_once_and_reads_back_every_name(tmp_path):
    """DNA's networks name one tensor several times (all_modules.0, decoder.encoder.*); stored once per tensor the
    fp16 PlainConvUNet file is a third of the size, and reading it gives nnU-Net's full state dict back."""
    import torch

    from nnfm.weights.checkpoint_io import read_state_dict
    from nnfm.weights.embed import embed
    torch.manual_seed(0)
    network = PlainConvSegmentationNetwork(1, 3, True, **dict(PLAINCONV_TOPOLOGY, features_per_stage=[4, 8, 8, 8, 8]))
    state = network.state_dict()
    source = tmp_path / "source.pth"
    torch.save({"state_dict": state, "nnfm_input_convention": "zscore"}, source)
    record = embed(source, "tiny", {"steps": 0}, tmp_path)
    unique = {v.untyped_storage().data_ptr() for v in state.values()}
    assert record["tensors"] == len(unique) < len(state) and record["aliases"] == len(state) - len(unique)
    read, _ = read_state_dict(tmp_path / "tiny.safetensors")
    assert set(read) == set(state)
    for key, value in state.items():
        assert torch.allclose(read[key].float(), value, rtol=1e-3, atol=1e-4), key
    alias = "encoder.stages.0.0.convs.0.all_modules.0.weight"
    assert read[alias] is read["encoder.stages.0.0.convs.0.conv.weight"]


@pytest.mark.parametrize("record", [{"nnfm_transfer": ["encoder.stem.", "encoder.stages."]},
                                    {"nnssl_adaptation_plan": {"key_to_encoder": "encoder.stages",
                                                               "key_to_stem": "encoder.stem"}}])
def test_an_embedded_mae_file_keeps_its_encoder_only_rule(record, tmp_path):
    """An MAE pretraining file (nnFM's record or nnssl's plan) transfers only its stem and encoder; embedded as fp16
    safetensors it said nothing, and its reconstruction decoder was shape-fitted into nnU-Net's network."""
    import torch

    from nnfm.weights.checkpoint_io import read_checkpoint
    from nnfm.weights.embed import embed
    from nnfm.weights.shape_fit import load_fitting
    from nnfm.weights.transfer import transfer_prefixes
    kwargs = dict(PLAINCONV_TOPOLOGY, features_per_stage=[4, 8, 8, 8, 8])
    source = tmp_path / "mae.pth"
    torch.save(dict(record, state_dict=PlainConvSegmentationNetwork(1, 1, False, **kwargs).state_dict(),
                    nnfm_input_convention="zscore"), source)
    embed(source, "mae", {"steps": 0}, tmp_path)
    embedded = tmp_path / "mae.safetensors"
    assert transfer_prefixes(read_checkpoint(embedded)) == ("encoder.stem.", "encoder.stages.")
    report = load_fitting(PlainConvSegmentationNetwork(1, 3, True, **kwargs), embedded, "sha")
    decoder = "decoder.stages.0.convs.0.conv.weight"
    assert decoder in report.initialised and "reconstruction" in report.initialised[decoder]
    assert report.loaded and all(k.startswith("encoder.") for k in report.loaded)
