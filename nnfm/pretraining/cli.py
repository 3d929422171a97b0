"""``nnFM_pretrain``: pretraining commands, one subcommand each.

    nnFM_pretrain synth --out DIR --steps N --batch-size B --size 96 --workers W [--labels-dir DIR] [--resume]
    nnFM_pretrain synth-preview --out preview.png [--n 6]
    nnFM_pretrain synth-benchmark [--sizes 96 128]
    nnFM_pretrain dino -d 4 -c 2d --stage 1 --out DIR [--init dinov3.pth] [--resume]
    nnFM_pretrain dino -d 4 -c 2d --stage 2 --from DIR --out DIR2   (Gram anchoring; stage 3: higher resolution)
    nnFM_pretrain mae -d 4 -c 3d_fullres --exclude-split splits_final.json --patch 48 64 48 --out DIR [--resume]

Multi-GPU / multi-process: ``torchrun --nproc_per_node G -m nnfm.pretraining.cli synth ...``.
A new method (e.g. ``dino``) adds one ``_add_<name>`` function to ``SUBCOMMANDS``.
"""
import argparse
import json
import sys
from typing import Callable, List, Optional

from nnfm.flags import parse_args


def _add_synth(subparsers) -> None:
    from nnfm.pretraining.supcon_heads import HEADS
    from nnfm.pretraining.supcon_model import ANATOMIX_TAPS, SAMPLINGS
    from nnfm.pretraining.synth_trainer import CONVENTIONS, LR_SCHEDULES, SynthPretrainConfig
    defaults = _defaults(SynthPretrainConfig)
    p = subparsers.add_parser("synth", help="anatomix-style voxel SupCon pretraining on synthetic volumes",
                              description="Pretrain a 3D encoder network (default: the anatomix U-Net; also "
                                          "plainconv_unet, resenc_unet: nnU-Net's own networks) on synthetic label "
                                          "ensembles with anatomix's recipe (defaults: neel-dey/anatomix "
                                          "pretraining/scripts/pretrain_anatomix.py); writes DIR/anatomix_synth.pth "
                                          "(DIR/<encoder>_synth.pth; use with -w / nnFM_WEIGHTS=...) and "
                                          "DIR/checkpoint_latest.pth (for --resume).")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--encoder", default=defaults["encoder"],
                   help="registry encoder whose network is pretrained (python -m nnfm.registry lists them)")
    p.add_argument("--input-convention", default=None, choices=CONVENTIONS,
                   help="intensities the network sees: window01 (the synthetic [0, 1] views, anatomix's) or zscore "
                        "(each view z-scored, what nnU-Net's normalisation feeds); default: the encoder's")
    p.add_argument("--steps", type=int, default=defaults["steps"],
                   help="total optimizer steps (also the target when resuming)")
    p.add_argument("--batch-size", type=int, default=defaults["batch_size"],
                   help="samples per step and process (x2 views); anatomix: 1")
    p.add_argument("--size", type=int, default=defaults["size"],
                   help="cube edge in voxels (multiple of 16, >= 32); anatomix: 128")
    p.add_argument("--workers", type=int, default=defaults["workers"],
                   help="data-generating processes per training process")
    p.add_argument("--labels-dir", default=None, help="folder of label maps (e.g. nnU-Net labelsTr) to mix in")
    p.add_argument("--real-label-prob", type=float, default=defaults["real_label_prob"],
                   help="share of samples from --labels-dir")
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint_latest.pth")
    p.add_argument("--seed", type=int, default=defaults["seed"])
    p.add_argument("--lr", type=float, default=defaults["lr"])
    p.add_argument("--weight-decay", type=float, default=defaults["weight_decay"],
                   help="AdamW weight decay (anatomix: 1e-5)")
    p.add_argument("--lr-schedule", default=defaults["lr_schedule"], choices=LR_SCHEDULES,
                   help="anatomix: 5 equal phases at 1, .8, .6, .4, .2 x lr (its const_linear); constant")
    p.add_argument("--warmup-steps", type=int, default=defaults["warmup_steps"],
                   help="linear warm-up from lr/100 (anatomix: none)")
    p.add_argument("--temperature", type=float, default=defaults["temperature"])
    p.add_argument("--voxels-per-layer", type=int, default=defaults["voxels_per_layer"])
    p.add_argument("--head-dim", type=int, default=defaults["head_dim"])
    p.add_argument("--taps", nargs="+", default=None,
                   help="where the loss is applied: anatomix U-Net layer indices (default: its conv outputs "
                        f"{' '.join(map(str, ANATOMIX_TAPS))}; nnFM's earlier taps: 65 57 50), or submodule names of "
                        "another encoder's network (default: the bottleneck, the stage above it and every decoder "
                        "level, nnfm/pretraining/taps.py)")
    p.add_argument("--sampling", default=defaults["sampling"], choices=SAMPLINGS,
                   help="voxel positions: uniform without replacement (anatomix) or label-balanced (nnFM's earlier)")
    p.add_argument("--head", default=defaults["head"], choices=sorted(HEADS),
                   help="projection head: anatomix (3 layers, batch norm) or plain (nnFM's earlier 2 layers)")
    p.add_argument("--init", default=defaults["init"], choices=("anatomix", "torch"),
                   help="initial weights: anatomix's kaiming init or torch's default")
    p.add_argument("--checkpoint-every", type=int, default=defaults["checkpoint_every"])
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=_run_synth)


def _run_synth(args) -> int:
    from nnfm.errors import NNFMError
    from nnfm.pretraining.synth_trainer import SynthPretrainConfig, train_synth
    if args.size % 16 or args.size < 32:
        raise SystemExit(f"--size must be a multiple of 16 and >= 32 (the U-Net pools 4 times), got {args.size}")
    config = SynthPretrainConfig(
        out_dir=args.out, encoder=args.encoder, input_convention=args.input_convention, steps=args.steps, batch_size=args.batch_size, size=args.size, workers=args.workers,
        labels_dir=args.labels_dir, real_label_prob=args.real_label_prob, seed=args.seed, resume=args.resume,
        lr=args.lr, weight_decay=args.weight_decay, lr_schedule=args.lr_schedule, warmup_steps=args.warmup_steps,
        temperature=args.temperature, voxels_per_layer=args.voxels_per_layer, head_dim=args.head_dim,
        taps=_taps(args.taps), sampling=args.sampling, head=args.head, init=args.init,
        checkpoint_every=args.checkpoint_every, device=args.device, progress=not args.no_progress)
    try:
        summary = train_synth(config)
    except (ValueError, NNFMError) as error:  # bad taps/settings/paths: the message says what to change
        raise SystemExit(f"nnFM_pretrain synth: {error}") from None
    history = summary.pop("loss_history")
    if summary["world_size"] == 1 or _is_main_process():
        summary["loss_first"] = history[0] if history else None
        summary["loss_last"] = history[-1] if history else None
        print(json.dumps(summary, indent=1))
    return 0


def _taps(values):
    """--taps as given: layer indices (anatomix) or submodule names; None: the encoder's defaults."""
    if not values:
        return None
    return tuple(int(v) if v.isdigit() else v for v in values)


def _is_main_process() -> bool:
    import os
    return os.environ.get("RANK", "0") == "0"


def _add_synth_preview(subparsers) -> None:
    p = subparsers.add_parser("synth-preview", help="PNG grid of synthetic samples (view 1 / view 2 / labels)")
    p.add_argument("--out", required=True, help="PNG path")
    p.add_argument("--n", type=int, default=6)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--labels-dir", default=None)
    p.set_defaults(run=_run_synth_preview)


def _run_synth_preview(args) -> int:
    from nnfm.pretraining.synth import SyntheticPairGenerator
    from nnfm.pretraining.synth.preview import write_preview_png
    generator = SyntheticPairGenerator(seed=args.seed, size=args.size, labels_dir=args.labels_dir)
    print(write_preview_png(args.out, args.n, generator))
    return 0


def _add_synth_benchmark(subparsers) -> None:
    p = subparsers.add_parser("synth-benchmark", help="samples/s of the synthetic engine on one CPU core")
    p.add_argument("--sizes", type=int, nargs="+", default=[96, 128])
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--step-seconds", type=float, default=None,
                   help="training step time to size the worker pool for (with --batch-size)")
    p.add_argument("--batch-size", type=int, default=2)
    p.set_defaults(run=_run_synth_benchmark)


def _run_synth_benchmark(args) -> int:
    from nnfm.pretraining.synth.benchmark import measure_samples_per_second, workers_needed
    for size in args.sizes:
        rate = measure_samples_per_second(size, args.samples)
        line = {"size": size, "samples_per_s_per_core": round(rate, 3)}
        if args.step_seconds:
            line["workers_needed"] = workers_needed(rate, args.batch_size, args.step_seconds)
        print(json.dumps(line))
    return 0


def _defaults(config_class) -> dict:
    """A pretraining config dataclass' defaults, which its command's flags default to (the values and their sources
    are stated once, in the dataclass)."""
    from dataclasses import MISSING, fields
    return {f.name: f.default for f in fields(config_class) if f.default is not MISSING}


def _add_run_loop_arguments(p) -> None:
    """Resume, seed, checkpointing, loaders, device and progress: the same for every dataset-based method."""
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint_latest.pth")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--workers", type=int, default=2, help="data-loading processes per training process")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-progress", action="store_true")


def _exit_on_bad_input(method: str, run, args) -> int:
    from nnfm.errors import NNFMError
    try:
        return run(args)
    except NNFMError as error:   # bad input: the message says what to change, no traceback
        raise SystemExit(f"nnFM_pretrain {method}: {error}") from None


def _add_dino(subparsers) -> None:
    from nnfm.pretraining.dino.trainer import DinoPretrainConfig
    defaults = _defaults(DinoPretrainConfig)
    p = subparsers.add_parser("dino", help="DINOv3-style SSL of a timm DINOv3 ViT on nnU-Net preprocessed slices",
                              description="Stage 1: DINO + iBOT + KoLeo with an EMA teacher and multi-crop; stage 2: "
                                          "plus Gram anchoring to the previous stage's teacher; stage 3: stage 2 at a "
                                          "higher resolution. Writes DIR/meddinov3_teacher.pth (MedDINOv3 layout, "
                                          "for nnFM's ViT loader), DIR/checkpoint_latest.pth (--resume) and loss "
                                          "curves (PNG).")
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("-d", "--dataset", help="nnU-Net dataset id or name (under $nnUNet_preprocessed)")
    data.add_argument("--data-folder", help="a preprocessed folder (*.b2nd / *.npz) instead of -d/-c/-p")
    p.add_argument("-c", "--configuration", default="2d", help="nnU-Net configuration whose data is sliced")
    p.add_argument("-p", "--plans", default=None, help="plans identifier (default: nnUNetPlans, else any *Plans*)")
    p.add_argument("--out", required=True, help="output folder of this stage")
    p.add_argument("--stage", type=int, default=1, choices=(1, 2, 3))
    p.add_argument("--from", dest="from_dir", default=None, help="stages 2-3: the previous stage's --out")
    p.add_argument("--init", default=None, help="stage 1: DINOv3/MedDINOv3 weights (path or registered name)")
    p.add_argument("--model", default=defaults["model"], help="timm DINOv3 model name")
    p.add_argument("--embed-dim", type=int, default=None,
                   help="override for small/tiny ViTs (with --depth, --num-heads)")
    p.add_argument("--depth", type=int, default=None)
    p.add_argument("--num-heads", type=int, default=None)
    p.add_argument("--steps", type=int, default=defaults["steps"],
                   help="total optimizer steps of this stage (also when resuming)")
    p.add_argument("--batch-size", type=int, default=defaults["batch_size"], help="images per step and process")
    p.add_argument("--global-size", type=int, default=None, help="global crop edge (default 224; stage 3: 2x previous)")
    p.add_argument("--local-size", type=int, default=None, help="local crop edge (default 96)")
    p.add_argument("--n-local", type=int, default=defaults["n_local"], help="local crops per image")
    p.add_argument("--prototypes", type=int, default=defaults["n_prototypes"])
    p.add_argument("--head-hidden", type=int, default=defaults["head_hidden"])
    p.add_argument("--head-bottleneck", type=int, default=defaults["head_bottleneck"])
    p.add_argument("--lr", type=float, default=defaults["lr"])
    p.add_argument("--momentum", type=float, default=defaults["momentum"][0],
                   help="teacher EMA momentum at the start (cosine to 1); short runs need ~0.9")
    p.add_argument("--teacher-temp", type=float, default=defaults["teacher_temp"][1],
                   help="teacher temperature after warm-up")
    p.add_argument("--warmup-teacher-temp", type=float, default=defaults["teacher_temp"][0],
                   help="teacher temperature at step 0 (linear to --teacher-temp over a third of the steps); "
                        "short runs from scratch need a sharper teacher, e.g. 0.02 for both")
    p.add_argument("--koleo-weight", type=float, default=defaults["koleo_weight"])
    p.add_argument("--gram-weight", type=float, default=None, help="default 0 in stage 1, 1.0 in stages 2-3")
    p.add_argument("--freeze-last-layer-steps", type=int, default=defaults["freeze_last_layer_steps"])
    _add_run_loop_arguments(p)
    p.set_defaults(run=_run_dino)


def _run_dino(args) -> int:
    return _exit_on_bad_input("dino", _run_dino_checked, args)


def _run_dino_checked(args) -> int:
    from nnfm.pretraining.dino.data import preprocessed_folder
    from nnfm.pretraining.dino.trainer import DinoPretrainConfig, train_dino
    folder = args.data_folder or str(preprocessed_folder(args.dataset, args.configuration, args.plans))
    model_kwargs = {k: v for k, v in (("embed_dim", args.embed_dim), ("depth", args.depth),
                                      ("num_heads", args.num_heads)) if v is not None}
    config = DinoPretrainConfig(
        out_dir=args.out, data_folder=folder, stage=args.stage, init=args.init, from_dir=args.from_dir,
        model=args.model, model_kwargs=model_kwargs, steps=args.steps, batch_size=args.batch_size,
        global_size=args.global_size, local_size=args.local_size, n_local=args.n_local, n_prototypes=args.prototypes,
        head_hidden=args.head_hidden, head_bottleneck=args.head_bottleneck, lr=args.lr,
        momentum=(args.momentum, 1.0), teacher_temp=(args.warmup_teacher_temp, args.teacher_temp),
        koleo_weight=args.koleo_weight, gram_weight=args.gram_weight,
        freeze_last_layer_steps=args.freeze_last_layer_steps, seed=args.seed, resume=args.resume,
        checkpoint_every=args.checkpoint_every, workers=args.workers, device=args.device,
        progress=not args.no_progress)
    summary = train_dino(config)
    history = summary.pop("loss_history")
    if summary["world_size"] == 1 or _is_main_process():
        for name, values in history.items():
            summary[f"{name}_first"], summary[f"{name}_last"] = values[0], values[-1]
        print(json.dumps(summary, indent=1))
    return 0


def _add_mae(subparsers) -> None:
    from nnfm.pretraining.mae.trainer import MAEPretrainConfig
    defaults = _defaults(MAEPretrainConfig)
    p = subparsers.add_parser("mae", help="masked-image reconstruction of an encoder network on nnU-Net data",
                              description="nnssl-style MAE for CNNs (75%% of 16^3 blocks zeroed, MSE on masked "
                                          "voxels, SGD 1e-2 / poly) on the images of an nnU-Net preprocessed "
                                          "dataset; labels are never read. Writes DIR/anatomix_mae.pth (anatomix "
                                          "layout; DIR/<encoder>_mae.pth for --encoder, for nnFM_WEIGHTS / -w), "
                                          "DIR/checkpoint_latest.pth (--resume) and DIR/loss_curve.png.")
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("-d", "--dataset", help="nnU-Net dataset id or name (under $nnUNet_preprocessed)")
    data.add_argument("--data-folder", help="a preprocessed folder (*.b2nd / *.npz / *.npy) instead of -d/-c/-p")
    p.add_argument("-c", "--configuration", default="3d_fullres", help="nnU-Net configuration whose images are used")
    p.add_argument("-p", "--plans", default=None, help="plans identifier (default: nnUNetPlans, else any *Plans*)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--encoder", default=defaults["encoder"],
                   help="registry encoder whose network is pretrained (3D; e.g. plainconv_unet, resenc_unet)")
    p.add_argument("--exclude", nargs="+", default=[], metavar="CASE", help="case identifiers never to read")
    p.add_argument("--exclude-split", default=None, metavar="FILE",
                   help="JSON: a list of case ids, an nnU-Net splits file (the val cases of --split-fold) or "
                        "nnFM's benchmark marker (its held_out_test_cases)")
    p.add_argument("--split-fold", type=int, default=0, help="fold of an nnU-Net splits file given to --exclude-split")
    p.add_argument("--patch", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
                   help="patch size, multiples of 16 (default: the configuration's patch size rounded up to 16)")
    p.add_argument("--batch-size", type=int, default=None, help="patches per step and process (default: the plans')")
    p.add_argument("--steps", type=int, default=defaults["steps"],
                   help="total optimizer steps (also the target when resuming)")
    p.add_argument("--mask-ratio", type=float, default=defaults["mask_ratio"],
                   help="share of masked blocks (nnssl: 0.75)")
    p.add_argument("--mask-block", type=int, default=defaults["mask_block"],
                   help="mask block edge in voxels (nnssl: 16)")
    p.add_argument("--lr", type=float, default=defaults["lr"], help="SGD lr, poly decay (nnssl: 1e-2)")
    p.add_argument("--momentum", type=float, default=defaults["momentum"], help="SGD Nesterov momentum (nnssl: 0.99)")
    p.add_argument("--weight-decay", type=float, default=defaults["weight_decay"], help="(nnssl: 3e-5)")
    p.add_argument("--grad-clip", type=float, default=defaults["grad_clip"], help="gradient norm clip (nnssl: 12)")
    p.add_argument("--bn-recalibration-batches", type=int, default=defaults["bn_recalibration_batches"],
                   help="unmasked batches that re-estimate batch-norm statistics before each export (0: off)")
    _add_run_loop_arguments(p)
    p.set_defaults(run=_run_mae)


def _run_mae(args) -> int:
    return _exit_on_bad_input("mae", _run_mae_checked, args)


def _run_mae_checked(args) -> int:
    from nnfm.errors import ConfigurationError
    from nnfm.pretraining.dino.data import preprocessed_folder
    from nnfm.pretraining.mae.cases import read_exclusions
    from nnfm.pretraining.mae.plans import configuration_defaults
    from nnfm.pretraining.mae.trainer import MAEPretrainConfig, train_mae
    folder = args.data_folder or str(preprocessed_folder(args.dataset, args.configuration, args.plans))
    patch, batch_size = args.patch, args.batch_size
    if patch is None or batch_size is None:
        planned_patch, planned_batch = configuration_defaults(folder)
        patch = patch or planned_patch
        batch_size = batch_size or planned_batch
    if patch is None:
        raise ConfigurationError(f"no plans describe {folder}; pass --patch Z Y X (multiples of 16)")
    exclude = list(args.exclude) + (read_exclusions(args.exclude_split, args.split_fold) if args.exclude_split else [])
    config = MAEPretrainConfig(
        out_dir=args.out, data_folder=folder, encoder=args.encoder, patch=tuple(patch), batch_size=batch_size or MAEPretrainConfig.batch_size,
        steps=args.steps,
        exclude=tuple(sorted(set(exclude))), mask_ratio=args.mask_ratio, mask_block=args.mask_block, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, grad_clip=args.grad_clip,
        bn_recalibration_batches=args.bn_recalibration_batches, seed=args.seed, resume=args.resume,
        checkpoint_every=args.checkpoint_every, workers=args.workers, device=args.device,
        progress=not args.no_progress)
    summary = train_mae(config)
    history = summary.pop("loss_history")
    if summary["world_size"] == 1 or _is_main_process():
        summary["loss_first"] = history[0] if history else None
        summary["loss_last"] = history[-1] if history else None
        print(json.dumps(summary, indent=1))
    return 0


SUBCOMMANDS: List[Callable] = [_add_synth, _add_synth_preview, _add_synth_benchmark, _add_dino, _add_mae]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnFM_pretrain", description="Pretrain nnFM encoders.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(build_parser(), argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
