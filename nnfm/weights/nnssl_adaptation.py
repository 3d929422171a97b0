"""The ``nnssl_adaptation_plan`` of an nnssl checkpoint, read into what nnFM plans and loads with.

nnssl releases its pretrained checkpoints as ``{'network_weights', 'nnssl_adaptation_plan', 'init_args',
'trainer_name'[, 'citations']}`` (MIC-DKFZ/nnssl src/nnssl/adaptation_planning/adaptation_plan.py,
``AdaptationPlan.serialize``). The plan names the downstream architecture (``architecture_plans``: a preset
such as ``'ResEncL'``, or ``'ResidualEncoderUNet'`` with its ``arch_kwargs``), the state-dict prefixes of the
encoder and stem (``key_to_encoder``, ``key_to_stem``), the stem convolutions whose input channels adapt
(``keys_to_in_proj``), the pretraining's input channels, its plan (``pretrain_plan.configurations``: spacing,
patch, normalisation) and ``recommended_downstream_patchsize``. nnU-Net master reads the same fields
(MIC-DKFZ/nnUNet nnunetv2/experiment_planning/like_nnssl.py ``preprocess_like_nnssl`` and
nnunetv2/training/nnUNetTrainer/pretraining/pretrainedTrainer.py ``load_pretrained_weights``).
"""
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Tuple

from nnfm.errors import ConfigurationError
from nnfm.weights.random_init import is_random_init

# nnU-Net master's "ResEncL" preset (MIC-DKFZ/nnUNet nnunetv2/utilities/get_network_via_name.py
# ``get_network_from_name('ResEncL')``; the same as nnssl's architecture_registry.get_res_enc_l)
RESENC_L_TOPOLOGY = {
    "n_stages": 6,
    "features_per_stage": [32, 64, 128, 256, 320, 320],
    "kernel_sizes": [[3, 3, 3]] * 6,
    "strides": [[1, 1, 1]] + [[2, 2, 2]] * 5,
    "n_blocks_per_stage": [1, 3, 4, 6, 6, 6],
    "n_conv_per_stage_decoder": [1, 1, 1, 1, 1],
    "conv_bias": True,
    "norm_eps": 1e-5,
}
# what every nnssl ResEncL pretraining writes (MIC-DKFZ/nnssl src/nnssl/training/nnsslTrainer/
# masked_image_modeling/BaseMAETrainer.py ``build_architecture_and_adaptation_plan``; AbstractTrainer.py
# ``recommended_downstream_patchsize = (160, 160, 160)``; OpenMind is planned at 1 mm isotropic, "onemmiso")
RESENC_KEY_TO_ENCODER = "encoder.stages"
RESENC_KEY_TO_STEM = "encoder.stem"
RESENC_KEYS_TO_IN_PROJ = ("encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0")
NNSSL_DEFAULT_PATCH = [160, 160, 160]
NNSSL_DEFAULT_SPACING = [1.0, 1.0, 1.0]
RESENC_ARCHITECTURES = ("ResEncL", "ResidualEncoderUNet")


@dataclass(frozen=True)
class NnsslAdaptation:
    """What an nnssl checkpoint's adaptation plan says (or nnssl's ResEncL defaults when there is none).

    ``topology``: kwargs of :class:`nnfm.networks.resenc_segmentation.ResEncSegmentationNetwork`;
    spacing in mm, patch sizes in voxels (nnU-Net axis order, as nnssl writes them).
    """
    architecture: str
    topology: dict
    key_to_encoder: str = RESENC_KEY_TO_ENCODER
    key_to_stem: str = RESENC_KEY_TO_STEM
    keys_to_in_proj: Tuple[str, ...] = RESENC_KEYS_TO_IN_PROJ
    pretrain_num_input_channels: int = 1
    pretrain_spacing: Optional[List[float]] = field(default_factory=lambda: list(NNSSL_DEFAULT_SPACING))
    pretrain_patch_size: Optional[List[int]] = field(default_factory=lambda: list(NNSSL_DEFAULT_PATCH))
    pretrain_normalization: Optional[List[str]] = None
    recommended_downstream_patchsize: List[int] = field(default_factory=lambda: list(NNSSL_DEFAULT_PATCH))
    source: str = "nnssl ResEncL defaults"

    def to_plans(self) -> dict:
        """Plain JSON for the plans' ``nnfm`` section."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def read_adaptation_plan(checkpoint: Any) -> Optional[dict]:
    """The checkpoint's ``nnssl_adaptation_plan`` dict, or None (bare state dicts, nnU-Net checkpoints)."""
    plan = checkpoint.get("nnssl_adaptation_plan") if isinstance(checkpoint, dict) else None
    return plan if isinstance(plan, dict) else None


def _per_stage(value, n_stages: int, name: str) -> list:
    if isinstance(value, (int, float)):
        return [value] * n_stages
    value = list(value)
    if len(value) != n_stages:
        raise ConfigurationError(f"The adaptation plan's {name} has {len(value)} entries for {n_stages} stages.")
    return value


def _dynamic_topology(kwargs: dict, where: str) -> dict:
    """``ResidualEncoderUNet`` arch_kwargs of an adaptation plan -> ResEncSegmentationNetwork kwargs."""
    expected = {"conv_op": "Conv3d", "norm_op": "InstanceNorm3d", "nonlin": "LeakyReLU"}
    for key, wanted in expected.items():
        given = str(kwargs.get(key, wanted))
        if not given.endswith(wanted):
            raise ConfigurationError(
                f"{where}: the adaptation plan's ResidualEncoderUNet uses {key}={given}; nnFM's ResEnc network is "
                f"nnU-Net's 3D ResEnc ({wanted}). Fine-tune this checkpoint with nnU-Net master's "
                f"nnUNetv2_train_pretrained instead.")
    n = int(kwargs["n_stages"])
    topology = {"n_stages": n,
                "features_per_stage": [int(f) for f in _per_stage(kwargs["features_per_stage"], n, "features")],
                "kernel_sizes": [list(k) if isinstance(k, (list, tuple)) else [int(k)] * 3
                                 for k in _per_stage(kwargs["kernel_sizes"], n, "kernel_sizes")],
                "strides": [list(s) if isinstance(s, (list, tuple)) else [int(s)] * 3
                            for s in _per_stage(kwargs["strides"], n, "strides")],
                "n_blocks_per_stage": [int(b) for b in _per_stage(kwargs["n_blocks_per_stage"], n, "blocks")],
                "n_conv_per_stage_decoder": [int(c) for c in _per_stage(kwargs["n_conv_per_stage_decoder"], n - 1,
                                                                        "decoder convs")],
                "conv_bias": bool(kwargs.get("conv_bias", True)),
                "norm_eps": float((kwargs.get("norm_op_kwargs") or {}).get("eps", 1e-5))}
    if not (kwargs.get("norm_op_kwargs") or {}).get("affine", True):
        raise ConfigurationError(f"{where}: instance norm without affine parameters is not nnU-Net's ResEnc.")
    return topology


def nnssl_adaptation(checkpoint: Any, where: str = "checkpoint") -> NnsslAdaptation:
    """The adaptation a checkpoint asks for; nnssl's ResEncL defaults when it carries no adaptation plan.

    Raises ConfigurationError when the plan names an architecture that is not a ResEnc U-Net (a Primus plan
    belongs to ``-e primus_m``) or keys nnFM's loader cannot take.
    """
    plan = read_adaptation_plan(checkpoint)
    if plan is None:
        return NnsslAdaptation("ResEncL", dict(RESENC_L_TOPOLOGY),
                               source=f"{where} has no nnssl_adaptation_plan: nnssl's ResEncL defaults")
    arch = plan.get("architecture_plans") or {}
    name = str(arch.get("arch_class_name", "ResEncL"))
    if name == "ResEncL":
        topology = dict(RESENC_L_TOPOLOGY)
    elif name == "ResidualEncoderUNet" and arch.get("arch_kwargs"):
        topology = _dynamic_topology(arch["arch_kwargs"], where)
    else:
        hint = " Use nnFM_plan_and_preprocess -e primus_m for Primus checkpoints." if name.startswith("Primus") else ""
        raise ConfigurationError(
            f"{where}: its nnssl_adaptation_plan names architecture {name!r}; the ResEnc encoder takes "
            f"{' or '.join(RESENC_ARCHITECTURES)} (with arch_kwargs).{hint}")
    configurations = (plan.get("pretrain_plan") or {}).get("configurations") or {}
    pretrain = next((c for c in configurations.values() if isinstance(c, dict)), {})
    recommended = plan.get("recommended_downstream_patchsize") or pretrain.get("patch_size") or NNSSL_DEFAULT_PATCH
    return NnsslAdaptation(
        architecture=name, topology=topology,
        key_to_encoder=str(plan.get("key_to_encoder", RESENC_KEY_TO_ENCODER)),
        key_to_stem=str(plan.get("key_to_stem", RESENC_KEY_TO_STEM)),
        keys_to_in_proj=tuple(plan.get("keys_to_in_proj") or RESENC_KEYS_TO_IN_PROJ),
        pretrain_num_input_channels=int(plan.get("pretrain_num_input_channels", 1)),
        pretrain_spacing=[float(s) for s in pretrain["spacing"]] if pretrain.get("spacing") else None,
        pretrain_patch_size=[int(p) for p in pretrain["patch_size"]] if pretrain.get("patch_size") else None,
        pretrain_normalization=list(pretrain["normalization_schemes"]) if pretrain.get("normalization_schemes")
        else None,
        recommended_downstream_patchsize=[int(p) for p in recommended],
        source=f"nnssl_adaptation_plan of {where}")


def adaptation_for_planning(weights: Optional[str]) -> NnsslAdaptation:
    """The adaptation plan of the weights the plans will name, without downloading anything.

    ``weights``: a local file, a registry name (read if it is in nnFM's cache) or None / 'random'. A file that
    is not there yet gives nnssl's ResEncL defaults, and says so in ``source``.
    """
    from nnfm.weights.checkpoint_io import read_checkpoint
    from nnfm.weights.download import cached_file
    from nnfm.weights.registry import get_weights_entry

    if is_random_init(weights):
        return NnsslAdaptation("ResEncL", dict(RESENC_L_TOPOLOGY), source="random initialisation: ResEncL preset")
    path = Path(str(weights)).expanduser()
    if not path.is_file():
        entry = get_weights_entry(str(weights))
        cached = cached_file(entry) if entry is not None and not entry.embedded else None  # nnFM's or the hub's cache
        if cached is None:
            return NnsslAdaptation("ResEncL", dict(RESENC_L_TOPOLOGY),
                                   source=f"{weights} not available at planning time (not downloaded yet): nnssl's "
                                          f"ResEncL defaults; the trainer checks the file's plan when it loads it")
        path = cached
    return nnssl_adaptation(read_checkpoint(path), where=str(path))
