"""2D slices of an nnU-Net preprocessed dataset (read with nnU-Net's own dataset classes), as multi-crop samples.

Every array nnU-Net preprocesses is ``[C, Z, Y, X]`` (the 2d configuration too), so slices are taken
along Z, from any channel. Sample ``i`` is a pure function of (seed, i): a resumed run and each DDP
rank draw exactly what an uninterrupted run would.
"""
import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from nnfm.errors import ConfigurationError
from nnfm.pretraining.dino.crops import CropSettings, multi_crop


def preprocessed_folder(dataset: str, configuration: str = "2d", plans: Optional[str] = None) -> Path:
    """``nnUNet_preprocessed/DatasetXXX/<data_identifier>`` of a configuration in a plans file."""
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    base = os.environ.get("nnUNet_preprocessed")
    if not base:
        raise ConfigurationError("nnUNet_preprocessed is not set; export it (as for nnUNetv2_train) or pass --data-folder.")
    try:
        name = maybe_convert_to_dataset_name(dataset)
    except RuntimeError as error:
        raise ConfigurationError(f"dataset {dataset}: {error} Run nnUNetv2_plan_and_preprocess first.") from None
    root = Path(base) / name
    candidates = [root / f"{plans}.json"] if plans else \
        [root / "nnUNetPlans.json"] + sorted(p for p in root.glob("*Plans*.json") if p.name != "nnUNetPlans.json")
    for plans_file in candidates:
        if plans_file.is_file():
            configurations = json.loads(plans_file.read_text()).get("configurations", {})
            if configuration in configurations:
                folder = root / configurations[configuration].get("data_identifier", "")
                if folder.is_dir():
                    return folder
    raise ConfigurationError(f"no preprocessed data for configuration '{configuration}' of {name} in "
                             f"{[p.name for p in candidates]}; preprocess it (nnUNetv2_plan_and_preprocess -d "
                             f"{dataset} -c {configuration}) or pick another -c/-p.")


class PreprocessedSlices:
    """Index of (case, z) slices; arrays are opened lazily (once per process) through nnU-Net's dataset class."""

    def __init__(self, folder, identifiers: Optional[List[str]] = None):
        from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
        self.folder = str(folder)
        if not Path(self.folder).is_dir():
            raise ConfigurationError(f"preprocessed folder {self.folder} does not exist")
        try:
            self.dataset_class = infer_dataset_class(self.folder)
        except (AssertionError, KeyError, IndexError) as error:
            raise ConfigurationError(f"{self.folder} is not an nnU-Net preprocessed folder (.b2nd or .npz "
                                     f"cases): {error}") from None
        self.dataset = self.dataset_class(self.folder, identifiers)
        if not self.dataset.identifiers:
            raise ConfigurationError(f"no cases in {self.folder}")
        self.slices: List[Tuple[str, int, int]] = []       # (case, channels, z)
        for identifier in self.dataset.identifiers:
            data = self.dataset.load_case(identifier)[0]
            if data.ndim != 4:
                raise ConfigurationError(f"{identifier}: expected [C, Z, Y, X] data, got shape {tuple(data.shape)}")
            self.slices += [(identifier, int(data.shape[0]), z) for z in range(int(data.shape[1]))]
        self._open: Dict[str, object] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.slices)

    def _data(self, identifier: str):
        if self._pid != os.getpid():        # fresh handles in each DataLoader worker
            self._open, self._pid = {}, os.getpid()
        if identifier not in self._open:
            self._open[identifier] = self.dataset.load_case(identifier)[0]
        return self._open[identifier]

    def slice(self, index: int, channel: int) -> torch.Tensor:
        identifier, channels, z = self.slices[index]
        return torch.from_numpy(np.ascontiguousarray(self._data(identifier)[channel % channels, z], dtype=np.float32))


class MultiCropStream(Dataset):
    """Item ``k`` is global sample ``(first_step + k // B) * world * B + rank * B + k % B``."""

    def __init__(self, slices: PreprocessedSlices, crops: CropSettings, seed: int, batch_size: int,
                 first_step: int, last_step: int, rank: int = 0, world_size: int = 1):
        self.slices, self.crops, self.seed = slices, crops, seed
        self.batch_size, self.first_step, self.rank, self.world_size = batch_size, first_step, rank, world_size
        self.length = max(0, last_step - first_step) * batch_size

    def __len__(self) -> int:
        return self.length

    def sample(self, global_index: int) -> Dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, global_index])
        for _ in range(20):                 # skip empty (constant) slices, e.g. padding at volume borders
            image = self.slices.slice(int(rng.integers(len(self.slices))), int(rng.integers(1 << 16)))
            if float(image.std()) > 1e-6:
                break
        return multi_crop(image, self.crops, rng)

    def __getitem__(self, k: int) -> Dict[str, torch.Tensor]:
        step, j = self.first_step + k // self.batch_size, k % self.batch_size
        return self.sample((step * self.world_size + self.rank) * self.batch_size + j)
