"""2-process gloo (CPU) run of the real nnFMTrainer_headWarmup across the frozen -> unfrozen epoch boundary.

Usage: python ddp_freeze_worker.py PREPROCESSED_DATASET RESULTS OUT_JSON. Run by tests/test_ddp_freeze.py.

nnU-Net's own DDP path assumes CUDA (it sets the device to cuda:rank, wraps with device_ids=[rank] and converts
batch norm to SyncBatchNorm, which needs a GPU). This harness keeps everything else real and only moves that to
the CPU: the trainer's device is CPU, and in nnU-Net's trainer module DDP is built without device_ids and
SyncBatchNorm conversion is skipped. Epoch 0 is the head warm-up (encoder frozen), epoch 1 trains everything;
two iterations each, through nnU-Net's own data loaders and train_step.
"""
import json
import os
import sys
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2
ITERATIONS = 2


def _snapshot(module: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items() if v.is_floating_point()}


def _changed(before: dict, module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in module.state_dict().items() if k in before)


def worker(rank: int, preprocessed: str, results: str, init_file: str, out_json: str) -> None:
    os.environ.update(nnFM_EPOCHS="20", nnFM_WEIGHTS="random", nnUNet_n_proc_DA="0", nnUNet_compile="0",
                      nnUNet_results=results)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as nnunet_trainer_module
    from torch.nn.parallel import DistributedDataParallel

    nnunet_trainer_module.DDP = lambda module, device_ids=None: DistributedDataParallel(module)
    torch.nn.SyncBatchNorm.convert_sync_batchnorm = lambda module, process_group=None: module
    from batchgenerators.utilities.file_and_folder_operations import load_json, join

    # the head warm-up (frozen encoder) is the recipe of nnFMTrainer_headWarmup (nnFMTrainer's own has none)
    from nnfm_trainers.nnfm_trainer_variants import nnFMTrainer_headWarmup

    class CPUnnFMTrainer(nnFMTrainer_headWarmup):
        def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                     device: torch.device = torch.device("cpu")):  # nnU-Net records these arguments by name
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.device, self.grad_scaler = torch.device("cpu"), None

    plans = dict(load_json(join(preprocessed, "nnFMPlans_anatomix.json")), continue_training=False)  # as nnU-Net's run_training
    trainer = CPUnnFMTrainer(plans, "3d_fullres", 0, load_json(join(preprocessed, "dataset.json")))
    trainer.on_train_start()
    net = trainer._bare_network()
    report = {"rank": rank, "epochs": []}
    for epoch in (0, 1):
        trainer.current_epoch = epoch
        trainer.on_epoch_start()
        trainer.on_train_epoch_start()
        encoder, heads = _snapshot(net.encoder), _snapshot(net.decoder)
        losses = [float(trainer.train_step(next(trainer.dataloader_train))["loss"]) for _ in range(ITERATIONS)]
        report["epochs"].append({"frozen": trainer.fine_tune_schedule().encoder_frozen(epoch), "losses": losses,
                                 "encoder_changed": _changed(encoder, net.encoder),
                                 "heads_changed": _changed(heads, net.decoder)})
    # DDP keeps the replicas identical: compare a checksum of every weight across ranks
    checksum = torch.stack([p.detach().double().sum() for p in net.parameters()])
    gathered = [torch.zeros_like(checksum) for _ in range(WORLD)]
    dist.all_gather(gathered, checksum)
    report["replicas_identical"] = all(torch.allclose(g, gathered[0]) for g in gathered)
    trainer.on_train_end()
    dist.destroy_process_group()
    with open(f"{out_json}.{rank}", "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    preprocessed_folder, results_folder, out = sys.argv[1:4]
    init = os.path.join(tempfile.mkdtemp(prefix="nnfm_ddp_"), "init")
    mp.spawn(worker, args=(preprocessed_folder, results_folder, init, out), nprocs=WORLD, join=True)
