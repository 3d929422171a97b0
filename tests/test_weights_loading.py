"""Loader against published checkpoint layouts (random tensors), safety and error reporting."""
import os
import random

import numpy as np
import pytest
import torch

from conftest import LAYOUTS, published_checkpoint_from_layout, random_state_dict_from_layout
from nnfm.errors import (ChannelMismatchError, CheckpointCorruptError, CheckpointMismatchError,
                         UnsafeCheckpointError, WeightsUnavailableError, WrongCheckpointFamilyError)
from nnfm.networks import AnatomixSegmentationNetwork, AnatomixUNet
from nnfm.weights import available_weights, get_weights_entry, load_pretrained
from nnfm.weights.families import detect_family

ANATOMIX = LAYOUTS / "anatomix_unet.json"
# the published layout of every registered weights file and its family (WeightsEntry.layout)
PUBLISHED = {e.layout: e.family for e in map(get_weights_entry, available_weights()) if e.layout}


def _save(tmp_path, obj, name="ckpt.pth"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def _one_value_per_tensor(obj):
    """Each tensor as its first value broadcast to its shape (stride 0, as conftest's huge tensors): for tests that
    read keys and shapes only, the file stays small (ResEnc-L's layout is 0.4 GB otherwise)."""
    if isinstance(obj, dict):
        return {k: _one_value_per_tensor(v) for k, v in obj.items()}
    if isinstance(obj, torch.Tensor) and obj.numel():
        return obj.flatten()[:1].reshape([1] * obj.dim()).expand(obj.shape)
    return obj


def test_published_anatomix_layout_loads_strictly_with_equal_values(tmp_path):
    state = random_state_dict_from_layout(ANATOMIX)
    net = AnatomixUNet()
    report = load_pretrained(net, _save(tmp_path, state))
    assert report.ok and len(report.loaded) == 115 and not report.adapted
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("wrap", ["_orig_mod.", "module.", "nnunet", "module+nnunet"])
def test_wrappers_are_unwrapped(tmp_path, wrap):
    state = random_state_dict_from_layout(ANATOMIX)
    prefix = {"_orig_mod.": "_orig_mod.", "module.": "module.", "module+nnunet": "module."}.get(wrap)
    if prefix:
        state = {prefix + k: v for k, v in state.items()}
    if "nnunet" in wrap:
        state = {"network_weights": state, "optimizer_state": {"lr": 0.01}, "current_epoch": 3,
                 "_best_ema": np.float64(0.5), "trainer_name": "nnFMTrainer"}
    report = load_pretrained(AnatomixUNet(), _save(tmp_path, state))
    assert report.ok and report.unwrapped


def test_full_nnfm_network_checkpoint_loads_encoder_and_reports_dropped_heads(tmp_path):
    donor = AnatomixSegmentationNetwork(1, 3)
    report = load_pretrained(AnatomixUNet(), _save(tmp_path, {"network_weights": donor.state_dict()}))
    assert len(report.loaded) == 115
    assert report.intentionally_dropped and all(k.startswith("decoder.") for k in report.intentionally_dropped)


def test_one_channel_stem_adapts_to_four_channels_with_same_response(tmp_path):
    state = random_state_dict_from_layout(ANATOMIX)
    original = AnatomixUNet()
    original.load_state_dict(state)
    adapted = AnatomixUNet(in_channels=4)
    report = load_pretrained(adapted, _save(tmp_path, state))
    assert report.adapted == {"model.0.weight": "1 -> 4 (repeat / 4)"}
    x = torch.rand(1, 1, 32, 32, 32)
    original.eval(), adapted.eval()
    assert torch.allclose(original(x), adapted(x.repeat(1, 4, 1, 1, 1)), atol=1e-5)


def test_stem_channels_that_cannot_be_mapped_are_refused(tmp_path):
    state = random_state_dict_from_layout(ANATOMIX)
    state["model.0.weight"] = torch.randn(16, 2, 3, 3, 3)
    with pytest.raises(ChannelMismatchError, match="2 input channel.*dataset has 3.*nnFMTrainer_scratch"):
        load_pretrained(AnatomixUNet(in_channels=3), _save(tmp_path, state))
    with pytest.raises(ChannelMismatchError):
        load_pretrained(AnatomixUNet(in_channels=2), _save(tmp_path, random_state_dict_from_layout(ANATOMIX)),
                        adapt_input_channels=False)


@pytest.mark.parametrize("layout,family", sorted((l, f) for l, f in PUBLISHED.items() if f != "anatomix_unet"))
def test_foreign_families_are_detected_and_refused_by_the_unet(tmp_path, layout, family):
    path = _save(tmp_path, _one_value_per_tensor(published_checkpoint_from_layout(LAYOUTS / layout)))
    from nnfm.weights.checkpoint_io import read_state_dict
    assert detect_family(read_state_dict(path)[0]) == family
    with pytest.raises(WrongCheckpointFamilyError, match=f"'{family}' checkpoint.*needs 'anatomix_unet'"):
        load_pretrained(AnatomixUNet(), path)


def test_shape_mismatch_and_missing_keys_are_listed(tmp_path):
    state = random_state_dict_from_layout(ANATOMIX)
    state["model.38.weight"] = torch.zeros(128, 300, 3, 3, 3)
    del state["model.65.weight"]
    with pytest.raises(CheckpointMismatchError) as error:
        load_pretrained(AnatomixUNet(), _save(tmp_path, state))
    assert "model.38.weight: [128, 300, 3, 3, 3] vs [128, 384, 3, 3, 3]" in str(error.value)
    assert "missing from the checkpoint (1)" in str(error.value) and "model.65.weight" in str(error.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="nope.pth does not exist"):
        load_pretrained(AnatomixUNet(), tmp_path / "nope.pth")
    with pytest.raises(WeightsUnavailableError, match="Registered: .*anatomix"):
        load_pretrained(AnatomixUNet(), "no_such_encoder")


@pytest.mark.parametrize("damage", ["truncated", "empty"] + [f"random_bytes_{seed}" for seed in range(8)])
def test_corrupt_files_are_named(tmp_path, damage):
    path = _save(tmp_path, random_state_dict_from_layout(ANATOMIX))
    data = path.read_bytes()
    if damage.startswith("random_bytes"):
        data = random.Random(int(damage.rsplit("_", 1)[1])).randbytes(4096)
    path.write_bytes({"truncated": data[: len(data) // 2], "empty": b""}.get(damage, data))
    with pytest.raises(CheckpointCorruptError, match="truncated or corrupt"):
        load_pretrained(AnatomixUNet(), path)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    state = random_state_dict_from_layout(ANATOMIX)
    state["extra"] = _Payload(marker)
    path = _save(tmp_path, state)
    with pytest.raises(UnsafeCheckpointError, match="never executes code"):
        load_pretrained(AnatomixUNet(), path)
    assert not marker.exists()


def test_safetensors_round_trip(tmp_path):
    from safetensors.torch import save_file
    state = random_state_dict_from_layout(ANATOMIX)
    path = tmp_path / "anatomix.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    net = AnatomixUNet()
    assert load_pretrained(net, path).ok
    assert torch.equal(net.state_dict()["model.65.weight"], state["model.65.weight"])
