"""Training budgets (epochs x iterations per epoch), named so every result says which one it used."""
import re
from dataclasses import asdict, dataclass

BUDGET_VARIABLES = ("nnFM_EPOCHS", "nnFM_ITERATIONS", "nnFM_VAL_ITERATIONS")


@dataclass(frozen=True)
class Budget:
    name: str
    epochs: int
    iterations: int            # training iterations per epoch
    val_iterations: int        # validation iterations per epoch (nnU-Net's pseudo Dice)
    overrides: bool = True     # False: nnU-Net's own defaults, no budget variables set

    def as_record(self) -> dict:
        return {"profile": self.name, "epochs": self.epochs, "iterations_per_epoch": self.iterations,
                "val_iterations_per_epoch": self.val_iterations}

    def to_dict(self) -> dict:
        return asdict(self)


PROFILES = {
    # the whole pipeline, seconds per run: checks plumbing, not accuracy
    "smoke": Budget("smoke", 1, 2, 1),
    # 100 iterations: minutes per 3d run on a 2-core CPU at batch 2 (Hippocampus); checks the whole
    # protocol on real data, far too short to rank encoders
    "cpu": Budget("cpu", 5, 20, 4),
    # a tenth of nnU-Net's schedule: about an hour per 3d run on one modern GPU
    "gpu": Budget("gpu", 100, 250, 50),
    # nnU-Net's own schedule (1000 x 250, 50 validation iterations); nothing is overridden
    "full": Budget("full", 1000, 250, 50, overrides=False),
}

CUSTOM = re.compile(r"^(\d+)x(\d+)$")


def resolve_profile(spec: str) -> Budget:
    """A profile name, or EPOCHSxITERATIONS for a custom budget (named after itself, e.g. '4x2')."""
    if spec in PROFILES:
        return PROFILES[spec]
    match = CUSTOM.match(spec)
    if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise ValueError(f"Unknown budget profile {spec!r}: use one of {', '.join(PROFILES)} "
                         "or EPOCHSxITERATIONS (e.g. 4x2).")
    epochs, iterations = int(match.group(1)), int(match.group(2))
    # nnU-Net's ratio of validation to training iterations is 1:5
    return Budget(spec, epochs, iterations, max(1, iterations // 5))


def budget_environment(budget: Budget, env: dict) -> dict:
    """env with the budget variables set (or removed for nnU-Net's own schedule)."""
    env = {k: v for k, v in env.items() if k not in BUDGET_VARIABLES}
    if budget.overrides:
        env.update(nnFM_EPOCHS=str(budget.epochs), nnFM_ITERATIONS=str(budget.iterations),
                   nnFM_VAL_ITERATIONS=str(budget.val_iterations))
    return env
