"""Voxel SupCon pretraining on synthetic view pairs (single process or DDP): the anatomix U-Net (anatomix's recipe)
or any registered 3D encoder network with a dense output (``encoder``; nnfm/pretraining/taps.py).

Intensities: the synthetic views lie in [0, 1], anatomix's input (convention ``window01``). For an encoder that
nnU-Net's own normalisation will feed (``zscore``: nnU-Net's networks, fine-tuned in nnU-Net's plans), each view is
z-scored per image first, as nnU-Net's ``ZScoreNormalization`` does
(nnunetv2/preprocessing/normalization/default_normalization_schemes.py: (x - mean) / max(std, 1e-8)), and the
export records ``zscore``.

Reproducibility: sample ``i`` of the data stream and the voxel positions of step ``s`` are
functions of the seed only, so a resumed run sees exactly the data and sampling an uninterrupted
run would have seen.
"""
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from nnfm.conventions import WINDOW01, ZSCORE
from nnfm.errors import ConfigurationError
from nnfm.pretraining.checkpoints import (LATEST, export_name, load_training_checkpoint, restore_rng_state,
                                          save_training_checkpoint)
from nnfm.pretraining.distributed import DistributedContext, distributed_run
from nnfm.pretraining.loss_curve import write_loss_curve
from nnfm.pretraining.supcon_heads import anatomix_init_
from nnfm.pretraining.supcon_model import SupConPretrainingModel, SupConSettings
from nnfm.pretraining.taps import Tap, pretraining_taps
from nnfm.pretraining.synth.engine import SyntheticPairDataset, SyntheticPairGenerator, SynthConfig, worker_init
from nnfm.pretraining.synth.label_files import find_label_files
from nnfm.training.cpu_threads import attach


@dataclass
class SynthPretrainConfig:
    """Defaults follow neel-dey/anatomix, ``pretraining/scripts/pretrain_anatomix.py`` (AdamW with
    ``pretraining/options/train_options.py``'s betas 0.9/0.999 and eps 1e-8, torch's defaults), except the
    number of steps: anatomix counts epochs of its synthetic data set."""
    out_dir: str
    encoder: str = "anatomix"            # a registry encoder (3D, dense output); anatomix: the published U-Net
    input_convention: Optional[str] = None  # window01 (anatomix's) or zscore; None: the encoder entry's
    steps: int = 1000
    batch_size: int = 1                  # anatomix --batch_size 1 (one pair of views); per process
    size: int = 128                      # anatomix --crop_size 128
    workers: int = 2
    labels_dir: Optional[str] = None
    real_label_prob: float = 0.5
    seed: int = 0
    resume: bool = False
    lr: float = 2e-4                     # anatomix --lr 2e-4
    weight_decay: float = 1e-5           # anatomix --weight_decay 1e-5 (AdamW, on every parameter)
    lr_schedule: str = "anatomix"        # "anatomix": const_linear, 5 equal phases at 1, .8, .6, .4, .2 x lr
    warmup_steps: int = 0                # anatomix has none; > 0: linear from lr/100
    temperature: float = 0.33            # anatomix --nce_T 0.33
    voxels_per_layer: int = 512          # anatomix --num_patches 512
    head_dim: int = 256                  # anatomix --netF_nc 256
    taps: Optional[Tuple[Tap, ...]] = None  # None: anatomix --nce_layers 27,31,38,45,52,65, or taps.py's per network
    sampling: str = "uniform"            # anatomix: uniform, without replacement
    head: str = "anatomix"               # anatomix --n_mlps 3 --normF batch
    init: str = "anatomix"               # anatomix --init_type kaiming (heads only for other encoders: their
                                         # networks keep nnU-Net's InitWeights_He); "torch": torch's default init
    checkpoint_every: int = 100
    amp: str = "auto"                    # bf16 autocast on CUDA, off on CPU (anatomix trains in fp32)
    device: str = "auto"
    progress: bool = True

    # settings that must not change under --resume (they define the run)
    RUN_DEFINING = ("encoder", "input_convention", "seed", "batch_size", "size", "taps", "head_dim", "labels_dir", "real_label_prob", "sampling",
                    "head", "lr_schedule")


LR_SCHEDULES = ("anatomix", "constant")
CONVENTIONS = (WINDOW01.name, ZSCORE.name)


def zscore_per_image(x: torch.Tensor) -> torch.Tensor:
    """(B, C, *spatial) -> each image and channel z-scored, nnU-Net's ZScoreNormalization without a mask."""
    dims = tuple(range(2, x.dim()))
    mean, std = x.mean(dims, keepdim=True), x.std(dims, keepdim=True)
    return (x - mean) / std.clamp_min(1e-8)


def resolved(config: SynthPretrainConfig, tapper) -> SynthPretrainConfig:
    """``config`` with the encoder's defaults filled in (taps, input convention); ConfigurationError if unusable."""
    from dataclasses import replace

    from nnfm.registry import get_encoder

    convention = config.input_convention or (WINDOW01.name if config.encoder == "anatomix"
                                             else get_encoder(config.encoder).input_convention.name)
    if convention not in CONVENTIONS:
        raise ConfigurationError(f"input convention {convention!r}: synthetic SupCon pretrains on {CONVENTIONS} "
                                 f"(--input-convention)")
    taps = tuple(config.taps) if config.taps else tuple(tapper.default_taps())
    return replace(config, input_convention=convention, taps=taps)


def _learning_rate(config: SynthPretrainConfig, step: int) -> float:
    """lr of step ``step`` (0-based).

    "anatomix": ``get_scheduler(opt)`` with ``lr_policy const_linear``, ``n_epochs 0``, ``n_epochs_decay 4``
    (neel-dey/anatomix, ``pretraining/models/pretraining_networks.py`` and ``pretrain_anatomix.py``) steps the
    factor ``1 - epoch / 5`` once per epoch over ``epoch = 0..4``; here the run's steps are cut into 5 equal
    phases. Warm-up (``warmup_steps``, nnFM's addition, off by default) multiplies from 0.01 to 1.
    """
    factor = 1.0
    if config.lr_schedule == "anatomix":
        factor = 1.0 - min(4, (5 * step) // max(1, config.steps)) / 5.0
    if config.warmup_steps > 0 and step < config.warmup_steps:
        factor *= 0.01 + 0.99 * step / config.warmup_steps
    return config.lr * factor


def _data_loader(config: SynthPretrainConfig, context: DistributedContext, first_step: int) -> DataLoader:
    synth = SynthConfig(size=(config.size,) * 3, labels_dir=config.labels_dir, real_label_prob=config.real_label_prob)
    dataset = SyntheticPairDataset(SyntheticPairGenerator(synth, seed=config.seed), config.batch_size,
                                   first_batch=first_step, num_batches=config.steps - first_step,
                                   rank=context.rank, world_size=context.world_size)
    return DataLoader(dataset, batch_size=config.batch_size, num_workers=config.workers,
                      worker_init_fn=worker_init, pin_memory=context.device.type == "cuda",
                      persistent_workers=False, prefetch_factor=4 if config.workers else None)


def _step_generator(config: SynthPretrainConfig, step: int, rank: int) -> torch.Generator:
    # voxel positions of step s on rank r: independent of resumes and of the RNG history
    seed = int(np.random.SeedSequence([config.seed, step, rank]).generate_state(1, np.uint64)[0] >> 1)
    return torch.Generator().manual_seed(seed)


def _settings_snapshot(config: SynthPretrainConfig) -> Dict:
    snapshot = {k: v for k, v in asdict(config).items() if k not in ("out_dir", "resume", "progress")}
    snapshot["taps"] = list(config.taps or ())
    return snapshot


def _check_resume_settings(saved: Dict, config: SynthPretrainConfig) -> None:
    changed = [k for k in config.RUN_DEFINING if k in saved and saved[k] != _settings_snapshot(config)[k]]
    if changed:
        details = ", ".join(f"{k}: saved {saved[k]!r} vs now {_settings_snapshot(config)[k]!r}" for k in changed)
        raise ValueError(f"--resume with different run settings ({details}); use the saved values or a new --out")


def train_synth(config: SynthPretrainConfig) -> Dict:
    """Run (or resume) pretraining; returns a summary. Works under torchrun (DDP) and in one process."""
    with distributed_run(config.device) as context:
        return _train(config, context)


def _train(config: SynthPretrainConfig, context: DistributedContext) -> Dict:
    out_dir = Path(config.out_dir)
    context.make_folder(out_dir)
    torch.manual_seed(config.seed)   # identical initial weights on every rank
    random.seed(config.seed)
    np.random.seed(config.seed)
    if config.lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {config.lr_schedule!r}")
    if config.labels_dir:  # here, not first in a DataLoader worker
        find_label_files(config.labels_dir)
    tapper = pretraining_taps(config.encoder, (config.size,) * 3)
    config = resolved(config, tapper)
    settings = SupConSettings(config.taps, config.voxels_per_layer, config.head_dim,
                              config.temperature, config.sampling, config.head)
    model = SupConPretrainingModel(settings=settings, tapper=tapper)
    if config.init == "anatomix":
        anatomix_init_(model if config.encoder == "anatomix" else model.heads)
    model = model.to(context.device)
    if context.device.type == "cpu":
        attach(model)  # threads follow the CPU share the run gets (nnfm/training/cpu_threads.py)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    start_step, history = 0, []
    if config.resume:
        state = load_training_checkpoint(out_dir)
        _check_resume_settings(state["settings"], config)
        model.encoder.load_state_dict(state["model"], strict=True)
        model.heads.load_state_dict(state["heads"], strict=True)
        optimizer.load_state_dict(state["optimizer"])
        restore_rng_state(state["rng"])
        start_step, history = int(state["step"]), list(state["loss_history"])
    # layers after the last tap get no gradient
    # layers after the last tap (anatomix) or off every tap's path (the segmentation layers) get no gradient
    unused = config.encoder != "anatomix" or max(model.taps) < len(model.encoder.model) - 1
    trained = context.wrap(model, find_unused_parameters=unused)
    use_amp = context.device.type == "cuda" if config.amp == "auto" else config.amp == "bf16"
    snapshot = _settings_snapshot(config)
    step = start_step
    started = time.time()
    bar = tqdm(total=config.steps, initial=start_step, disable=not (config.progress and context.is_main),
               desc="synth SupCon", dynamic_ncols=True)
    model.train()
    for batch in _data_loader(config, context, start_step):
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(config, step)
        view1, view2, labels = (batch[k].to(context.device, non_blocking=True) for k in ("view1", "view2", "labels"))
        if config.input_convention == ZSCORE.name:
            view1, view2 = zscore_per_image(view1), zscore_per_image(view2)
        with torch.autocast(context.device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss, per_tap = trained(view1, view2, labels, _step_generator(config, step, context.rank))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        value = context.mean(float(loss.detach()))
        if not math.isfinite(value):
            raise FloatingPointError(f"loss became {value} at step {step}; lower --lr")
        history.append(value)
        bar.update(1)
        bar.set_postfix(loss=f"{value:.3f}", **{k: f"{float(v):.3f}" for k, v in per_tap.items()})
        if step % config.checkpoint_every == 0 or step == config.steps:
            if context.is_main:
                save_training_checkpoint(out_dir, step, model, optimizer, snapshot, history,
                                         export_name(config.encoder), config.input_convention)
                write_loss_curve(out_dir, history)
            context.barrier()
    bar.close()
    elapsed = time.time() - started
    return {"start_step": start_step, "step": step, "loss_history": history, "seconds": elapsed,
            "seconds_per_step": elapsed / max(1, step - start_step), "checkpoint": str(out_dir / LATEST),
            "weights": str(out_dir / export_name(config.encoder)),
            "input_convention": config.input_convention, "world_size": context.world_size}
