"""LVM-Med ResNet-50 as a 2D encoder: strict load of the published layout (torchvision ResNet-50 without fc),
the same features as torchvision's ResNet-50, grey -> RGB folded into conv1, the licence printed on load, and
2 iterations of nnUNetv2_train + nnUNetv2_predict in nnU-Net's 2d configuration on real Hippocampus MRI."""
import json

import pytest
import torch
import torchvision

from conftest import LAYOUTS, random_state_dict_from_layout, train_and_predict
from nnfm.errors import PatchSizeError
from nnfm.networks.lvmmed_segmentation import INPUT_SCALE, LVMMedSegmentationNetwork
from nnfm.registry import get_encoder
from nnfm.weights import get_weights_entry, load_pretrained

LAYOUT = LAYOUTS / "lvmmed_resnet50.json"


@pytest.fixture(scope="module")
def lvmmed_file(tmp_path_factory):
    state = random_state_dict_from_layout(LAYOUT, seed=3)
    path = tmp_path_factory.mktemp("lvmmed") / "lvmmed_resnet.torch"
    torch.save(state, path)  # a bare state dict, as LVM-Med publishes it
    return path, state


def _torchvision(state):
    reference = torchvision.models.resnet50()
    missing, unexpected = reference.load_state_dict(state, strict=False)
    assert missing == ["fc.weight", "fc.bias"] and not unexpected
    return reference.eval()


def _reference_features(reference, x):
    x = reference.relu(reference.bn1(reference.conv1(x)))
    x = reference.layer1(reference.maxpool(x))
    return reference.layer4(reference.layer3(reference.layer2(x)))


def test_encoder_has_exactly_the_published_keys():
    layout = {k: v["shape"] for k, v in json.loads(LAYOUT.read_text())["keys"].items()}
    with torch.device("meta"):
        network = LVMMedSegmentationNetwork(3, 2)
    assert {k: list(v.shape) for k, v in network.encoder.state_dict().items()} == layout
    assert len(layout) == 318


def test_published_layout_loads_strictly_and_gives_torchvisions_features(lvmmed_file, capsys):
    path, state = lvmmed_file
    network = LVMMedSegmentationNetwork(3, 2).eval()
    report = load_pretrained(network.encoder, path, family=get_encoder("lvmmed_resnet50").families)
    assert report.ok and report.family == "lvmmed_resnet50" and len(report.loaded) == 318
    assert not report.missing and not report.unexpected and not report.intentionally_dropped and not report.adapted
    assert "CC BY-NC-ND 2.0" in capsys.readouterr().out  # the licence is printed whenever the weights load
    x = torch.rand(2, 3, 64, 64) * INPUT_SCALE
    with torch.no_grad():
        assert torch.allclose(network.encoder(x)[-1], _reference_features(_torchvision(state), x), atol=1e-4)


def test_grey_input_is_rgb_replication_folded_into_conv1(lvmmed_file):
    path, _ = lvmmed_file
    rgb, grey = LVMMedSegmentationNetwork(3, 2).eval(), LVMMedSegmentationNetwork(1, 2).eval()
    load_pretrained(rgb.encoder, path, family=("lvmmed_resnet50",))
    report = load_pretrained(grey.encoder, path, family=("lvmmed_resnet50",))
    assert report.adapted == {"conv1.weight": "3 -> 1 (sum)"}
    x = torch.rand(1, 1, 64, 64) * INPUT_SCALE
    with torch.no_grad():
        assert torch.allclose(grey.encoder(x)[-1], rgb.encoder(x.repeat(1, 3, 1, 1))[-1], atol=1e-4)
    two = LVMMedSegmentationNetwork(2, 2)
    assert load_pretrained(two.encoder, path, family=("lvmmed_resnet50",)).adapted == \
        {"conv1.weight": "3 -> 2 (RGB mean)"}


def test_fc_is_dropped_and_missing_batchnorm_counters_are_supplied(lvmmed_file, tmp_path):
    _, state = lvmmed_file
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    state.update({"fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)})
    torch.save(state, tmp_path / "with_fc.pth")
    report = load_pretrained(LVMMedSegmentationNetwork(3, 2).encoder, tmp_path / "with_fc.pth",
                             family=("lvmmed_resnet50",))
    assert set(report.intentionally_dropped) == {"fc.weight", "fc.bias"}
    assert "classification head" in report.intentionally_dropped["fc.weight"]
    assert len([k for k in report.adapted if k.endswith("num_batches_tracked")]) == 53 and not report.missing


def test_an_nnfm_lvmmed_network_checkpoint_gives_its_encoder(tmp_path):
    network = LVMMedSegmentationNetwork(1, 3)
    torch.save({"network_weights": network.state_dict()}, tmp_path / "nnfm.pth")
    report = load_pretrained(LVMMedSegmentationNetwork(1, 5).encoder, tmp_path / "nnfm.pth",
                             family=("lvmmed_resnet50",))
    assert report.family == "lvmmed_resnet50" and not report.missing
    assert all(k.startswith("decoder.") for k in report.intentionally_dropped)


def test_licence_is_in_the_registry_entries():
    assert "CC BY-NC-ND 2.0" in get_weights_entry("lvmmed_resnet50").license
    assert "CC BY-NC-ND 2.0" in get_encoder("lvmmed_resnet50").license


def test_outputs_deep_supervision_and_padding():
    network = LVMMedSegmentationNetwork(1, 3, deep_supervision=True)
    outputs = network(torch.randn(2, 1, 64, 96))
    assert [list(o.shape[2:]) for o in outputs] == [[64, 96], [32, 48], [16, 24], [8, 12], [4, 6]]
    network.decoder.deep_supervision = False
    assert network(torch.randn(2, 1, 50, 35)).shape == (2, 3, 50, 35)  # padded to 64x64, cropped back
    with pytest.raises(PatchSizeError, match="divisible by 32"):
        LVMMedSegmentationNetwork(1, 3, pad_to_stride=False)(torch.randn(2, 1, 50, 64))


@pytest.mark.e2e
def test_lvmmed_weights_train_and_predict_in_nnunets_2d_configuration(lvmmed_file, plan_hippocampus,
                                                                       hippocampus_converted, nnunet_env, tmp_path):
    weights, _ = lvmmed_file
    config = plan_hippocampus("lvmmed_resnet50", "-w", weights)["configurations"]["2d"]
    assert all(p % 32 == 0 for p in config["patch_size"]) and len(config["patch_size"]) == 2
    assert len(config["architecture"]["arch_kwargs"]["input_window"]) == 1

    # no nnFM_WEIGHTS: the trainer loads the file that the plans name (-w)
    run = train_and_predict(hippocampus_converted, nnunet_env, tmp_path, "nnFMTrainer_LVMMed",
                            "nnFMPlans_lvmmed_resnet50", "2d")
    provenance = run["provenance"]
    assert provenance["encoder"] == "lvmmed_resnet50" and provenance["report"]["missing"] == []
    assert provenance["report"]["adapted"] == {"conv1.weight": "3 -> 1 (sum)"}
    assert "CC BY-NC-ND 2.0" in run["log"]
    groups = run["checkpoint"]["optimizer_state"]["param_groups"]
    assert all(g["initial_lr"] == 1e-4 and g["weight_decay"] == 0 and g["lr"] == 1e-4 for g in groups)  # constant
