"""Per-step schedules (functions of the step only, so a resumed run continues them exactly)."""
import math


def cosine(step: int, total: int, start: float, end: float, warmup: int = 0, warmup_start: float = 0.0) -> float:
    """Linear warm-up from ``warmup_start`` to ``start`` over ``warmup`` steps, then cosine to ``end``."""
    if step < warmup:
        return warmup_start + (start - warmup_start) * step / max(1, warmup)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * progress))


def linear_warmup(step: int, warmup: int, start: float, end: float) -> float:
    """From ``start`` to ``end`` over ``warmup`` steps, then constant (teacher temperature)."""
    if step >= warmup:
        return end
    return start + (end - start) * step / max(1, warmup)
