"""Write a checkpoint as an embedded weights file: fp16 safetensors + a provenance JSON, inside the package.

``python -m nnfm.weights.embed SRC NAME --provenance FACTS.json --folder nnfm/weights/embedded`` (run from the
repository, so the file lands where it is committed) reads SRC (any layout ``load_pretrained`` reads; its state
dict is unwrapped), stores its floating-point tensors as float16 in ``FOLDER/NAME.safetensors`` (half the bytes;
``load_pretrained`` casts back to the network's dtype) with the input convention it was pretrained with in the
file's metadata (recorded in SRC by nnFM's pretraining, or ``--input-convention``), and the part of the network
that transfers where SRC records one (an MAE file's stem and encoder: nnfm/weights/transfer.py), writes ``NAME.json`` beside it
(the facts given, the convention, the fp16 rounding error, the sha256) and prints the sha256 and convention for
the registry entry (``register_embedded_weights(NAME, ..., sha256, input_convention=...)`` in
``nnfm/weights/registry.py``).
"""
import argparse
import hashlib
import json
from pathlib import Path
from typing import Dict, Tuple

import torch

from nnfm.conventions import CONVENTIONS, get_convention
from nnfm.errors import ConfigurationError
from nnfm.weights.checkpoint_io import ALIASES_KEY, RECORD_PREFIX, read_checkpoint, unwrap_state_dict
from nnfm.weights.input_convention import CONVENTION_KEY, recorded_convention
from nnfm.weights.transfer import TRANSFER_KEY, transfer_prefixes


def to_fp16(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Floating-point tensors as contiguous float16; integer buffers (e.g. num_batches_tracked) unchanged."""
    return {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous() for k, v in state.items()}


def split_aliases(state: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """(tensors stored once, {alias: stored name}): keys that view the same memory as an earlier key.

    nnU-Net's state dicts name one tensor several times (dynamic-network-architectures keeps ``conv`` and
    ``all_modules.0`` for one convolution, and ``decoder.encoder.*`` for the encoder); torch.save stores it once,
    but converted to fp16 each name would become its own copy (3x the bytes for a PlainConvUNet). The first name in
    state-dict order is stored; ``read_checkpoint`` puts the aliases back (``ALIASES_KEY`` in the file's metadata)."""
    stored, aliases, seen = {}, {}, {}
    for key, tensor in state.items():
        identity = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
                    tuple(tensor.stride()), tensor.dtype)
        if tensor.numel() and identity in seen:
            aliases[key] = seen[identity]
        else:
            seen[identity] = key
            stored[key] = tensor
    return stored, aliases


def embed(source: Path, name: str, facts: dict, folder: Path, input_convention: str = None) -> dict:
    """ConfigurationError when neither SRC nor ``input_convention`` says what the weights were pretrained on, or
    when the two disagree."""
    from safetensors.torch import save_file

    checkpoint = read_checkpoint(source)
    recorded = recorded_convention(source, checkpoint)
    if input_convention is not None and recorded is not None and input_convention != recorded:
        raise ConfigurationError(f"{source} records input convention {recorded!r}; --input-convention says "
                                 f"{input_convention!r}. Leave the flag out: the file's record is what it saw.")
    convention = input_convention or recorded
    if convention is None:
        raise ConfigurationError(f"{source} does not record its input convention; pass --input-convention NAME "
                                 f"(one of {', '.join(CONVENTIONS)}: what the weights were pretrained on).")
    get_convention(convention)
    state, unwrapped = unwrap_state_dict(checkpoint)
    state, aliases = split_aliases(state)
    half = to_fp16(state)
    # fp16 keeps 11 significant bits: the rounding error relative to each value is at most 2^-11 (except where a
    # value is below fp16's normal range, about 6e-5, where the absolute error is what is left)
    worst = max(float(((half[k].float() - v.float()).abs() / v.float().abs().clamp_min(6.1e-5)).max())
                for k, v in state.items() if v.is_floating_point())
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.safetensors"
    metadata = {CONVENTION_KEY: convention}
    if aliases:
        metadata[ALIASES_KEY] = json.dumps(aliases)
    transfer = transfer_prefixes(checkpoint)  # an MAE file's encoder-only rule (nnssl's plan or nnFM's record)
    if transfer is not None:
        metadata[RECORD_PREFIX + TRANSFER_KEY] = json.dumps(list(transfer))
    save_file(half, str(target), metadata=metadata)
    target.chmod(0o644)  # safetensors writes owner-only files; an installed package must be readable by all
    sha = hashlib.sha256(target.read_bytes()).hexdigest()
    record = dict(facts, name=name, file=target.name, sha256=sha, input_convention=convention, tensors=len(half),
                  transfer=list(transfer) if transfer is not None else "whole network",
                  aliases=len(aliases), unwrapped=unwrapped,
                  source_sha256=hashlib.sha256(Path(source).read_bytes()).hexdigest(),
                  fp16_max_relative_rounding_error=worst, bytes=target.stat().st_size)
    (folder / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("name")
    parser.add_argument("--provenance", type=Path, required=True,
                        help="JSON of facts to keep beside the file (how it was made, on what, licence)")
    parser.add_argument("--folder", type=Path, required=True,
                        help="where to write (the repository's nnfm/weights/embedded, to commit the file)")
    parser.add_argument("--input-convention", choices=sorted(CONVENTIONS), default=None,
                        help="what the weights were pretrained on, where SRC does not record it (nnFM's exports do)")
    args = parser.parse_args(argv)
    record = embed(args.source, args.name, json.loads(args.provenance.read_text()), args.folder,
                   args.input_convention)
    print(json.dumps({k: record[k] for k in ("file", "sha256", "input_convention", "bytes",
                                             "fp16_max_relative_rounding_error")}, indent=1))


if __name__ == "__main__":
    main()
