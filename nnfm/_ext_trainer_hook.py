"""Runs at interpreter start (from the installed ``nnfm-ext-trainer.pth``): points nnU-Net at nnFM's trainers.

nnU-Net 2.8 finds trainers outside its package only through the ``nnUNet_extTrainer``
environment variable. Adding nnFM's trainers folder (installed as ``nnfm_trainers``) to it here makes
``nnUNetv2_train ... -tr nnFMTrainer`` and ``nnUNetv2_predict ... -tr nnFMTrainer`` work in any
fresh shell of this environment. A folder the user already set keeps priority (ours is appended).
Opt out with ``nnFM_NO_AUTO_EXTTRAINER=1``.
"""
import os


def register_trainers_folder() -> None:
    if os.environ.get("nnFM_NO_AUTO_EXTTRAINER"):
        return
    from nnfm.paths import register_trainers

    register_trainers(os.environ)


try:
    register_trainers_folder()
except Exception:  # never break interpreter start-up
    pass
