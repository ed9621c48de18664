"""How good a model's predicted probabilities are: accuracy, NLL, ECE and Brier score.

Run: pytest tests/unit/test_calibration.py   (quality() against a hand computation)

ECE (expected calibration error, Guo et al. 2017): examples binned by their top probability
into BINS equal-width bins [0, 1/15), [1/15, 2/15), ..., [14/15, 1] (the last one closed, so a
confidence of exactly 1.0 is counted); the share-weighted mean over bins of |accuracy - mean
confidence|. Brier score: the mean over examples of the squared distance between the predicted
distribution and the one-hot label, summed over classes (Brier 1950; 0 is perfect, 2 the
worst). NLL: the mean of -log p(label), from log-probabilities (a model's log-softmax), so an
overconfident mistake counts in full: a probability clamped before its log would cap each
example's NLL (at 27.6 for 1e-12). Written here (a few lines of torch) rather than taken from
torchmetrics, whose binning of a confidence of exactly 1.0 this would also have to test.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

BINS = 15


def quality(log_probabilities: Tensor, targets: Tensor) -> dict[str, Any]:
    """The four numbers for `log_probabilities` (N x classes, each row's exp summing to 1: a
    log-softmax) against integer `targets` (N), and the reliability diagram's bins: per bin its
    examples, mean confidence and accuracy (None for an empty bin). Computed in float64."""
    log_p = log_probabilities.detach().double().cpu()
    p = log_p.exp()
    y = targets.detach().long().cpu()
    n = len(y)
    if n == 0:
        return {"count": 0}
    confidence, predicted = p.max(dim=1)
    correct = (predicted == y).double()
    chosen = log_p[torch.arange(n), y]
    one_hot = torch.nn.functional.one_hot(y, p.shape[1]).double()
    which = torch.clamp((confidence * BINS).floor().long(), max=BINS - 1)  # 1.0: the last bin
    counts = torch.bincount(which, minlength=BINS).double()
    confidence_sums = torch.bincount(which, weights=confidence, minlength=BINS)
    correct_sums = torch.bincount(which, weights=correct, minlength=BINS)
    ece = (correct_sums - confidence_sums).abs().sum() / n  # sum_b n_b/N |acc_b - conf_b|
    return {
        "count": n,
        "accuracy": correct.mean().item(),
        "nll": -chosen.mean().item(),
        "ece": ece.item(),
        "brier": ((p - one_hot) ** 2).sum(dim=1).mean().item(),
        "bins": [
            {
                "count": int(count),
                "confidence": (conf / count).item() if count else None,
                "accuracy": (acc / count).item() if count else None,
            }
            for count, conf, acc in zip(counts, confidence_sums, correct_sums, strict=True)
        ],
    }
