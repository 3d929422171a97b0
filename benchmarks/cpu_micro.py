"""Forward + deep-supervision loss + backward + SGD step of one network on random data: the CPU micro-benchmark of
issue 29 (documentation/benchmarks.md), without data loading, for what memory format and torch.compile do.

    python benchmarks/cpu_micro.py PLANS.json TRAINER [--threads 2] [--channels-last] [--compile] [--profile]

PLANS.json is a preprocessed plans file (nnUNetPlans.json, nnFMPlans_anatomix.json); TRAINER the trainer class that
builds its network (nnUNetTrainer, nnFMTrainer). Prints median seconds per phase over ``--steps`` steps.
"""
import argparse
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("plans")
    parser.add_argument("trainer")
    parser.add_argument("--patch", type=int, nargs=3, default=[32, 48, 32])
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's operator table of 3 steps")
    args = parser.parse_args()

    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
    import os

    import nnunetv2
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnfm.paths import package_folder

    # nnU-Net's trainers, then nnFM's (as nnUNetv2_train finds them through nnUNet_extTrainer)
    trainer = recursive_find_python_class(os.path.join(nnunetv2.__path__[0], "training", "nnUNetTrainer"),
                                          args.trainer, "nnunetv2.training.nnUNetTrainer") or \
        recursive_find_python_class(package_folder("nnfm_trainers"), args.trainer, "nnfm_trainers")
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    plans = PlansManager(args.plans)
    configuration = plans.get_configuration("3d_fullres")
    net = trainer.build_network_architecture(plans, configuration, 1, 3, True)
    x = torch.randn(args.batch_size, 1, *args.patch)
    with torch.no_grad():
        outputs = len(net(x))
    targets = [torch.randint(0, 3, (args.batch_size, 1, *[p // 2 ** i for p in args.patch])).float()
               for i in range(outputs)]
    loss = DeepSupervisionWrapper(
        DC_and_CE_loss({"batch_dice": False, "smooth": 1e-5, "do_bg": False, "ddp": False}, {}, weight_ce=1,
                       weight_dice=1, ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss),
        [1 / 2 ** i for i in range(outputs)])
    if args.channels_last:
        net = net.to(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.SGD(net.parameters(), 1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5)
    forward = torch.compile(net) if args.compile else net

    def step():
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        value = loss(forward(x), targets)
        middle = time.perf_counter()
        value.backward()
        end = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
        optimizer.step()
        return middle - start, end - middle, time.perf_counter() - end

    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    for _ in range(2):
        step()
    times = [step() for _ in range(args.steps)]
    median = [sorted(t[i] for t in times)[len(times) // 2] for i in range(3)]
    print(f"{args.trainer} threads={args.threads} channels_last={args.channels_last} compile={args.compile}: first step "
          f"{first:.2f} s; forward+loss {median[0]:.3f} backward {median[1]:.3f} step {median[2]:.3f} "
          f"total {sum(median):.3f} s")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=40))


if __name__ == "__main__":
    main()
