"""``nnFM_benchmark``: MSD-style benchmark of nnFM trainers against nnU-Net's own, with a few-shot protocol.

One module per job: budget profiles (``profiles``), which plans each trainer needs (``trainer_table``),
data preparation (``data``), planning (``planning``), few-shot folds (``splits``), one resumable run
(``runs``, trained through ``train_and_measure``), reading nnU-Net's outputs (``nnunet_outputs``),
tables (``results``), figures (``plots``) and the command line (``cli``).
"""
