"""benchmarks/domain_shift.py: the intensity shifts of issue 28's domain-shift check."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("domain_shift", ROOT / "benchmarks" / "domain_shift.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shifts_keep_the_range_and_change_the_contrast():
    shift = _module().shift_array
    x = np.array([10.0, 20.0, 40.0, 110.0], np.float32)
    assert np.array_equal(shift(x, "none"), x)
    np.testing.assert_allclose(shift(x, "invert"), [110.0, 100.0, 80.0, 10.0])
    gamma = shift(x, "gamma2")
    np.testing.assert_allclose(gamma, [10.0, 11.0, 19.0, 110.0], rtol=1e-6)
    assert gamma.min() == x.min() and gamma.max() == x.max()
    # z-scoring (nnU-Net's normalisation) cannot undo either: the order of intensities or their spacing changes
    z = lambda a: (a - a.mean()) / a.std()  # noqa: E731
    assert not np.allclose(z(shift(x, "invert")), z(x)) and not np.allclose(z(gamma), z(x))


def test_unknown_shift_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="none, invert or gammaG"):
        _module().shift_array(np.zeros(3, np.float32), "blur")


def test_the_report_reads_the_csv_back_pairs_each_fold_with_the_reference_and_draws_every_shift(tmp_path):
    import csv
    module = _module()
    rows = [{"shift": s, "trainer": t, "fold": f, "test_n": 2, "test_dice_mean": d}
            for s, t, f, d in (("none", "ref", 5, 0.80), ("none", "ref", 6, 0.70), ("none", "new", 5, 0.82),
                               ("none", "new", 6, 0.74), ("invert", "ref", 5, 0.10), ("invert", "new", 5, 0.40))]
    path = tmp_path / "shift.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    read = module.read_rows(path)
    lines = module.table_lines(read, ["ref", "new"])
    assert "| none | new | 0.820 / 0.740 | 0.780 +- 0.057 | +0.030 |" in lines
    assert "| invert | new | 0.400 | 0.400 +- 0.000 | +0.300 |" in lines
    assert "| none | ref | 0.800 / 0.700 | 0.750 +- 0.071 |  |" in lines
    figure = module.plot_shifts(read, ["ref", "new"], tmp_path / "shift.png")
    assert figure.stat().st_size > 5000
    module.main(["--from-csv", str(path), "--trainers", "ref", "new"])  # the command line's report mode
