"""The validation split: a fixed share of the training set held out, stratified by class.

Run: python -c "import numpy, swap.data.holdout as h; print(h.holdout(numpy.arange(9), None, .2))"
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

# The held-out splits never depend on a job's seed, so runs with different seeds are compared
# on the same test and validation examples.
SPLIT_SEED = 0


def holdout(
    index: np.ndarray, labels: np.ndarray | None, fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """Split `index` into (kept, held out) with `fraction` held out, by a fixed seed.

    Stratified by `labels` when given and possible (every class needs two examples and the
    held-out part one slot per class); otherwise a plain seeded shuffle.
    """
    if fraction <= 0:
        return index, index[:0]
    if labels is not None:
        try:
            kept, held = train_test_split(
                index, test_size=fraction, random_state=SPLIT_SEED, stratify=labels
            )
            return kept, held
        except ValueError:  # too few examples per class to stratify
            pass
    kept, held = train_test_split(index, test_size=fraction, random_state=SPLIT_SEED)
    return kept, held
