"""One entry point for pretrained weights: resolve, read safely, check the family, map, verify, load."""
from pathlib import Path
from typing import Sequence, Tuple, Union

import torch

from nnfm.errors import (ChannelMismatchError, CheckpointMismatchError, ChecksumMismatchError,
                         WeightsUnavailableError, WrongCheckpointFamilyError)
from nnfm.weights.adapters import adapt_stem_channels
from nnfm.weights.checkpoint_io import read_checkpoint, unwrap_state_dict
from nnfm.weights.download import cache_dir, download_entry, sha256_of, verify_sha256
from nnfm.weights.families import detect_family, fit_command, get_family, use_of
from nnfm.weights.input_convention import recorded_convention
from nnfm.weights.random_init import is_random_init
from nnfm.weights.registry import available_weights, embedded_path, get_weights_entry
from nnfm.weights.report import LoadReport

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")


def check_weights_source(source, families: Sequence[str]) -> None:
    """Before any planning work: ``source`` (``-w``) is random initialisation, an existing file, or a registered
    name of one of ``families`` (the encoder's checkpoint families, ``nnfm.registry``). Reads no weights: a file's
    family is checked when the trainer loads it; a registered download is fetched then.

    Raises WeightsUnavailableError (unknown name, missing file) or WrongCheckpointFamilyError (a registered name of
    another encoder's family), each naming the choices."""
    if is_random_init(source) or Path(str(source)).expanduser().is_file():
        return
    entry = get_weights_entry(str(source))
    if entry is None:
        raise _not_found(source)
    if entry.family not in tuple(families):
        raise WrongCheckpointFamilyError(
            f"Weights '{source}' are of the {entry.family} family; this encoder loads {', '.join(families)}. "
            f"Fix: -w one of {', '.join(n for f in families for n in available_weights(f)) or 'random'}, "
            f"or, to use these weights, {fit_command(entry.family)}.")


def _not_found(source) -> WeightsUnavailableError:
    path = Path(str(source)).expanduser()
    if "/" in str(source) or str(source).endswith(CHECKPOINT_SUFFIXES):
        return WeightsUnavailableError(f"Checkpoint missing: {path} does not exist. Check the path "
                                       f"(-w, nnFM_WEIGHTS or the plans' nnfm.weights).")
    return WeightsUnavailableError(f"Unknown weights '{source}': not a file and not a registered name. "
                                   f"Registered: {', '.join(available_weights())}. A local path works too.")


def resolve_checkpoint(source) -> Tuple[Path, str]:
    """A local file, or a registry name (cached, else downloaded). Returns (path, sha256)."""
    path = Path(str(source)).expanduser()
    if path.is_file():
        return path, sha256_of(path)
    entry = get_weights_entry(str(source))
    if entry is None:
        raise _not_found(source)
    if entry.embedded:
        return _embedded_file(entry)
    cached = cache_dir() / entry.filename
    if not cached.is_file():
        cached = download_entry(entry)
    sha = sha256_of(cached)
    try:
        verify_sha256(entry, sha, f"Cached {cached}")
    except ChecksumMismatchError as error:
        raise ChecksumMismatchError(f"{error} Delete it to download it again.") from None
    return cached, sha


def _embedded_file(entry) -> Tuple[Path, str]:
    """An entry shipped inside the package: present and with its registered sha256, or a named error."""
    path = embedded_path(entry)
    if not path.is_file():
        raise WeightsUnavailableError(f"Embedded weights '{entry.name}' are missing from the installation ({path}). "
                                      f"Fix: reinstall nnFM from its repository (pip install --force-reinstall "
                                      f"--no-deps /path/to/nnFM).")
    sha = sha256_of(path)
    verify_sha256(entry, sha, f"Embedded {path}")
    return path, sha


def pretrained_target(network: torch.nn.Module) -> torch.nn.Module:
    """The module a network's pretrained checkpoints load into: its ``pretrained_part()`` where it defines one
    (nnU-Net's U-Nets, nnfm/networks/dna_unet.py: a PlainConvUNet loads encoder and decoder), else ``encoder``."""
    part = getattr(network, "pretrained_part", None)
    return part() if callable(part) else network.encoder


def load_pretrained(module: torch.nn.Module, source, family: Union[str, Sequence[str]] = "anatomix_unet",
                    adapt_input_channels: bool = True) -> LoadReport:
    """Load ``source`` (registry name or path) into ``module`` strictly; raise a named error otherwise.

    ``family`` may name several families the module accepts (e.g. a DINOv3 ViT loads official DINOv3,
    MedDINOv3 and MedDINOv3 nnU-Net checkpoints); the detected one is used and reported.
    """
    families = (family,) if isinstance(family, str) else tuple(family)
    path, sha = resolve_checkpoint(source)
    checkpoint = read_checkpoint(path)  # kept whole: its metadata (plans) tells the position-embedding grid
    state, unwrapped = unwrap_state_dict(checkpoint)
    found = detect_family(state)
    record = get_family(found) if found else None
    if found not in families or record is None or record.filter is None:
        needed = " or ".join(f"'{f}'" for f in families)
        registered = sorted({n for f in families for n in available_weights(f)})
        raise WrongCheckpointFamilyError(
            f"{path} is a '{found or 'unknown'}' checkpoint, but this network needs {needed}. "
            f"That checkpoint fits {use_of(found) if record else 'no nnFM network'}; for this network use weights from "
            f"the registry ({', '.join(registered) or 'none registered'}) or a {needed} file.")
    family = found
    mapped, dropped = record.filter(state)
    entry = get_weights_entry(str(source))
    report = LoadReport(str(source), str(path), sha, family, intentionally_dropped=dropped, unwrapped=unwrapped,
                        input_convention=recorded_convention(path, checkpoint) or (entry and entry.input_convention))
    target = module.state_dict()
    if record.adapter is not None:  # e.g. position embeddings resized to the network's patch grid
        report.adapted.update(record.adapter(mapped, module, target, checkpoint))

    stem, axis = record.stem_key, record.stem_in_dim
    if stem in mapped and stem in target and mapped[stem].shape != target[stem].shape \
            and mapped[stem].dim() == target[stem].dim() \
            and all(a == b for i, (a, b) in enumerate(zip(mapped[stem].shape, target[stem].shape)) if i != axis):
        have, need = mapped[stem].shape[axis], target[stem].shape[axis]
        try:
            if not adapt_input_channels:
                raise ValueError
            mapped[stem], how = adapt_stem_channels(mapped[stem], need, axis)
            report.adapted[stem] = how
        except ValueError:
            raise ChannelMismatchError(
                f"ChannelMismatchError: the checkpoint's stem {stem} takes {have} input channel(s), the dataset has "
                f"{need}; {have} -> {need} cannot be mapped (1 -> N, N -> 1 and RGB -> N can). Train with "
                f"nnFMTrainer_scratch, or use a checkpoint pretrained with {need} channel(s).") from None

    report.missing = sorted(k for k in target if k not in mapped)
    report.unexpected = sorted(k for k in mapped if k not in target)
    report.shape_mismatched = [(k, list(v.shape), list(target[k].shape)) for k, v in mapped.items()
                               if k in target and v.shape != target[k].shape]
    report.loaded = sorted(k for k in mapped if k in target and mapped[k].shape == target[k].shape)
    if not report.ok:
        raise CheckpointMismatchError("CheckpointMismatchError: the checkpoint does not match the network.\n"
                                      + report.format(max_items=50))
    module.load_state_dict({k: v.to(target[k].dtype) for k, v in mapped.items()}, strict=True)
    return report
