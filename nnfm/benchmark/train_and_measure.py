"""``nnUNetv2_train`` in a process that reports its own peak memory afterwards.

Usage: python -m nnfm.benchmark.train_and_measure MEASUREMENTS_JSON <nnUNetv2_train arguments>

nnU-Net logs no memory figures and the GPU's peak is only visible inside the training process,
so this calls nnU-Net's own training entry point unchanged and then writes the peak resident
memory of this process (data-augmentation workers excluded) and torch's peak GPU allocation.
"""
import json
import resource
import sys
import time


def peak_memory() -> dict:
    import torch

    # ru_maxrss is in KiB on Linux
    measured = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak_gpu_mb": None}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        measured["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return measured


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        raise SystemExit(__doc__)
    measurements, train_arguments = argv[0], argv[1:]
    from nnunetv2.run.run_training import run_training_entry

    start = time.time()
    sys.argv = ["nnUNetv2_train"] + train_arguments
    run_training_entry()
    # whole_training: this process trained from the first epoch to the last (not --c or --val), so its wall time is
    # the run's; a resumed run's earlier sessions are not in it
    whole = not {"--c", "--val"} & set(train_arguments)
    with open(measurements, "w") as f:
        json.dump(dict(peak_memory(), process_wall_s=time.time() - start, whole_training=whole), f, indent=1)


if __name__ == "__main__":
    main()
