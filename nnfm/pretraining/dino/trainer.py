"""DINOv3-style SSL training loop (stages 1-3), single process or DDP, with exact resume.

Files in ``out_dir``: ``checkpoint_latest.pth`` (resumable state), ``meddinov3_teacher.pth`` (EMA teacher in
the MedDINOv3 layout, for nnFM's ViT loader), ``loss_curve.png``/``loss_components.png`` (+ CSV).
Reproducibility: samples, crops and masks of step ``s`` on rank ``r`` depend on (seed, s, r) only; model
randomness uses the torch RNG, whose state is saved; schedules are functions of the step.
"""
import math
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from nnfm.conventions import NNUNET
from nnfm.errors import ConfigurationError
from nnfm.pretraining.checkpoints import _atomic_save, restore_rng_state, rng_state
from nnfm.pretraining.dino.backbone import MaskableDinoViT, load_dinov3_weights
from nnfm.pretraining.dino.crops import CropSettings
from nnfm.pretraining.dino.curves import write_dino_curves
from nnfm.pretraining.dino.data import MultiCropStream, PreprocessedSlices
from nnfm.pretraining.dino.key_mapping import meddinov3_checkpoint
from nnfm.pretraining.dino.masking import global_crop_masks
from nnfm.pretraining.dino.meta_arch import DinoSSL, LossSettings, SSLBranch
from nnfm.pretraining.dino.schedules import cosine, linear_warmup
from nnfm.pretraining.checkpoints import LATEST
from nnfm.pretraining.distributed import DistributedContext, distributed_run
from nnfm.training.cpu_threads import attach
from nnfm.weights.input_convention import CONVENTION_KEY

EXPORT = "meddinov3_teacher.pth"
N_GLOBAL = 2


@dataclass
class DinoPretrainConfig:
    out_dir: str
    data_folder: str
    stage: int = 1
    init: Optional[str] = None             # stage 1: official DINOv3 / MedDINOv3 weights (path or registry name)
    from_dir: Optional[str] = None         # stages 2-3: output folder of the previous stage
    model: str = "vit_small_patch16_dinov3"
    model_kwargs: Dict = field(default_factory=dict)   # e.g. embed_dim/depth/num_heads for tiny ViTs
    steps: int = 1000
    batch_size: int = 8                    # images per step and process
    global_size: Optional[int] = None      # None: 224 (stage 1-2), twice the previous stage's (stage 3)
    local_size: Optional[int] = None       # None: 96, or the previous stage's
    n_local: int = 8
    n_prototypes: int = 4096
    head_hidden: int = 2048
    head_bottleneck: int = 256
    lr: float = 5e-4
    min_lr: float = 1e-6
    warmup_steps: int = -1                 # -1: steps // 10
    weight_decay: Tuple[float, float] = (0.04, 0.2)
    momentum: Tuple[float, float] = (0.992, 1.0)
    teacher_temp: Tuple[float, float] = (0.04, 0.07)
    teacher_temp_warmup_steps: int = -1    # -1: steps // 3
    student_temp: float = 0.1
    koleo_weight: float = 0.1
    gram_weight: Optional[float] = None    # None: 0 in stage 1, 1.0 in stages 2-3
    mask_probability: float = 0.5
    mask_ratio: Tuple[float, float] = (0.1, 0.5)
    freeze_last_layer_steps: int = 0
    clip_grad: float = 3.0
    seed: int = 0
    resume: bool = False
    checkpoint_every: int = 100
    workers: int = 2
    amp: str = "auto"                      # bf16 autocast on CUDA, off on CPU ("bf16" / "off" to force)
    device: str = "auto"
    progress: bool = True

    RUN_DEFINING = ("stage", "model", "model_kwargs", "batch_size", "global_size", "local_size", "n_local",
                    "n_prototypes", "head_hidden", "head_bottleneck", "seed", "gram_weight", "koleo_weight")
    ARCHITECTURE = ("model", "model_kwargs", "n_prototypes", "head_hidden", "head_bottleneck")


def resolve_stage_defaults(config: DinoPretrainConfig, previous: Optional[Dict] = None) -> DinoPretrainConfig:
    """Fill what the stage implies; check what cannot work before any data is read."""
    if config.stage not in (1, 2, 3):
        raise ConfigurationError(f"--stage must be 1, 2 or 3, got {config.stage}")
    if config.stage > 1 and not config.from_dir:
        raise ConfigurationError(f"stage {config.stage} continues an earlier stage: pass --from <its --out folder>")
    if config.stage > 1 and config.init:
        raise ConfigurationError("--init is for stage 1; stages 2-3 start from --from")
    updates = {}
    if config.gram_weight is None:
        updates["gram_weight"] = 0.0 if config.stage == 1 else 1.0
    if config.global_size is None:
        updates["global_size"] = 2 * previous["global_size"] if config.stage == 3 and previous else \
            (previous["global_size"] if previous else 224)
    if config.local_size is None:
        updates["local_size"] = previous["local_size"] if previous else 96
    if previous:
        differs = [k for k in config.ARCHITECTURE if previous.get(k) != getattr(config, k)]
        if differs:
            details = ", ".join(f"{k}: {previous.get(k)!r} vs {getattr(config, k)!r}" for k in differs)
            raise ConfigurationError(f"--from run has another architecture ({details}); use the same model settings")
    config = replace(config, **updates)
    if config.stage == 1 and config.gram_weight > 0:
        raise ConfigurationError("Gram anchoring needs an earlier teacher: use it in stage 2 or 3 (--from)")
    if config.koleo_weight > 0 and config.batch_size < 2:
        raise ConfigurationError("KoLeo compares images within a batch: use --batch-size >= 2 or --koleo-weight 0")
    return config


def _check_sizes(config: DinoPretrainConfig, patch: int) -> None:
    for name in ("global_size", "local_size"):
        size = getattr(config, name)
        if size % patch or size < patch:
            raise ConfigurationError(f"--{name.replace('_', '-')} {size} must be a positive multiple of the patch "
                                     f"size {patch}")


def build_student(config: DinoPretrainConfig) -> SSLBranch:
    return SSLBranch(MaskableDinoViT(config.model, **config.model_kwargs), config.n_prototypes, config.head_hidden,
                     config.head_bottleneck)


def _param_groups(student: torch.nn.Module):
    decay, no_decay = [], []
    for name, parameter in student.named_parameters():
        # no weight decay on biases, norms, layer scales and tokens (DINO's rule)
        (no_decay if parameter.ndim <= 1 or name.endswith("token") else decay).append(parameter)
    return [{"params": decay, "apply_wd": True}, {"params": no_decay, "apply_wd": False}]


def _settings_snapshot(config: DinoPretrainConfig) -> Dict:
    snapshot = {k: v for k, v in asdict(config).items() if k not in ("out_dir", "resume", "progress")}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in snapshot.items()}


def _check_resume_settings(saved: Dict, config: DinoPretrainConfig) -> None:
    now = _settings_snapshot(config)
    changed = [k for k in config.RUN_DEFINING if k in saved and saved[k] != now[k]]
    if changed:
        details = ", ".join(f"{k}: saved {saved[k]!r} vs now {now[k]!r}" for k in changed)
        raise ConfigurationError(f"--resume with different run settings ({details}); use the saved values or a new --out")


def _load_state(path: Path) -> Dict:
    if not path.is_file():
        raise ConfigurationError(f"no {path.name} in {path.parent}: --resume needs it in --out, stage 2 and 3 in "
                                 f"--from (the previous stage's --out).")
    return torch.load(path, map_location="cpu", weights_only=True)   # own file: tensors and plain values


def _step_rng(config: DinoPretrainConfig, step: int, rank: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, 1, step, rank])


def train_dino(config: DinoPretrainConfig) -> Dict:
    """Run (or resume) one stage; returns a summary. Works under torchrun (DDP) and in one process."""
    with distributed_run(config.device) as context:
        return _train(config, context)


def _build(config: DinoPretrainConfig, context: DistributedContext):
    """Model and optimizer for a fresh stage, or the saved state when resuming."""
    out_dir = Path(config.out_dir)
    previous = _load_state(Path(config.from_dir) / LATEST) if config.from_dir else None
    config = resolve_stage_defaults(config, previous["settings"] if previous else None)
    torch.manual_seed(config.seed)          # identical initial weights on every rank
    random.seed(config.seed)
    student = build_student(config)
    _check_sizes(config, student.backbone.patch_size)
    init_report = None
    if config.init and not config.resume:
        init_report = load_dinov3_weights(student.backbone, config.init)
    gram_teacher = None
    if config.stage > 1:
        gram_teacher = MaskableDinoViT(config.model, **config.model_kwargs)
    model = DinoSSL(student, LossSettings(student_temp=config.student_temp, koleo_weight=config.koleo_weight,
                                          gram_weight=config.gram_weight), gram_teacher)
    if previous is not None and not config.resume:
        # a new stage continues the previous student and teacher; the previous teacher is the Gram anchor
        model.student.load_state_dict(previous["student"], strict=True)
        model.teacher.load_state_dict(previous["teacher"], strict=True)
        if gram_teacher is not None:
            gram_teacher.load_state_dict({k[len("backbone."):]: v for k, v in previous["teacher"].items()
                                          if k.startswith("backbone.")}, strict=True)
    model.to(context.device)
    if context.device.type == "cpu":
        attach(student)  # threads follow the CPU share the run gets (nnfm/training/cpu_threads.py)
    optimizer = torch.optim.AdamW(_param_groups(model.student), lr=config.lr)
    start_step, history = 0, {}
    if config.resume:
        state = _load_state(out_dir / LATEST)
        _check_resume_settings(state["settings"], config)
        model.student.load_state_dict(state["student"], strict=True)
        model.teacher.load_state_dict(state["teacher"], strict=True)
        if gram_teacher is not None:
            gram_teacher.load_state_dict(state["gram_teacher"], strict=True)
        optimizer.load_state_dict(state["optimizer"])
        restore_rng_state(state["rng"])
        start_step, history = int(state["step"]), {k: list(v) for k, v in state["loss_history"].items()}
    return config, model, optimizer, start_step, history, init_report


def _save(out_dir: Path, step: int, model: DinoSSL, optimizer, config: DinoPretrainConfig, history: Dict) -> None:
    cpu = lambda module: {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}  # noqa: E731
    _atomic_save({"step": step, "student": cpu(model.student), "teacher": cpu(model.teacher),
                  "gram_teacher": cpu(model.gram_teacher) if model.gram_teacher is not None else None,
                  "optimizer": optimizer.state_dict(), "rng": rng_state(), "settings": _settings_snapshot(config),
                  "loss_history": history}, out_dir / LATEST)
    teacher = model.teacher
    # pretrained on nnU-Net's normalised intensities (backbone.py): the ViT presets plan "nnunet" for this file
    _atomic_save(dict(meddinov3_checkpoint(teacher.backbone, teacher.dino_head, teacher.ibot_head),
                      **{CONVENTION_KEY: NNUNET.name}), out_dir / EXPORT)


def _train(config: DinoPretrainConfig, context: DistributedContext) -> Dict:
    out_dir = Path(config.out_dir)
    context.make_folder(out_dir)
    config, model, optimizer, start_step, history, init_report = _build(config, context)
    slices = PreprocessedSlices(config.data_folder)
    crops = CropSettings(config.global_size, config.local_size, config.n_local)
    stream = MultiCropStream(slices, crops, config.seed, config.batch_size, start_step, config.steps,
                             context.rank, context.world_size)
    loader = DataLoader(stream, batch_size=config.batch_size, num_workers=config.workers, shuffle=False,
                        pin_memory=context.device.type == "cuda", prefetch_factor=4 if config.workers else None)
    student = context.wrap(model.student)
    warmup = config.warmup_steps if config.warmup_steps >= 0 else config.steps // 10
    temp_warmup = config.teacher_temp_warmup_steps if config.teacher_temp_warmup_steps >= 0 else config.steps // 3
    use_amp = context.device.type == "cuda" if config.amp == "auto" else config.amp == "bf16"
    grid = (config.global_size // model.student.backbone.patch_size,) * 2
    step, started = start_step, time.time()
    bar = tqdm(total=config.steps, initial=start_step, disable=not (config.progress and context.is_main),
               desc=f"DINO stage {config.stage}", dynamic_ncols=True)
    model.student.train()
    for batch in loader:
        lr = cosine(step, config.steps, config.lr, config.min_lr, warmup)
        weight_decay = cosine(step, config.steps, *config.weight_decay)
        for group in optimizer.param_groups:
            group["lr"], group["weight_decay"] = lr, weight_decay if group["apply_wd"] else 0.0
        # view-major: [G, B, 1, S, S] -> [G*B, 1, S, S], as the DINO loss pairs views
        global_crops = batch["global"].transpose(0, 1).flatten(0, 1).to(context.device, non_blocking=True)
        local_crops = batch["local"].transpose(0, 1).flatten(0, 1).to(context.device, non_blocking=True)
        masks = global_crop_masks(global_crops.shape[0], grid, _step_rng(config, step, context.rank),
                                  config.mask_probability, config.mask_ratio).to(context.device)
        teacher_temp = linear_warmup(step, temp_warmup, *config.teacher_temp)
        with torch.autocast(context.device.type, dtype=torch.bfloat16, enabled=use_amp):
            targets = model.teacher_targets(global_crops, masks, teacher_temp)
            parts = model.loss(student(global_crops, local_crops, masks), targets, masks, N_GLOBAL)
        optimizer.zero_grad(set_to_none=True)
        parts["total"].backward()
        if step < config.freeze_last_layer_steps:   # DINO: prototypes fixed at the start avoid early collapse
            for head in (model.student.dino_head, model.student.ibot_head):
                head.last_layer.weight.grad = None
        if config.clip_grad:
            torch.nn.utils.clip_grad_norm_(model.student.parameters(), config.clip_grad)
        optimizer.step()
        model.update_teacher(cosine(step, config.steps, *config.momentum))
        step += 1
        values = {k: context.mean(float(v.detach())) for k, v in parts.items()}
        if not math.isfinite(values["total"]):
            raise FloatingPointError(f"loss became {values['total']} at step {step}; lower --lr")
        for name, value in values.items():
            history.setdefault(name, []).append(value)
        bar.update(1)
        bar.set_postfix({k: f"{v:.3f}" for k, v in values.items()})
        if step % config.checkpoint_every == 0 or step == config.steps:
            if context.is_main:
                _save(out_dir, step, model, optimizer, config, history)
                write_dino_curves(out_dir, history)
            context.barrier()
    bar.close()
    elapsed = time.time() - started
    return {"stage": config.stage, "start_step": start_step, "step": step, "loss_history": history,
            "seconds": elapsed, "seconds_per_step": elapsed / max(1, step - start_step), "n_slices": len(slices),
            "global_size": config.global_size, "local_size": config.local_size, "gram_weight": config.gram_weight,
            "init": init_report, "checkpoint": str(out_dir / LATEST), "weights": str(out_dir / EXPORT),
            "world_size": context.world_size}
