"""The spellings of "no pretrained weights, keep the random initialisation" (``-w``, ``nnFM_WEIGHTS``, the plans'
``nnfm.weights``): a leaf, so that the planner, the loader and the trainers share one list without importing
the loader."""

RANDOM_INIT = ("random", "none", "scratch")


def is_random_init(source) -> bool:
    return source is None or str(source).lower() in RANDOM_INIT
