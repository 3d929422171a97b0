"""Runs at interpreter start (from the installed ``nnfm-ext-trainer.pth``): points nnU-Net at nnFM's trainers.

nnU-Net 2.8 finds trainers outside its package only through the ``nnUNet_extTrainer``
environment variable. Adding nnFM's trainers folder (installed as ``nnfm_trainers``) to it here makes
``nnUNetv2_train ... -tr nnFMTrainer`` and ``nnUNetv2_predict ... -tr nnFMTrainer`` work in any
fresh shell of this environment. A folder the user already set keeps priority (ours is appended).
Opt out with ``nnFM_NO_AUTO_EXTTRAINER=1``.
"""
import importlib.util
import os


def register_trainers_folder() -> None:
    if os.environ.get("nnFM_NO_AUTO_EXTTRAINER"):
        return
    spec = importlib.util.find_spec("nnfm_trainers")
    if spec is None or not spec.submodule_search_locations:
        return
    folder = os.path.abspath(list(spec.submodule_search_locations)[0])
    current = [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    if folder not in current:
        os.environ["nnUNet_extTrainer"] = os.pathsep.join(current + [folder])


try:
    register_trainers_folder()
except Exception:  # never break interpreter start-up
    pass
