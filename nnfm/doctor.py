"""``nnFM_doctor``: check that nnU-Net will find nnFM's trainers and data folders, and say how to fix it."""
import os
import sys


def diagnose() -> list:
    """Return a list of (ok, message) lines."""
    from nnfm_trainers import TRAINERS_DIR

    lines = []
    ext = [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    if os.path.abspath(TRAINERS_DIR) in [os.path.abspath(p) for p in ext]:
        lines.append((True, f"nnUNet_extTrainer includes nnFM's trainers ({TRAINERS_DIR})"))
    else:
        lines.append((False, "nnUNet_extTrainer does not include nnFM's trainers, so nnUNetv2_train/-predict "
                             "cannot find nnFMTrainer. Fix: export nnUNet_extTrainer="
                             f"{os.pathsep.join(ext + [TRAINERS_DIR])}"))
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        value = os.environ.get(name)
        lines.append((bool(value), f"{name}={value}" if value else f"{name} is not set. Fix: export {name}=/path/to/{name}"))
    return lines


def main() -> None:
    lines = diagnose()
    for ok, message in lines:
        print(("OK    " if ok else "FIX   ") + message)
    sys.exit(0 if all(ok for ok, _ in lines) else 1)


if __name__ == "__main__":
    main()
