"""DINOv3-style SSL: loss sanity, masking/crops, MedDINOv3 export round trip, learning, stages, resume, gloo DDP.

Data: a few real MSD Hippocampus volumes, z-scored and written with nnU-Net's own dataset class
(the layout nnUNetv2_plan_and_preprocess writes), sliced by the engine. Tiny ViTs, 32 px crops.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from conftest import LAYOUTS, random_state_dict_from_layout, write_preprocessed_cases
from nnfm.errors import ConfigurationError
from nnfm.networks.dinov3_segmentation import keep_rope_periods
from nnfm.pretraining.dino.backbone import MaskableDinoViT, load_dinov3_weights
from nnfm.pretraining.dino.crops import CropSettings, multi_crop
from nnfm.pretraining.dino.data import MultiCropStream, PreprocessedSlices, preprocessed_folder
from nnfm.pretraining.dino.heads import DINOHead
from nnfm.pretraining.dino.key_mapping import backbone_to_dinov3, meddinov3_checkpoint
from nnfm.pretraining.dino.losses import cross_entropy, dino_loss, gram_loss, ibot_loss, koleo_loss, sinkhorn_knopp
from nnfm.pretraining.dino.masking import block_mask, global_crop_masks
from nnfm.pretraining.dino.meta_arch import DinoSSL, LossSettings, SSLBranch
from nnfm.pretraining.dino.trainer import EXPORT, LATEST, DinoPretrainConfig, train_dino

TINY = dict(embed_dim=64, depth=2, num_heads=2)
TINY_HEADS = dict(n_prototypes=256, head_hidden=128, head_bottleneck=32)


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory) -> Path:
    """nnUNet_preprocessed/Dataset992_HippoSSL/{nnUNetPlans.json, nnUNetPlans_2d/*.b2nd} from 4 real cases.

    Written in-process, not the shared nnU-Net-planned dataset: the engine reads only this folder, and plans
    with a 2d configuration alone are part of what is tested (test_dataset_folder_is_resolved_from_the_plans).
    """
    root = tmp_path_factory.mktemp("preprocessed")
    folder = root / "Dataset992_HippoSSL" / "nnUNetPlans_2d"
    write_preprocessed_cases(folder, 4, label=0)
    (folder.parent / "nnUNetPlans.json").write_text(json.dumps({"configurations": {
        "2d": {"data_identifier": "nnUNetPlans_2d"}}}))
    return root


def tiny_config(out_dir, data_folder, **overrides) -> DinoPretrainConfig:
    settings = dict(out_dir=str(out_dir), data_folder=str(data_folder), model_kwargs=dict(TINY), steps=4,
                    batch_size=2, global_size=32, local_size=16, n_local=2, workers=0, checkpoint_every=2,
                    progress=False, **TINY_HEADS)
    settings.update(overrides)
    return DinoPretrainConfig(**settings)


def data_folder(preprocessed: Path) -> Path:
    return preprocessed / "Dataset992_HippoSSL" / "nnUNetPlans_2d"


# ---- losses ----------------------------------------------------------------------------------
def test_koleo_is_lower_for_spread_than_for_collapsed_features():
    generator = torch.Generator().manual_seed(0)
    spread = torch.randn(16, 32, generator=generator)
    collapsed = torch.ones(16, 32) + 0.01 * torch.randn(16, 32, generator=generator)
    assert koleo_loss(spread) < koleo_loss(collapsed) - 2.0
    with pytest.raises(ValueError, match="at least 2"):
        koleo_loss(spread[:1])


def test_gram_loss_zero_for_identical_patch_similarities_positive_otherwise():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 9, 16, generator=generator)
    assert gram_loss(features, features.clone()) == 0
    assert gram_loss(features, 3.0 * features) < 1e-10           # L2 normalised: scale does not matter
    assert gram_loss(features, torch.randn(2, 9, 16, generator=generator)) > 0.01


def test_ibot_loss_divides_by_all_global_crop_images_as_dinov3():
    """DINOv3 (facebookresearch/dinov3, dinov3/loss/ibot_patch_loss.py, iBOTPatchLoss.forward_masked): tokens weigh
    1 / (masked tokens of their image), the sum is divided by student_masks_flat.shape[0] = all global-crop images."""
    torch.manual_seed(0)
    n_images, n_tokens = 4, 6
    masks = torch.zeros(n_images, n_tokens, dtype=torch.bool)
    masks[0, :3] = True          # image 0: 3 masked tokens; image 2: 2; images 1 and 3: none
    masks[2, 1:3] = True
    teacher = torch.softmax(torch.randn(int(masks.sum()), 8), -1)
    student = torch.randn(int(masks.sum()), 8)
    # DINOv3's formula, written with its (B, N) mask
    weights = (1 / masks.sum(-1).clamp(min=1.0)).unsqueeze(-1).expand_as(masks)[masks]
    expected = (cross_entropy(teacher, student, 0.1) * weights).sum() / masks.shape[0]
    image_of_token = torch.arange(n_images).repeat_interleave(masks.sum(1))
    assert torch.allclose(ibot_loss(student, teacher, image_of_token, n_images, 0.1), expected)


def test_sinkhorn_targets_have_uniform_prototype_marginals_and_dino_prefers_a_matching_student():
    generator = torch.Generator().manual_seed(0)
    teacher_logits = 3 * torch.randn(2 * 32, 64, generator=generator)
    targets = sinkhorn_knopp(teacher_logits, temperature=0.5, iterations=10)
    assert torch.allclose(targets.sum(1), torch.ones(64), atol=1e-4)
    assert targets.sum(0).std() / targets.sum(0).mean() < 0.05     # every prototype used about equally
    # student crops: 2 global (teacher's views swapped) + 0 local; matching student = teacher logits per view
    views = teacher_logits.reshape(2, 32, 64)
    swapped = torch.cat([views[1], views[0]])
    matching = dino_loss(swapped / 0.5 * 0.1, targets, n_global=2, student_temp=0.1)
    unrelated = dino_loss(torch.randn(64, 64, generator=generator), targets, n_global=2, student_temp=0.1)
    assert matching < unrelated - 0.5


# ---- masks, crops, data ------------------------------------------------------------------------
def test_block_masks_have_the_requested_size_and_one_image_is_always_masked():
    rng = np.random.default_rng(0)
    for n in (1, 5, 20, 40):
        assert block_mask((8, 8), n, rng).sum() == n
    masks = global_crop_masks(4, (4, 4), rng, probability=0.1)
    assert masks.shape == (4, 4, 4) and masks[0].any() and not masks[1:].any()


def test_slices_and_multi_crops_are_deterministic(preprocessed):
    slices = PreprocessedSlices(data_folder(preprocessed))
    assert len(slices) > 50 and slices.dataset.__class__.__name__ == "nnUNetDatasetBlosc2"
    stream = MultiCropStream(slices, CropSettings(32, 16, 3), seed=0, batch_size=2, first_step=0, last_step=2)
    a, b = stream[3], stream[3]
    assert a["global"].shape == (2, 1, 32, 32) and a["local"].shape == (3, 1, 16, 16)
    assert torch.equal(a["global"], b["global"]) and not torch.equal(a["global"], stream[2]["global"])
    crops = multi_crop(torch.randn(40, 50), CropSettings(32, 16, 0), np.random.default_rng(0))
    assert crops["local"].shape == (0, 1, 16, 16) and torch.isfinite(crops["global"]).all()


def test_dataset_folder_is_resolved_from_the_plans(preprocessed, monkeypatch):
    monkeypatch.setenv("nnUNet_preprocessed", str(preprocessed))
    assert preprocessed_folder("Dataset992_HippoSSL", "2d") == data_folder(preprocessed)
    with pytest.raises(ConfigurationError, match="no preprocessed data for configuration '3d_fullres'"):
        preprocessed_folder("Dataset992_HippoSSL", "3d_fullres")


def test_mask_token_replaces_exactly_the_masked_patches():
    torch.manual_seed(0)
    backbone = MaskableDinoViT(**TINY).eval()
    images = torch.randn(1, 1, 32, 32)
    no_mask = backbone(images, torch.zeros(1, 2, 2, dtype=torch.bool))
    assert torch.allclose(no_mask["patches"], backbone(images)["patches"])
    torch.nn.init.normal_(backbone.mask_token)
    masked = backbone(images, torch.tensor([[[True, False], [False, False]]]))
    assert not torch.allclose(masked["patches"], no_mask["patches"])


# ---- checkpoint layout -------------------------------------------------------------------------
@pytest.mark.parametrize("model_name", ["vit_small_patch16_dinov3", "vit_small_patch16_dinov3_qkvb"])
def test_export_round_trip_through_timms_filter_gives_identical_outputs(tmp_path, model_name):
    from timm.models.eva import checkpoint_filter_fn
    from nnfm.weights.checkpoint_io import read_state_dict
    from nnfm.weights.families import detect_family
    from nnfm.weights.filters import dinov3_filter
    torch.manual_seed(0)
    student = SSLBranch(MaskableDinoViT(model_name, **TINY), 256, 128, 32)
    for parameter in student.parameters():                # non-trivial values everywhere (biases, tokens)
        parameter.data.add_(0.05 * torch.randn_like(parameter))
    path = tmp_path / EXPORT
    torch.save(meddinov3_checkpoint(student.backbone, student.dino_head, student.ibot_head), path)
    state, unwrapped = read_state_dict(path)               # nnFM's safe reader: unwraps ['teacher']
    assert unwrapped == ["['teacher']"] and detect_family(state) == "meddinov3_vit"
    backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    fresh = timm.create_model(model_name, pretrained=False, num_classes=0, **TINY).eval()
    keep_rope_periods(fresh)  # as nnFM's networks: the file's (bf16) RoPE periods, which the student trained with
    mapped, dropped = dinov3_filter(backbone)                # timm's names (timm's own filter drops the periods)
    assert "mask_token" in dropped and set(mapped) - set(checkpoint_filter_fn(backbone, fresh)) == {"rope.periods"}
    fresh.load_state_dict(mapped, strict=True)
    images = torch.randn(2, 3, 48, 32)
    student.backbone.eval()
    with torch.no_grad():
        assert torch.equal(fresh.forward_features(images), student.backbone.vit.forward_features(images))
    again = MaskableDinoViT(model_name, **TINY)               # our own loader, mask token included
    load_dinov3_weights(again, str(path))
    assert torch.equal(again.mask_token, student.backbone.mask_token)
    assert list(again.state_dict()) == list(student.backbone.state_dict())
    for key, value in again.state_dict().items():
        assert torch.equal(value, student.backbone.state_dict()[key]), key


def test_export_has_the_exact_meddinov3_vitb16_layout():
    layout = json.loads((LAYOUTS / "meddinov3_vitb16.json").read_text())
    backbone = MaskableDinoViT("vit_base_patch16_dinov3")
    heads = {name: DINOHead(768, 65536, 2048, 256) for name in ("dino", "ibot")}
    teacher = meddinov3_checkpoint(backbone, heads["dino"], heads["ibot"])["teacher"]
    keys = [k for k in teacher if k.startswith("backbone.")]
    assert keys == list(layout["keys"])                      # same keys, same order
    for key, spec in {**layout["keys"], **layout["probable_extra_keys"]}.items():
        assert list(teacher[key].shape) == spec["shape"] and str(teacher[key].dtype) == f"torch.{spec['dtype']}", key
    assert set(teacher) == set(layout["keys"]) | set(layout["probable_extra_keys"])


def test_official_dinov3_vits16_layout_loads_and_exports_back():
    official = random_state_dict_from_layout(LAYOUTS / "dinov3_vits16.json")
    for key in [k for k in official if k.endswith("qkv.bias")]:
        official[key][384:768] = 0                           # DINOv3's k bias is masked to zero
        official[key + "_mask"] = torch.cat([torch.ones(384), torch.zeros(384), torch.ones(384)])
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"dinov3_vits16_{os.getpid()}.pth"
    torch.save(official, path)
    try:
        with pytest.raises(Exception, match="_qkvb"):      # non-zero q/v biases must not be dropped silently
            load_dinov3_weights(MaskableDinoViT("vit_small_patch16_dinov3"), str(path))
        backbone = MaskableDinoViT("vit_small_patch16_dinov3_qkvb")
        load_dinov3_weights(backbone, str(path))
    finally:
        path.unlink()
    exported = backbone_to_dinov3(backbone)
    assert list(exported) == list(official)
    for key, value in official.items():
        if key != "rope_embed.periods":                      # timm recomputes it; exported as bf16
            assert torch.equal(exported[key], value), key


# ---- training ----------------------------------------------------------------------------------
def test_a_few_steps_lower_the_loss(preprocessed):
    """Fixed real-slice batch and masks, few prototypes: a check that can fail.

    At initialisation a tiny ViT maps all slices to nearly one CLS direction (KoLeo high) and the
    Sinkhorn targets are nearly uniform (DINO/iBOT near 2 log K); both must fall within 14 steps.
    """
    torch.manual_seed(0)
    stream = MultiCropStream(PreprocessedSlices(data_folder(preprocessed)), CropSettings(32, 16, 2), 0, 4, 0, 1)
    batch = [stream[i] for i in range(4)]
    global_crops = torch.stack([b["global"] for b in batch], 1).flatten(0, 1)
    local_crops = torch.stack([b["local"] for b in batch], 1).flatten(0, 1)
    masks = global_crop_masks(8, (2, 2), np.random.default_rng(0))
    model = DinoSSL(SSLBranch(MaskableDinoViT(**TINY), 16, 128, 32), LossSettings())
    optimizer = torch.optim.AdamW(model.student.parameters(), lr=5e-3)
    total, dino_ibot = [], []
    for _ in range(14):
        targets = model.teacher_targets(global_crops, masks, teacher_temp=0.04)
        parts = model.loss(model.student(global_crops, local_crops, masks), targets, masks, n_global=2)
        optimizer.zero_grad()
        parts["total"].backward()
        optimizer.step()
        model.update_teacher(0.5)
        total.append(parts["total"].item())
        dino_ibot.append((parts["dino"] + parts["ibot"]).item())
    first, last = (lambda v: sum(v[:3]) / 3), (lambda v: sum(v[-3:]) / 3)
    assert last(total) < first(total) - 1.0, total
    assert last(dino_ibot) < first(dino_ibot) - 0.1, dino_ibot


@pytest.fixture(scope="module")
def stage_runs(preprocessed, tmp_path_factory):
    root = tmp_path_factory.mktemp("dino_stages")
    folder = data_folder(preprocessed)
    one = train_dino(tiny_config(root / "s1", folder, steps=4))
    two = train_dino(tiny_config(root / "s2", folder, stage=2, from_dir=str(root / "s1"), steps=2,
                                 global_size=None, local_size=None))
    three = train_dino(tiny_config(root / "s3", folder, stage=3, from_dir=str(root / "s2"), steps=1,
                                   global_size=None, local_size=None))
    return root, one, two, three


def test_stage_1_run_writes_checkpoints_curves_and_a_loadable_export(stage_runs):
    root, one, _, _ = stage_runs
    history = one["loss_history"]
    assert one["step"] == 4 and set(history) == {"dino", "ibot", "koleo", "total"}
    assert all(np.isfinite(history["total"])) and len(history["total"]) == 4
    state = torch.load(root / "s1" / LATEST, weights_only=True)
    assert state["step"] == 4 and state["gram_teacher"] is None
    for name in ("loss_curve.png", "loss_components.png", "loss.csv", "loss_components.csv"):
        assert (root / "s1" / name).stat().st_size > 0, name
    backbone = MaskableDinoViT(**TINY)
    load_dinov3_weights(backbone, str(root / "s1" / EXPORT))
    teacher = {k[len("backbone."):]: v for k, v in state["teacher"].items() if k.startswith("backbone.")}
    assert all(torch.equal(backbone.state_dict()[k], v) for k, v in teacher.items())


def test_a_dino_ssl_export_is_planned_and_fed_the_intensities_it_was_pretrained_on(stage_runs):
    """nnFM_pretrain dino trains on nnU-Net's normalised intensities (backbone.py). Its export says so, so the
    dinov3_vits16 preset (the route for a file with qkv biases, whose own default weights are ImageNet-normalised)
    is planned with input_norm "nnunet", and plans that say "imagenet" refuse it at load. Before issue 26 the
    plans said "imagenet" whatever the weights."""
    from nnfm.errors import ConfigurationError
    from nnfm.networks.dinov3_segmentation import DINOv3SegmentationNetwork
    from nnfm.registry import get_encoder
    from nnfm.weights.input_convention import check_fed_convention, planned_convention, recorded_convention

    export = str(stage_runs[0] / "s1" / EXPORT)
    entry = get_encoder("dinov3_vits16")
    assert entry.input_convention.name == "imagenet" and recorded_convention(export) == "nnunet"
    assert planned_convention(entry, export).name == "nnunet"
    kwargs = dict(entry.kwargs(), input_norm=planned_convention(entry, export).name,
                  vit_kwargs={"embed_dim": 32, "depth": 4, "num_heads": 2})
    network = DINOv3SegmentationNetwork(1, 2, **kwargs)
    assert network.input_norm == "nnunet" and isinstance(network.input_window, torch.nn.Identity)  # as they are
    check_fed_convention(network, "nnunet", export, entry.name, "2d")
    with pytest.raises(ConfigurationError, match="pretrained on input convention `nnunet`.*feed the network "
                                                 "`imagenet`.*nnFM_plan_and_preprocess -d DATASET -e dinov3_vits16"):
        check_fed_convention(DINOv3SegmentationNetwork(1, 2, **dict(kwargs, input_norm="imagenet")), "nnunet",
                             export, entry.name, "2d")


def test_stage_2_adds_gram_anchoring_and_stage_3_raises_the_resolution(stage_runs):
    root, one, two, three = stage_runs
    assert two["gram_weight"] == 1.0 and two["global_size"] == 32 and "gram" in two["loss_history"]
    assert all(np.isfinite(two["loss_history"]["gram"]))
    gram_teacher = torch.load(root / "s2" / LATEST, weights_only=True)["gram_teacher"]
    s1_teacher = torch.load(root / "s1" / LATEST, weights_only=True)["teacher"]
    assert all(torch.equal(v, s1_teacher[f"backbone.{k}"]) for k, v in gram_teacher.items())
    assert three["global_size"] == 64 and three["local_size"] == 16 and three["step"] == 1
    assert np.isfinite(three["loss_history"]["gram"][0])


def test_bad_stage_settings_fail_early(preprocessed, tmp_path):
    folder = data_folder(preprocessed)
    with pytest.raises(ConfigurationError, match="--from"):
        train_dino(tiny_config(tmp_path / "a", folder, stage=2))
    with pytest.raises(ConfigurationError, match="multiple of the patch size"):
        train_dino(tiny_config(tmp_path / "b", folder, global_size=40))
    with pytest.raises(ConfigurationError, match="batch-size >= 2"):
        train_dino(tiny_config(tmp_path / "c", folder, batch_size=1))


def test_resume_after_a_kill_continues_exactly_where_it_stopped(preprocessed, tmp_path, monkeypatch):
    import nnfm.pretraining.dino.trainer as trainer
    folder = data_folder(preprocessed)
    straight = train_dino(tiny_config(tmp_path / "straight", folder, steps=4))
    write_curves = trainer.write_dino_curves

    def killed_after_step_2(out_dir, history):   # the process dies right after its step-2 checkpoint
        write_curves(out_dir, history)
        if len(history["total"]) == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(trainer, "write_dino_curves", killed_after_step_2)
    with pytest.raises(KeyboardInterrupt):
        train_dino(tiny_config(tmp_path / "split", folder, steps=4))
    monkeypatch.setattr(trainer, "write_dino_curves", write_curves)
    assert torch.load(tmp_path / "split" / LATEST, weights_only=True)["step"] == 2
    resumed = train_dino(tiny_config(tmp_path / "split", folder, steps=4, resume=True))
    assert resumed["start_step"] == 2 and resumed["step"] == 4
    for name, values in straight["loss_history"].items():
        assert np.allclose(resumed["loss_history"][name], values, atol=1e-5), name
    a = torch.load(tmp_path / "straight" / EXPORT, weights_only=True)["teacher"]
    b = torch.load(tmp_path / "split" / EXPORT, weights_only=True)["teacher"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)
    with pytest.raises(ConfigurationError, match="different run settings"):
        train_dino(tiny_config(tmp_path / "split", folder, steps=6, resume=True, seed=1))


@pytest.mark.e2e
def test_two_process_gloo_ddp_run_through_the_cli(preprocessed, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", nnUNet_preprocessed=str(preprocessed))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "nnfm.pretraining.cli", "dino", "-d", "Dataset992_HippoSSL", "-c", "2d", "--out", str(out),
               "--steps", "2", "--batch-size", "2", "--global-size", "32", "--local-size", "16", "--n-local", "1",
               "--embed-dim", "64", "--depth", "2", "--num-heads", "2", "--prototypes", "256", "--head-hidden",
               "128", "--head-bottleneck", "32", "--checkpoint-every", "1", "--workers", "0", "--device", "cpu",
               "--no-progress"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["world_size"] == 2 and summary["step"] == 2 and np.isfinite(summary["total_last"])
    assert torch.load(out / LATEST, weights_only=True)["step"] == 2
    load_dinov3_weights(MaskableDinoViT(**TINY), str(out / EXPORT))


def test_cli_reports_bad_input_without_a_traceback(preprocessed, tmp_path):
    from nnfm.pretraining.cli import main
    with pytest.raises(SystemExit, match="nnFM_pretrain dino: stage 2 continues an earlier stage: pass --from"):
        main(["dino", "--data-folder", str(data_folder(preprocessed)), "--out", str(tmp_path), "--stage", "2"])
    # missing checkpoints were FileNotFoundError tracebacks
    with pytest.raises(SystemExit, match="nnFM_pretrain dino: no checkpoint_latest.pth in .*--from"):
        main(["dino", "--data-folder", str(data_folder(preprocessed)), "--out", str(tmp_path / "s2"), "--stage", "2",
              "--from", str(tmp_path / "no_stage_1")])
