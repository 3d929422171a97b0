import json

import pytest
import torch

from nnfm.errors import PatchSizeError
from nnfm.networks import AnatomixSegmentationNetwork, AnatomixUNet
from nnfm.networks.intensity_window import IntensityWindow

from conftest import LAYOUTS, random_state_dict_from_layout


def test_anatomix_unet_matches_published_layout_exactly():
    layout = json.loads((LAYOUTS / "anatomix_unet.json").read_text())
    state = AnatomixUNet().state_dict()
    assert len(state) == len(layout["keys"]) == 115
    assert {k: list(v.shape) for k, v in state.items()} == {k: v["shape"] for k, v in layout["keys"].items()}
    assert sum(p.numel() for p in AnatomixUNet().parameters()) == 5899344
    AnatomixUNet().load_state_dict(random_state_dict_from_layout(LAYOUTS / "anatomix_unet.json"), strict=True)


def test_skip_connections_concatenate_skip_before_upsampled_features():
    # published order is cat(skip, upsampled): a network with the skip zeroed must differ from the full one
    net = AnatomixUNet().eval()
    x = torch.randn(1, 1, 32, 32, 32)
    out, levels = net.forward_with_levels(x)
    assert out.shape == (1, 16, 32, 32, 32)
    assert [lvl.shape[1] for lvl in levels] == [128, 64, 32, 16]
    first_decoder_conv = net.model[net.upsample_at[0] + 1]
    assert first_decoder_conv.in_channels == 128 + 256


def test_deep_supervision_outputs_match_nnunet_scales_and_toggle():
    net = AnatomixSegmentationNetwork(2, 3, deep_supervision=True)
    outputs = net(torch.randn(2, 2, 32, 48, 64))
    assert [tuple(o.shape) for o in outputs] == [(2, 3, 32, 48, 64), (2, 3, 16, 24, 32), (2, 3, 8, 12, 16),
                                                 (2, 3, 4, 6, 8)]
    net.decoder.deep_supervision = False  # what nnU-Net's set_deep_supervision_enabled does
    assert net(torch.randn(1, 2, 32, 32, 32)).shape == (1, 3, 32, 32, 32)


@pytest.mark.parametrize("shape", [(40, 56, 40), (17, 33, 50), (36, 51, 35)])
def test_sizes_not_divisible_by_16_are_padded_and_cropped_back(shape):
    net = AnatomixSegmentationNetwork(1, 3, deep_supervision=True).eval()
    outputs = net(torch.randn(1, 1, *shape))
    for output, scale in zip(outputs, (1, 0.5, 0.25, 0.125)):
        assert list(output.shape[2:]) == [max(1, round(s * scale)) for s in shape]


def test_padding_equals_explicit_zero_padding_after_the_window():
    # padding happens after the intensity window (0 = darkest); a raw value below the window's
    # lower bound maps to 0, so padding the raw input with it must give the same prediction
    net = AnatomixSegmentationNetwork(1, 2, deep_supervision=False).eval()
    exact = AnatomixSegmentationNetwork(1, 2, deep_supervision=False, pad_to_stride=False).eval()
    exact.load_state_dict(net.state_dict())
    x = torch.randn(1, 1, 40, 36, 33)
    padded = torch.nn.functional.pad(x, (0, 15, 0, 12, 0, 8), value=-1e3)
    assert torch.allclose(net(x), exact(padded)[..., :40, :36, :33], atol=1e-5)


def test_unpadded_network_rejects_non_divisible_patch_with_fix():
    net = AnatomixSegmentationNetwork(1, 2, deep_supervision=False, pad_to_stride=False)
    with pytest.raises(PatchSizeError, match="divisible by 16"):
        net(torch.randn(1, 1, 40, 56, 40))


def test_intensity_window_maps_to_unit_range():
    window = IntensityWindow(2, [[-1.0, 1.0], [0.0, 4.0]])
    x = torch.tensor([-5.0, -1.0, 0.0, 1.0, 5.0]).view(1, 1, 5, 1, 1).repeat(1, 2, 1, 1, 1)
    y = window(x)
    assert torch.allclose(y[0, 0, :, 0, 0], torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))
    assert torch.allclose(y[0, 1, :, 0, 0], torch.tensor([0.0, 0.0, 0.0, 0.25, 1.0]))
    with pytest.raises(ValueError, match="channels"):
        IntensityWindow(3, [[0, 1]])


def test_strides_in_plans_must_match_the_pretrained_topology():
    from nnfm.errors import ConfigurationError
    with pytest.raises(ConfigurationError, match="pools 2x2x2"):
        AnatomixSegmentationNetwork(1, 2, strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]])
