"""Default patch and batch size of ``nnFM_pretrain mae``: those of the configuration whose data is used."""
import json
from pathlib import Path
from typing import Optional, Tuple


def configuration_defaults(folder) -> Tuple[Optional[Tuple[int, int, int]], Optional[int]]:
    """(patch rounded up to multiples of 16, batch size) of the plans configuration whose ``data_identifier`` is
    ``folder``'s name, from the ``*Plans*.json`` files beside it; (None, None) if none describes it or it is 2D."""
    folder = Path(folder)
    for plans_file in sorted(folder.parent.glob("*Plans*.json")):
        try:
            configurations = json.loads(plans_file.read_text()).get("configurations", {})
        except (OSError, ValueError):
            continue
        for configuration in configurations.values():
            patch = configuration.get("patch_size")
            if configuration.get("data_identifier") == folder.name and patch and len(patch) == 3:
                return tuple(-(-int(p) // 16) * 16 for p in patch), configuration.get("batch_size")
    return None, None
