"""One entry point for pretrained weights: resolve, read safely, check the family, map, verify, load."""
import os
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple, Union

import torch

from nnfm.errors import (ChannelMismatchError, CheckpointMismatchError, ChecksumMismatchError,
                         WeightsUnavailableError, WrongCheckpointFamilyError)
from nnfm.weights.adapters import adapt_stem_channels
from nnfm.weights.checkpoint_io import read_checkpoint, unwrap_state_dict
from nnfm.weights.download import cache_dir, cached_file, download_entry, hub_file, sha256_of, verify_sha256
from nnfm.weights.families import (detect_family, fit_command, get_family, same_layout_families, scratch_advice,
                                    use_of)
from nnfm.weights.input_convention import recorded_convention
from nnfm.weights.random_init import is_random_init
from nnfm.weights.registry import available_weights, embedded_path, get_weights_entry
from nnfm.weights.report import LoadReport

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")


def checkpoint_files_in(folder: Path) -> list:
    """The checkpoint files (CHECKPOINT_SUFFIXES) in ``folder`` and its sub-folders, hidden ones left out (a model
    hub's download folder keeps its metadata in ``.cache``), sorted."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / f for f in sorted(files) if f.endswith(CHECKPOINT_SUFFIXES) and not f.startswith(".")]
    return found


def resolve_weights_folder(source):
    """``-w`` / ``nnFM_WEIGHTS`` naming a folder (a downloaded model snapshot): its only checkpoint file.

    Returns (the file as a string, a sentence saying which file was taken), or (``source``, None) when ``source`` is
    not a folder. WeightsUnavailableError when the folder holds no checkpoint file, or several (listed, with the
    ``-w`` that picks one)."""
    folder = Path(str(source)).expanduser() if source is not None else None
    if folder is None or not folder.is_dir():
        return source, None
    candidates = checkpoint_files_in(folder)
    if len(candidates) == 1:
        return str(candidates[0]), (f"weights folder {folder}: using its only checkpoint file {candidates[0]}")
    if not candidates:
        raise WeightsUnavailableError(
            f"Weights folder {folder} holds no checkpoint file ({', '.join(CHECKPOINT_SUFFIXES)}). Fix: -w the "
            f"checkpoint file itself, or a folder that holds exactly one.")
    listed = "\n".join(f"    -w {c}" for c in candidates)
    raise WeightsUnavailableError(
        f"Weights folder {folder} holds {len(candidates)} checkpoint files; nnFM does not guess which one is the "
        f"encoder. Fix: pass the file itself, one of:\n{listed}")


def check_weights_source(source, families: Sequence[str]) -> None:
    """Before any planning work: ``source`` (``-w``) is random initialisation, an existing file, or a registered
    name of one of ``families`` (the encoder's checkpoint families, ``nnfm.registry``). Reads no weights: a file's
    family is checked when the trainer loads it; a registered download is fetched then.

    Raises WeightsUnavailableError (unknown name, missing file) or WrongCheckpointFamilyError (a registered name of
    another encoder's family), each naming the choices."""
    source, _ = resolve_weights_folder(source)  # a folder with one checkpoint file is that file
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
    """A local file, a folder holding exactly one checkpoint file (resolve_weights_folder), or a registry name
    (cached, else downloaded). Returns (path, sha256)."""
    source, _ = resolve_weights_folder(source)
    path = Path(str(source)).expanduser()
    if path.is_file():
        return path, sha256_of(path)
    entry = get_weights_entry(str(source))
    if entry is None:
        raise _not_found(source)
    if entry.embedded:
        return _embedded_file(entry)
    cached = cached_file(entry)  # nnFM's cache, else the hub's (HF_HOME): no network when the file is here
    if cached is None:
        cached = download_entry(entry)  # verified there
        return cached, sha256_of(cached)
    sha = sha256_of(cached)
    try:
        verify_sha256(entry, sha, f"Cached {cached}")
    except ChecksumMismatchError as error:
        hub = hub_file(entry)
        fix = (f"Fix: fetch it again:\n    $ {hub.command('--force-download')}"
               if hub is not None and cached != cache_dir() / entry.filename else "Delete it to download it again.")
        raise ChecksumMismatchError(f"{error} {fix}") from None
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
                    adapt_input_channels: bool = True,
                    replan: Optional[Callable[[dict], str]] = None) -> LoadReport:
    """Load ``source`` (registry name or path) into ``module`` strictly; raise a named error otherwise.

    ``family`` may name several families the module accepts (e.g. a DINOv3 ViT loads official DINOv3,
    MedDINOv3 and MedDINOv3 nnU-Net checkpoints); the detected one is used and reported. Where the family says what
    architecture its shapes imply (``CheckpointFamily.architecture``) and the file is another size than the network,
    the mismatch error says both sizes first and how to plan for the file's: ``replan(kwargs)`` (the caller knows
    the dataset, encoder and trainer) gives the commands, else a template with placeholders.
    """
    families = (family,) if isinstance(family, str) else tuple(family)
    path, sha = resolve_checkpoint(source)
    checkpoint = read_checkpoint(path)  # kept whole: its metadata (plans) tells the position-embedding grid
    state, unwrapped = unwrap_state_dict(checkpoint)
    found = detect_family(state, prefer=families)
    record = get_family(found) if found else None
    if found not in families or record is None or record.filter is None:
        needed = " or ".join(f"'{f}'" for f in families)
        registered = sorted({n for f in families for n in available_weights(f)})
        # a layout several families share fits what each of them fits (a ResEnc file: nnssl's encoder or the network)
        fits = "; read as ".join(use_of(n) for n in [found] + same_layout_families(found)) if record else \
            "no nnFM network"
        raise WrongCheckpointFamilyError(
            f"{path} is a '{found or 'unknown'}' checkpoint, but this network needs {needed}. "
            f"That checkpoint fits {fits}; for this network use weights from "
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
                f"{need}; {have} -> {need} cannot be mapped (1 -> N, N -> 1 and RGB -> N can). Fix: "
                f"{scratch_advice(families)}, or use a checkpoint pretrained with {need} channel(s).") from None

    report.missing = sorted(k for k in target if k not in mapped)
    report.unexpected = sorted(k for k in mapped if k not in target)
    report.shape_mismatched = [(k, list(v.shape), list(target[k].shape)) for k, v in mapped.items()
                               if k in target and v.shape != target[k].shape]
    report.loaded = sorted(k for k in mapped if k in target and mapped[k].shape == target[k].shape)
    if not report.ok:
        advice = architecture_advice(record, mapped, target, source, replan)
        raise CheckpointMismatchError("CheckpointMismatchError: the checkpoint does not match the network.\n"
                                      + advice + report.format(max_items=10 if advice else 50))
    module.load_state_dict({k: v.to(target[k].dtype) for k, v in mapped.items()}, strict=True)
    return report


def _architecture_words(arch: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in arch.items())


def architecture_advice(record, mapped: dict, target: dict, source, replan: Optional[Callable[[dict], str]]) -> str:
    """When the file is another size of the same architecture (a tiny SSL teacher in ViT-B plans): both sizes and the
    fix, the ``--vit_kwargs`` that plan the file's size (every size entry that differs, plus embed_dim / depth /
    num_heads); "" when the family says nothing about sizes or they agree."""
    if record is None or record.architecture is None:
        return ""
    have, need = record.architecture(mapped), record.architecture(target)
    if not have or not need:
        return ""
    differs = [k for k in have if k in need and have[k] != need[k]]
    if not differs:
        return ""
    kwargs = {k: have[k] for k in have if k in differs or k in ("embed_dim", "depth", "num_heads")}
    unknown = "" if "num_heads" in have else (" (its number of heads is not recorded in the file: put the one it "
                                             "was pretrained with into num_heads)")
    if replan is not None:
        commands = replan(kwargs)
    else:
        import json
        import shlex
        commands = (f"    $ nnFM_plan_and_preprocess -d DATASET -e ENCODER -w {shlex.quote(str(source))} "
                    f"--vit_kwargs {shlex.quote(json.dumps(kwargs))}")
    return (f"  The checkpoint is a ViT of another size than the network these plans build: the file has "
            f"{_architecture_words(have)}; the network {_architecture_words(need)}{unknown}. The plans were made "
            f"without the file's size (e.g. an nnFM_pretrain dino teacher pretrained with --embed-dim / --depth / "
            f"--num-heads, planned without --vit_kwargs). Fix: plan for the file's size, then train:\n{commands}\n")
