"""Final per-class layers under ``seg_layers``: the name nnU-Net's ``-pretrained_weights`` skips.

nnU-Net's ``load_pretrained_weights`` transfers every weight except keys containing ``.seg_layers.``
(the layers whose shape depends on the number of classes). nnFM networks therefore keep their
final per-class convolutions in a ``seg_layers`` ModuleList. Checkpoints written before this name
(``decoder.heads.N``, ``decoder.decode.<num_stages>``) still load: ``rename_old_keys`` maps them.
"""
from typing import Dict, MutableMapping


def rename_old_keys(state_dict: MutableMapping, prefix: str, renames: Dict[str, str]) -> None:
    """In place: ``prefix + old + rest`` -> ``prefix + new + rest`` for each ``old -> new`` (old checkpoints)."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        local = key[len(prefix):]
        for old, new in renames.items():
            if local.startswith(old):
                state_dict[prefix + new + local[len(old):]] = state_dict.pop(key)
                break
