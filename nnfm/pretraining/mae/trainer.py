"""Masked-image reconstruction pretraining (single process or torchrun/DDP) of the anatomix U-Net or of any
registered 3D encoder network with a dense output (``encoder``: nnU-Net's PlainConvUNet / ResidualEncoderUNet at
their fixed topologies, ...).

Recipe (sources, MIC-DKFZ/nnssl):
- masking, loss: ``BaseMAETrainer.py`` + ``loss/mse_loss.py`` (see ``masking.py``): 75 % of 16^3 blocks zeroed
  in the *input* of a dense network, MSE on masked voxels only, gradient clipping at norm 12;
- optimiser: ``AbstractTrainer.configure_optimizers``: SGD, lr 1e-2, momentum 0.99, Nesterov, weight decay 3e-5,
  ``PolyLRScheduler`` (lr x (1 - t / T)^0.9; nnssl steps it per epoch, here per step);
- DDP: ``AbstractTrainer.initialize`` converts batch norm to SyncBatchNorm (done here on CUDA; gloo/CPU has none).
Dense vs sparse: nnssl's SparK trainers use sparse convolutions / masked batch norm for ResEnc; this uses the
dense variant of ``BaseMAETrainer`` (zeroed blocks), because the export must stay the plain anatomix U-Net and
its layers are used unchanged. Its batch-norm running statistics then describe masked inputs, so before every
export they are re-estimated on unmasked patches (``bn_recalibration_batches``; nnFM's addition).
A 1x1x1 convolution maps the U-Net's 16 output channels to the 1 reconstructed channel; it is not exported.
Another encoder's network is built with one output class and its own segmentation layer reconstructs the image
(as nnssl's MAE trainers build their ResEnc with ``num_output_channels`` = input channels); the whole network is
exported (loaders drop the segmentation layers, nnU-Net's rule). Instance-norm networks need no recalibration.
"""
import copy
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from nnfm.conventions import ZSCORE
from nnfm.errors import ConfigurationError
from nnfm.pretraining.checkpoints import LATEST, _atomic_save, encoder_state_dict, restore_rng_state, rng_state
from nnfm.pretraining.distributed import DistributedContext, distributed_run
from nnfm.pretraining.loss_curve import write_loss_curve
from nnfm.pretraining.mae.cases import ImageReader, case_filter, select_cases
from nnfm.pretraining.mae.data import PatchStream
from nnfm.pretraining.mae.masking import MASK_BLOCK, MASK_RATIO, block_mask, masked_mse
from nnfm.training.cpu_threads import attach
from nnfm.weights.input_convention import with_convention
from nnfm.weights.transfer import with_transfer

EXPORT = "anatomix_mae.pth"
# what fine-tuning takes of an MAE-pretrained nnU-Net network (nnssl's rule, nnfm/weights/transfer.py); the anatomix
# export is the bare U-Net (its 1x1x1 reconstruction head is not exported), taken whole as anatomix's encoder
ENCODER_TRANSFER = ("encoder.",)


def export_name(encoder: str) -> str:
    """File name of the exported weights of an MAE run on ``encoder``."""
    return EXPORT if encoder == "anatomix" else f"{encoder}_mae.pth"


@dataclass
class MAEPretrainConfig:
    out_dir: str
    data_folder: str
    encoder: str = "anatomix"                       # a registry encoder (3D, dense output)
    patch: Tuple[int, int, int] = (160, 160, 160)   # nnssl BaseMAETrainer: config_plan.patch_size = (160, 160, 160)
    batch_size: int = 2                             # per process (nnssl: the plan's batch size)
    steps: int = 1000
    exclude: Tuple[str, ...] = ()
    mask_ratio: float = MASK_RATIO
    mask_block: int = MASK_BLOCK
    lr: float = 1e-2                                # nnssl AbstractTrainer.initial_lr
    momentum: float = 0.99                          # nnssl AbstractTrainer.momentum (nesterov=True)
    weight_decay: float = 3e-5                      # nnssl AbstractTrainer.weight_decay
    grad_clip: float = 12.0                         # nnssl BaseMAETrainer.train_step clip_grad_norm_(..., 12)
    bn_recalibration_batches: int = 8               # nnFM: unmasked batches that re-estimate BN statistics at export
    seed: int = 0
    resume: bool = False
    checkpoint_every: int = 100
    workers: int = 2
    amp: str = "auto"                               # bf16 autocast on CUDA (nnssl: fp16 + GradScaler); CPU: off
    device: str = "auto"
    progress: bool = True

    # settings that must not change under --resume (they define the run)
    RUN_DEFINING = ("encoder", "seed", "patch", "batch_size", "exclude", "mask_ratio", "mask_block", "data_folder")


class MAEModel(nn.Module):
    """``encoder`` (exported) + what maps its dense output to one reconstructed channel. (B, 1, Z, Y, X) -> same.

    anatomix: its U-Net + a 1x1x1 conv (16 -> 1); another registry encoder: its network with one output class."""

    def __init__(self, encoder: str = "anatomix"):
        super().__init__()
        from nnfm.pretraining.taps import pretraining_network

        self.encoder = pretraining_network(encoder)
        if encoder == "anatomix":
            self.head = nn.Conv3d(self.encoder.out_channels, 1, kernel_size=1)
        else:
            self.head = nn.Identity()   # the network's segmentation layer (1 class) is the reconstruction head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def poly_lr(config: MAEPretrainConfig, step: int) -> float:
    """nnU-Net/nnssl ``PolyLRScheduler``: initial_lr * (1 - step / steps) ** 0.9."""
    return config.lr * (1 - step / max(1, config.steps)) ** 0.9


def _step_generator(config: MAEPretrainConfig, step: int, rank: int) -> torch.Generator:
    # masks of step s on rank r: independent of resumes and of the RNG history
    seed = int(np.random.SeedSequence([config.seed, step, rank, 7]).generate_state(1, np.uint64)[0] >> 1)
    return torch.Generator().manual_seed(seed)


def _snapshot(config: MAEPretrainConfig) -> Dict:
    snapshot = {k: v for k, v in asdict(config).items() if k not in ("out_dir", "resume", "progress")}
    snapshot["patch"], snapshot["exclude"] = list(config.patch), sorted(config.exclude)
    return snapshot


def _check_settings(config: MAEPretrainConfig) -> None:
    """Before any process, data or model: the patch fits the encoder and the mask (ConfigurationError otherwise)."""
    from nnfm.registry import get_encoder

    stride = get_encoder(config.encoder).token_stride  # what the planner fits patches to (registry record)
    if any(p % stride for p in config.patch):
        raise ConfigurationError(f"--patch {tuple(config.patch)}: every edge must be a multiple of {stride} "
                                 f"(the total downsampling of {config.encoder}'s network)")
    if any(p % config.mask_block for p in config.patch):
        raise ConfigurationError(f"--patch {tuple(config.patch)}: every edge must be a multiple of --mask-block "
                                 f"{config.mask_block}")
    if not 0 < config.mask_ratio < 1:
        raise ConfigurationError(f"--mask-ratio must lie in (0, 1), got {config.mask_ratio}")


def _check_resume(saved: Dict, config: MAEPretrainConfig) -> None:
    now = _snapshot(config)
    changed = [k for k in config.RUN_DEFINING if k in saved and saved[k] != now[k]]
    if changed:
        details = ", ".join(f"{k}: saved {saved[k]!r} vs now {now[k]!r}" for k in changed)
        raise ConfigurationError(f"--resume with different run settings ({details}); use the saved values or a "
                                 f"new --out")


def recalibrated_encoder(model: MAEModel, cases: List[str], config: MAEPretrainConfig,
                         device: torch.device) -> nn.Module:
    """A copy of the U-Net whose batch-norm running statistics are the plain average over
    ``bn_recalibration_batches`` unmasked batches (fixed samples of stream 1: the same at every export).

    Called on every rank (under DDP on CUDA the norms are SyncBatchNorm, which needs all ranks)."""
    reader = ImageReader(config.data_folder)
    encoder = copy.deepcopy(model.encoder)
    if config.bn_recalibration_batches <= 0:
        return encoder
    norms = [m for m in encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None                    # cumulative average over the batches below
    stream = PatchStream(reader, cases, config.patch, config.seed, config.batch_size, 0,
                         config.bn_recalibration_batches, stream=1)
    encoder.train()
    with torch.no_grad():
        for step in range(config.bn_recalibration_batches):
            batch = torch.stack([stream[step * config.batch_size + j]["image"] for j in range(config.batch_size)])
            encoder(batch.to(device))
    for norm in norms:
        norm.momentum = 0.1
    return encoder


def _save(out_dir: Path, step: int, model: MAEModel, optimizer, snapshot: Dict, history: List[float],
          export: nn.Module, export_file: str) -> None:
    _atomic_save({"step": step, "model": encoder_state_dict(model.encoder),
                  "head": {k: v.detach().cpu() for k, v in model.head.state_dict().items()},
                  "optimizer": optimizer.state_dict(), "rng": rng_state(), "settings": snapshot,
                  "loss_history": [float(x) for x in history]}, out_dir / LATEST)
    # pretrained on per-image z-scores (cases.py): fine-tuning and feature extraction feed it the same
    saved = with_convention(encoder_state_dict(export), ZSCORE.name)
    if snapshot["encoder"] != "anatomix":  # nnU-Net's network: its decoder reconstructs images, the encoder transfers
        saved = with_transfer(saved, ENCODER_TRANSFER)
    _atomic_save(saved, out_dir / export_file)


def train_mae(config: MAEPretrainConfig) -> Dict:
    """Run (or resume) pretraining; returns a summary. Works under torchrun (DDP) and in one process.

    Raises ConfigurationError for bad settings or data (message says what to change)."""
    _check_settings(config)
    with distributed_run(config.device) as context:
        return _train(config, context)


def _train(config: MAEPretrainConfig, context: DistributedContext) -> Dict:
    out_dir = Path(config.out_dir)
    cases, excluded = select_cases(config.data_folder, config.exclude)
    reader = ImageReader(config.data_folder)
    context.make_folder(out_dir)
    torch.manual_seed(config.seed)   # identical initial weights on every rank
    random.seed(config.seed)
    np.random.seed(config.seed)
    model = MAEModel(config.encoder)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, nesterov=True,
                                weight_decay=config.weight_decay)
    start_step, history = 0, []
    if config.resume:
        path = out_dir / LATEST
        if not path.exists():
            raise ConfigurationError(f"--resume: no {LATEST} in {out_dir}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        _check_resume(state["settings"], config)
        model.encoder.load_state_dict(state["model"], strict=True)
        model.head.load_state_dict(state["head"], strict=True)
        optimizer.load_state_dict(state["optimizer"])
        restore_rng_state(state["rng"])
        start_step, history = int(state["step"]), list(state["loss_history"])
    model.to(context.device)
    if context.device.type == "cpu":
        attach(model)  # threads follow the CPU share the run gets (nnfm/training/cpu_threads.py)
    sync_norm = context.enabled and context.device.type == "cuda"
    trained = context.wrap(nn.SyncBatchNorm.convert_sync_batchnorm(model) if sync_norm else model)
    use_amp = context.device.type == "cuda" if config.amp == "auto" else config.amp == "bf16"
    snapshot = _snapshot(config)
    stream = PatchStream(reader, cases, config.patch, config.seed, config.batch_size, start_step, config.steps,
                         context.rank, context.world_size)
    loader = DataLoader(stream, batch_size=config.batch_size, num_workers=config.workers, shuffle=False,
                        pin_memory=context.device.type == "cuda", prefetch_factor=4 if config.workers else None)
    step, started = start_step, time.time()
    bar = tqdm(total=config.steps, initial=start_step, disable=not (config.progress and context.is_main),
               desc="MAE", dynamic_ncols=True)
    model.train()
    for batch in loader:
        for group in optimizer.param_groups:
            group["lr"] = poly_lr(config, step)
        image = batch["image"].to(context.device, non_blocking=True)
        mask = block_mask(image.shape[0], config.patch, config.mask_ratio, config.mask_block,
                          _step_generator(config, step, context.rank)).to(context.device)
        with torch.autocast(context.device.type, dtype=torch.bfloat16, enabled=use_amp):
            output = trained(image * mask)
        loss = masked_mse(output, image, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        step += 1
        value = context.mean(float(loss.detach()))
        if not math.isfinite(value):
            raise FloatingPointError(f"loss became {value} at step {step}; lower --lr")
        history.append(value)
        bar.update(1)
        bar.set_postfix(loss=f"{value:.4f}")
        if step % config.checkpoint_every == 0 or step == config.steps:
            export = recalibrated_encoder(model, cases, config, context.device)
            if context.is_main:
                _save(out_dir, step, model, optimizer, snapshot, history, export, export_name(config.encoder))
                write_loss_curve(out_dir, history, ylabel="masked-voxel MSE")
            context.barrier()
    bar.close()
    elapsed = time.time() - started
    return {"start_step": start_step, "step": step, "loss_history": history, "seconds": elapsed,
            "seconds_per_step": elapsed / max(1, step - start_step), "checkpoint": str(out_dir / LATEST),
            "weights": str(out_dir / export_name(config.encoder)), "world_size": context.world_size,
            **case_filter(cases, excluded, config.exclude)}
