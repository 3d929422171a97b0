"""Errors nnFM raises on bad input. Each message names the problem and the fix."""


class NNFMError(Exception):
    """Base class: everything nnFM refuses on purpose derives from this."""


class ConfigurationError(NNFMError):
    """A required setting (environment variable, plans entry, CLI flag) is missing or invalid."""


class PatchSizeError(ConfigurationError):
    """A patch size the network cannot process (not divisible by its stride)."""


class WeightsUnavailableError(NNFMError):
    """Pretrained weights are not on disk and cannot be downloaded."""


class ChecksumMismatchError(NNFMError):
    """A downloaded or cached checkpoint does not have the registered sha256."""


class CheckpointCorruptError(NNFMError):
    """A checkpoint file is truncated or not a readable checkpoint."""


class UnsafeCheckpointError(NNFMError):
    """A checkpoint needs arbitrary pickled code to load; nnFM refuses to execute it."""


class WrongCheckpointFamilyError(NNFMError):
    """A checkpoint belongs to another model family than the network it is loaded into."""


class CheckpointMismatchError(NNFMError):
    """Keys are missing/unexpected or shapes differ between a checkpoint and the network."""


class ChannelMismatchError(CheckpointMismatchError):
    """The checkpoint's input channels cannot be adapted to the dataset's channels."""


class DatasetError(NNFMError):
    """The dataset's files cannot be planned or trained on as they are (non-finite voxels, undeclared or only
    background labels, channels on different grids, degenerate statistics); the message names each file and the fix."""


class FoldInUseError(NNFMError):
    """A fold is being trained by another live process, or is finished and would be overwritten."""


class MissingCheckpointError(NNFMError):
    """A fold lacks the checkpoint a command needs (e.g. nnU-Net's --val without checkpoint_final.pth); the message
    lists the checkpoints it holds and the command that uses one."""
