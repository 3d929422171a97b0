"""Training budgets (epochs x iterations per epoch), named so every result says which one it used."""
import re
from dataclasses import asdict, dataclass, replace
from typing import Optional, Tuple

BUDGET_VARIABLES = ("nnFM_EPOCHS", "nnFM_ITERATIONS", "nnFM_VAL_ITERATIONS", "nnFM_PATCH_SIZE", "nnFM_BATCH_SIZE",
                    "nnFM_VAL_CASES")


@dataclass(frozen=True)
class Budget:
    name: str
    epochs: int
    iterations: int            # training iterations per epoch
    val_iterations: int        # validation iterations per epoch (nnU-Net's pseudo Dice)
    overrides: bool = True     # False: nnU-Net's own defaults, no budget variables set
    # CPU-sized training for every row alike (nnfm/training/run_overrides.py); None: as planned
    patch_size: Optional[Tuple[int, ...]] = None
    batch_size: Optional[int] = None
    val_cases: Optional[int] = None    # nnU-Net's final validation on the first N cases of the fold; None: all
    test_tta: bool = True              # False: the test set is predicted without mirroring (nnU-Net's --disable_tta)

    def as_record(self) -> dict:
        return {"profile": self.name, "epochs": self.epochs, "iterations_per_epoch": self.iterations,
                "val_iterations_per_epoch": self.val_iterations,
                "patch_size": "x".join(map(str, self.patch_size)) if self.patch_size else "planned",
                "batch_size": self.batch_size or "planned", "val_cases": self.val_cases or "all",
                "test_tta": self.test_tta}

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
    # the README's demo budget (nnFM_demo reads it): 330 iterations at a CPU-sized patch and batch, test set
    # predicted without mirroring. nnU-Net's own Hippocampus network (nnFM's default since issue 27) costs about
    # twice the anatomix U-Net per iteration, so 11 epochs of 30 take the wall time that the former default's
    # 30 x 20 took (208 vs 209 s of training, measured in one session; documentation/benchmarks.md, "Demo budget")
    "demo": Budget("demo", 11, 30, 1, patch_size=(32, 48, 32), batch_size=2, test_tta=False),
    # nnU-Net's own schedule (1000 x 250, 50 validation iterations); nothing is overridden
    "full": Budget("full", 1000, 250, 50, overrides=False),
}

CUSTOM = re.compile(r"^(\d+)x(\d+)$")


def resolve_profile(spec: str, patch_size: Optional[Tuple[int, ...]] = None, batch_size: Optional[int] = None,
                    val_cases: Optional[int] = None, test_tta: bool = True) -> Budget:
    """A profile name, or EPOCHSxITERATIONS for a custom budget (named after itself, e.g. '4x2').

    The CPU-sizing options override the profile's and go into the name, so such runs get their own results
    folder: '20x20' + patch (32, 48, 32), batch 2, 8 validation cases, no test-time mirroring ->
    '20x20_p32x48x32_b2_v8_notta'.
    """
    budget = _resolve_named(spec)
    if patch_size is None and batch_size is None and val_cases is None and test_tta:
        return budget
    if not budget.overrides:
        raise ValueError(f"Profile {spec!r} is nnU-Net's own schedule; it takes no patch, batch, validation or "
                         "test-time-augmentation override.")
    budget = replace(budget, patch_size=tuple(patch_size) if patch_size else budget.patch_size,
                     batch_size=batch_size or budget.batch_size, val_cases=val_cases or budget.val_cases,
                     test_tta=budget.test_tta and test_tta)
    suffix = (f"_p{'x'.join(map(str, budget.patch_size))}" if budget.patch_size else "") + \
             (f"_b{budget.batch_size}" if budget.batch_size else "") + \
             (f"_v{budget.val_cases}" if budget.val_cases else "") + ("" if budget.test_tta else "_notta")
    return replace(budget, name=spec + suffix)


def _resolve_named(spec: str) -> Budget:
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
        if budget.patch_size:
            env["nnFM_PATCH_SIZE"] = ",".join(map(str, budget.patch_size))
        if budget.batch_size:
            env["nnFM_BATCH_SIZE"] = str(budget.batch_size)
        if budget.val_cases:
            env["nnFM_VAL_CASES"] = str(budget.val_cases)
    return env
