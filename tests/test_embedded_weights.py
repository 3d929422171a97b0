"""nnFM's shipped weights (issue 12): they load offline into the network, and their provenance is consistent with
the benchmark's held-out test set."""
import json

import pytest

from conftest import HIPPOCAMPUS
from nnfm.benchmark.data import draw_cases, msd_case_ids
from nnfm.networks.segmentation_unet import AnatomixSegmentationNetwork
from nnfm.weights import load_pretrained, resolve_checkpoint
from nnfm.weights.registry import embedded_path, embedded_weights, get_weights_entry

NAME = "anatomix_mae_hippocampus"


def _provenance(name: str) -> dict:
    """The JSON that python -m nnfm.weights.embed wrote beside an embedded weights file."""
    return json.loads(embedded_path(get_weights_entry(name)).with_suffix(".json").read_text())


@pytest.fixture(scope="module")
def provenance() -> dict:
    return _provenance(NAME)


@pytest.mark.parametrize("name", [e.name for e in embedded_weights()])
def test_every_embedded_weights_file_loads_strictly_into_the_anatomix_network_offline(name):
    entry = get_weights_entry(name)
    facts = _provenance(name)
    path, sha = resolve_checkpoint(name)
    assert sha == entry.sha256 == facts["sha256"] and path == embedded_path(entry)
    network = AnatomixSegmentationNetwork(1, 3)
    report = load_pretrained(network.encoder, name)
    assert report.family == "anatomix_unet" and report.ok and len(report.loaded) == facts["tensors"]
    assert not report.missing and not report.unexpected
    # what a user needs to trust a shipped file: how it was made, on what, for how long, under which licence
    assert {"command", "dataset", "steps", "license"} <= set(facts) and entry.license


def test_both_of_nnfms_pretraining_results_are_shipped():
    assert {"anatomix_mae_hippocampus", "anatomix_synth_nnfm"} <= {e.name for e in embedded_weights()}


def test_provenance_names_disjoint_pretraining_and_held_out_cases_as_the_benchmark_draws_them(provenance):
    seen, held_out = set(provenance["pretrained_on_cases"]), set(provenance["held_out_cases"])
    assert (len(seen), len(held_out)) == (160, 40) and not seen & held_out
    # nnFM_benchmark --test-cases 40 (case seed 0) holds out exactly these cases
    assert draw_cases(msd_case_ids(HIPPOCAMPUS), 40, None, 0) == (sorted(seen), sorted(held_out))


def test_the_anatomix_default_is_embedded_and_the_demo_tests_on_cases_no_shipped_weights_saw():
    from nnfm import demo
    from nnfm.registry import get_encoder
    default = get_encoder("anatomix").weights
    assert default == demo.DEFAULT_WEIGHTS and get_weights_entry(default).embedded
    # the demo's draw (the arguments it gives prepare_msd) must stay inside every shipped file's held-out cases,
    # otherwise its "never seen" Dice would be measured on images some default was pretrained on
    _, demo_test = draw_cases(msd_case_ids(HIPPOCAMPUS), *demo.case_draw())
    assert len(demo_test) == demo.TEST_CASES
    for entry in embedded_weights():
        facts = _provenance(entry.name)
        assert not set(demo_test) & set(facts.get("pretrained_on_cases", [])), entry.name
        if "pretrained_on_cases" in facts:
            assert set(demo_test) <= set(facts["held_out_cases"])


def test_the_synthetic_weights_saw_no_real_case():
    facts = _provenance("anatomix_synth_nnfm")
    assert "pretrained_on_cases" not in facts and facts["dataset"].startswith("none: synthetic")
