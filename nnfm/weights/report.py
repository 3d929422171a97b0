"""What a pretrained-weights load did, key by key, in a form people and JSON files can read."""
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple


@dataclass
class LoadReport:
    source: str
    path: str
    sha256: str
    family: Optional[str] = None
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    shape_mismatched: List[Tuple[str, list, list]] = field(default_factory=list)
    intentionally_dropped: Dict[str, str] = field(default_factory=dict)
    adapted: Dict[str, str] = field(default_factory=dict)
    unwrapped: List[str] = field(default_factory=list)
    # the input convention the weights were pretrained with (nnfm/conventions.py), from the file or its registry
    # entry; None: recorded nowhere (the encoder's own is assumed)
    input_convention: Optional[str] = None

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatched)

    def format(self, max_items: int = 12) -> str:
        def listing(title, items):
            items = list(items)
            if not items:
                return []
            shown = [f"    {i}" for i in items[:max_items]]
            if len(items) > max_items:
                shown.append(f"    ... and {len(items) - max_items} more")
            return [f"  {title} ({len(items)}):"] + shown

        lines = [f"weights {self.source} -> {self.path}", f"  sha256 {self.sha256}",
                 f"  family {self.family}; unwrapped: {', '.join(self.unwrapped) or 'nothing'}; input convention "
                 f"{self.input_convention or 'not recorded (assumed the encoder convention)'}",
                 f"  loaded {len(self.loaded)}, missing {len(self.missing)}, unexpected {len(self.unexpected)}, "
                 f"shape-mismatched {len(self.shape_mismatched)}, intentionally dropped "
                 f"{len(self.intentionally_dropped)}, adapted {len(self.adapted)}"]
        lines += listing("missing from the checkpoint", self.missing)
        lines += listing("unexpected in the checkpoint", self.unexpected)
        lines += listing("shape mismatch (checkpoint vs network)",
                         (f"{k}: {c} vs {m}" for k, c, m in self.shape_mismatched))
        lines += listing("intentionally dropped", (f"{k}: {why}" for k, why in self.intentionally_dropped.items()))
        lines += listing("adapted", (f"{k}: {how}" for k, how in self.adapted.items()))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)
