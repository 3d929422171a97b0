"""One flag dialect for nnFM's commands.

nnFM's commands sit next to nnU-Net's, whose flags mix spellings (``-np``, ``-device``,
``--verify_dataset_integrity``, ``--disable_tta``). nnFM keeps nnU-Net's spelling for the flags it shares
with nnU-Net (``-d -c -p -tr -f -np -device -gpu_memory_target --no_pp``) and spells its own long flags with
hyphens (``--batch-size``). So that nobody has to remember which is which, every nnFM command accepts each
long flag with ``-`` or ``_`` between words, and ``-device`` / ``--device`` alike.
"""
import argparse
from typing import List, Optional, Sequence


def _known_options(parser: argparse.ArgumentParser) -> set:
    options = set()
    for action in parser._actions:  # argparse keeps no public list of option strings
        options.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                options.update(_known_options(sub))
    return options


def normalise_flags(parser: argparse.ArgumentParser, argv: Sequence[str]) -> List[str]:
    """``argv`` with each flag respelled to the parser's spelling where only the spelling differs."""
    known = _known_options(parser)
    out = []
    for token in argv:
        flag, eq, value = token.partition("=")
        if token.startswith("-") and flag not in known and not _is_number(flag):
            body = flag.lstrip("-")
            for candidate in (f"{dash}{spelling}" for dash in ("--", "-")
                              for spelling in (body.replace("_", "-"), body.replace("-", "_"))):
                if candidate in known:
                    flag = candidate
                    break
        out.append(flag + eq + value)
    return out


def _is_number(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


def parse_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """``parser.parse_args`` in nnFM's dialect (see the module docstring)."""
    import sys
    return parser.parse_args(normalise_flags(parser, sys.argv[1:] if argv is None else argv))
