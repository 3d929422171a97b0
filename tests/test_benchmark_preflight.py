"""nnFM_benchmark's pre-flight: a run whose nnU-Net fold folder holds another run is refused before any training."""
import pytest

from nnfm.benchmark.profiles import resolve_profile
from nnfm.benchmark.runs import Run, RunConflict, _new_record, _write_record, check_no_conflict, preflight
from nnfm.benchmark.splits import Fold


def _run(weights, seed=0, index=5):
    fold = Fold(index=index, base_fold=0, n_train=2, seed=seed, train=("a", "b"), val=("c",))
    return Run(904, "Dataset904_Hippocampus", "3d_fullres", "nnFMTrainer", "nnFMTrainer", "nnFMPlans_anatomix",
               fold, resolve_profile("smoke"), weights, "cpu")


def _finish(run, root):
    folder = run.folder(root)
    folder.mkdir(parents=True)
    _write_record(folder, dict(_new_record(run, folder), status="done"))


def test_the_same_trainer_with_other_weights_is_refused_naming_the_difference_and_the_fix(tmp_path):
    _finish(_run("/weights/a.pth"), tmp_path)
    check_no_conflict(_run("/weights/a.pth"), tmp_path)  # the same run: resumable / skippable, no error
    with pytest.raises(RunConflict, match=r"requested_weights: '/weights/a.pth' there, '/weights/b.pth' asked.*"
                                          r"use another --output"):
        check_no_conflict(_run("/weights/b.pth"), tmp_path)


def test_preflight_checks_every_run_before_any_starts(tmp_path):
    _finish(_run("a", seed=1, index=6), tmp_path)
    runs = [_run("b", seed=0, index=5), _run("b", seed=1, index=6), _run("b", seed=2, index=7)]
    # the conflicting run comes second: a loop that checks as it goes would already have trained the first
    with pytest.raises(RunConflict, match=r"1 of 3 runs conflict with finished runs; nothing was started"):
        preflight(runs, tmp_path)
    preflight([runs[0], runs[2]], tmp_path)
