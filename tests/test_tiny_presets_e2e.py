"""Every tiny preset of the encoder registry (``EncoderEntry.tiny``) end to end on real Hippocampus MRI:
nnFM_plan_and_preprocess, 2 iterations of nnUNetv2_train from a small checkpoint written in the published format of
the preset's checkpoint family (loaded strictly, then moved by the optimiser), and nnUNetv2_predict.

The presets are read from nnfm.registry, so a new tiny preset is tested here without an edit; what differs between
presets comes from their checkpoint family (``FAMILIES``: how the family's authors save a file, what loading and
training from it must give). Encoders without a tiny preset keep a short end-to-end test in their own file, on the
same helper (conftest.train_and_predict): LVM-Med and MedDINOv3 in nnU-Net's 2d configuration, the MedDINOv3 scratch
trainer, ResEnc-L planned from an nnssl adaptation plan.
"""
import json
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
from torch import nn

from conftest import train_and_predict
from nnfm.registry import encoders

TINY_PRESETS = [entry for entry in encoders() if entry.tiny]


def _token_grid(config: dict) -> str:
    """The planned patch as a Primus token grid (8^3 voxels a token), as the pos-embed resizing reports it."""
    return "x".join(str(p // 8) for p in config["patch_size"])


# ---- anatomix_dev_unet: anatomix-dev.pth ------------------------------------------------------------------------
def _write_anatomix_dev_unet(entry, path) -> dict:
    """The authors' Unet state dict, bare (anatomix/model/load_from_hf.py), at the preset's size, random values."""
    from nnfm.networks import AnatomixSegmentationNetwork

    encoder = AnatomixSegmentationNetwork(1, 3, False, **entry.kwargs()).encoder
    generator = torch.Generator().manual_seed(1)
    state = {k: torch.randn(v.shape, generator=generator) * 0.1 for k, v in encoder.state_dict().items()}
    torch.save(state, path)
    return state


def _check_anatomix_dev_unet(run: dict) -> None:
    config, report = run["config"], run["provenance"]["report"]
    # Hippocampus is ~36x50x35 voxels: five poolings need 32-divisible axes of at least 64 (nnU-Net pads)
    assert config["patch_size"] == [64, 64, 64] and config["batch_size"] >= 2
    num_downs = run["entry"].kwargs()["num_downs"]
    assert config["architecture"]["arch_kwargs"]["strides"] == [[1, 1, 1]] + [[2, 2, 2]] * num_downs
    assert sorted(report["loaded"]) == sorted(run["state"])  # every key of the file (48 at the tiny size)


# ---- drasclr: DrasCLR train.py's checkpoint_*.pth.tar -----------------------------------------------------------
def _write_drasclr(entry, path) -> dict:
    """As DrasCLR's train.py saves it: DDP keys, the query and the momentum encoder, projection head, MoCo queue."""
    from nnfm.networks.drasclr import DrasCLREncoder

    kwargs = {k: entry.kwargs()[k] for k in ("widths", "rep_dim", "num_experts")}
    query, momentum = DrasCLREncoder(1, **kwargs).state_dict(), DrasCLREncoder(1, **kwargs).state_dict()
    state = {f"module.encoder_q.{n}": v for n, v in query.items()}
    state.update({f"module.encoder_k.{n}": v for n, v in momentum.items()})
    rep = kwargs["rep_dim"]
    state.update({"module.encoder_q.fc.0.weight": torch.zeros(rep, rep), "module.queue": torch.zeros(rep, 8, 5),
                  "module.queue_ptr": torch.zeros(5, dtype=torch.long)})
    torch.save({"epoch": 1, "arch": "custom", "state_dict": state, "optimizer": {}}, path)
    return query


def _check_drasclr(run: dict) -> None:
    config, report = run["config"], run["provenance"]["report"]
    assert config["spacing"] == [1.0, 1.0, 1.0] and all(p % 32 == 0 for p in config["patch_size"])
    assert config["architecture"]["arch_kwargs"]["pad_to_stride"] is False
    assert "queue" in report["intentionally_dropped"]
    assert sorted(report["loaded"]) == sorted(run["state"])  # the query encoder, every key (117)
    debug = json.loads((run["fold"] / "debug.json").read_text())
    assert "momentum: 0.9" in debug["optimizer"] and "nesterov: False" in debug["optimizer"]  # the authors' SGD


# ---- primus_v2: anatomix-dev-vit ----------------------------------------------------------------------------------
def _write_primus_v2(entry, path) -> dict:
    """anatomix-dev-vit's format: the whole dynamic-network-architectures PrimusV2 (tokenizer, registers, EVA with
    anatomix's q/k norms, up-projection, mask token) on a 4x4x4 token grid, a bare state dict saved from
    torch.compile (``_orig_mod.`` prefix)."""
    from dynamic_network_architectures.architectures.primus import PrimusV2

    kwargs = entry.kwargs()
    assert kwargs.get("tokenizer", "v2") == "v2", f"{entry.name}: write its tokenizer's file here"
    torch.manual_seed(1)
    net = PrimusV2(1, kwargs["embed_dim"], (8, 8, 8), 3, eva_depth=kwargs["depth"], eva_numheads=kwargs["num_heads"],
                   input_shape=(32, 32, 32), num_register_tokens=kwargs.get("num_register_tokens", 0),
                   init_values=kwargs.get("init_values", 0.1), scale_attn_inner=kwargs.get("scale_attn_inner", True))
    if kwargs.get("qk_norm"):  # neel-dey/anatomix anatomix/model/vit3d/architectures.py Primus.__init__
        head_dim = kwargs["embed_dim"] // kwargs["num_heads"]
        for block in net.eva.blocks:
            block.attn.q_norm, block.attn.k_norm = nn.LayerNorm(head_dim), nn.LayerNorm(head_dim)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    torch.save({f"_orig_mod.{k}": v for k, v in state.items()}, path)
    return state


def _check_primus_v2(run: dict) -> None:
    report = run["provenance"]["report"]
    assert f"4x4x4 -> {_token_grid(run['config'])}" in report["adapted"]["eva.pos_embed"]
    assert "mask_token" in report["intentionally_dropped"]
    trained = run["checkpoint"]["network_weights"]
    assert trained["encoder.register_tokens"].shape == run["state"]["register_tokens"].shape


# ---- nnssl_primus: an nnssl Primus MAE release --------------------------------------------------------------------
def _write_nnssl_primus(entry, path) -> dict:
    """As nnssl releases a checkpoint (add_adaptation_plan.py): the MAE's weights (encoder on a 4x4x4 token grid,
    MAE-only keys), the adaptation plan and the trainer's name."""
    from nnfm.networks.primus_segmentation import PrimusEncoder

    kwargs = entry.kwargs()
    dim = kwargs["embed_dim"]
    torch.manual_seed(1)
    state = dict(PrimusEncoder(1, [32] * 3, dim, kwargs["depth"], kwargs["num_heads"]).state_dict())
    state.update({"mask_token": torch.zeros(1, 1, dim), "decoder.blocks.0.norm1.weight": torch.ones(dim),
                  "up_projection.decode.0.0.weight": torch.zeros(dim, 8, 2, 2, 2)})
    plan = {"architecture_plans": {"arch_class_name": "PrimusM"}, "pretrain_num_input_channels": 1,
            "key_to_encoder": "eva", "key_to_stem": "down_projection", "keys_to_in_proj": ["down_projection.proj"],
            "key_to_lpe": "eva.pos_embed", "recommended_downstream_patchsize": [160, 160, 160]}
    torch.save({"network_weights": state, "nnssl_adaptation_plan": plan, "trainer_name": "BaseEvaMAETrainer",
                "init_args": {"plan": "x"}}, path)
    return state


def _check_nnssl_primus(run: dict) -> None:
    assert f"4x4x4 -> {_token_grid(run['config'])}" in run["provenance"]["report"]["adapted"]["eva.pos_embed"]


@dataclass(frozen=True)
class Family:
    """A checkpoint family's part of the test: ``write(entry, path)`` saves a file at the preset's size in the
    family's published format and returns the encoder's tensors in it (the encoder's own key names);
    ``check(run)`` asserts what loading and training from that file must give beyond the shared checks;
    ``tta``: predict with nnU-Net's mirroring (its default)."""
    write: Callable
    check: Callable
    tta: bool = True


FAMILIES = {"anatomix_dev_unet": Family(_write_anatomix_dev_unet, _check_anatomix_dev_unet),
            # predicted without mirroring, as before: 8 passes of its location-conditioned convolutions add ~5 s
            "drasclr": Family(_write_drasclr, _check_drasclr, tta=False),
            "primus_v2": Family(_write_primus_v2, _check_primus_v2),
            "nnssl_primus": Family(_write_nnssl_primus, _check_nnssl_primus)}


def test_the_registry_has_tiny_presets_and_each_has_a_checkpoint_writer():
    assert TINY_PRESETS, "no tiny preset registered: the end-to-end test below runs nothing"
    for entry in TINY_PRESETS:
        assert any(f in FAMILIES for f in entry.families), \
            f"{entry.name}: add a writer for one of its checkpoint families {entry.families} to FAMILIES"


@pytest.mark.e2e
@pytest.mark.parametrize("entry", TINY_PRESETS, ids=lambda entry: entry.name)
def test_tiny_preset_plans_trains_from_its_family_checkpoint_and_predicts(entry, plan_hippocampus,
                                                                          hippocampus_converted, nnunet_env, tmp_path):
    config = plan_hippocampus(entry.name)["configurations"][entry.configuration]
    assert config["nnfm"]["encoder"] == entry.name
    arch_kwargs = config["architecture"]["arch_kwargs"]
    assert {k: arch_kwargs[k] for k in entry.kwargs()} == entry.kwargs()  # the preset, as registered

    family = next((f for f in entry.families if f in FAMILIES), None)
    assert family, f"{entry.name}: add a writer for one of its checkpoint families {entry.families} to FAMILIES"
    weights = tmp_path / f"{family}_checkpoint.pth"
    state = FAMILIES[family].write(entry, weights)
    run = train_and_predict(hippocampus_converted, nnunet_env, tmp_path, entry.trainer, entry.plans_name,
                            entry.configuration, weights, tta=FAMILIES[family].tta)

    provenance = run["provenance"]
    assert provenance["encoder"] == family and provenance["weights"] == str(weights)
    assert provenance["report"]["missing"] == [] and provenance["report"]["unexpected"] == []
    checkpoint = run["checkpoint"]
    assert checkpoint["trainer_name"] == entry.trainer
    assert checkpoint["current_epoch"] == 1 and len(checkpoint["logging"]["train_losses"]) == 1
    # the loaded weights are the network's and two optimiser steps moved them
    trained = checkpoint["network_weights"]
    same_shape = [k for k, v in state.items()
                  if v.is_floating_point() and f"encoder.{k}" in trained and trained[f"encoder.{k}"].shape == v.shape]
    assert same_shape and any(not torch.equal(trained[f"encoder.{k}"], state[k]) for k in same_shape)
    FAMILIES[family].check(dict(run, entry=entry, config=config, state=state))
