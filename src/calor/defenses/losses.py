"""Loss pieces shared by more than one defense (label smoothing: `ls`, `negls`, `ls-ft`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def smoothed_cross_entropy(logits: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Batch mean of (1 - eps) * CE(z, y) + eps * mean_c(-log p_c), p = softmax(z).

    This is cross-entropy against the target (1 - eps) * onehot(y) + eps / C, i.e. the true class gets
    1 - eps + eps/C and every other class eps/C. `eps` may be negative (Struppek et al.'s negative label
    smoothing): the target then lies beyond the one-hot vertex (true class > 1, others < 0), the loss is
    unbounded below and keeps pushing the logit gaps apart. eps = 0 is exactly cross-entropy.
    For eps in [0, 1] it equals `F.cross_entropy(..., label_smoothing=eps)`, which refuses eps < 0.
    """
    if eps == 0:  # bit-for-bit the `none` defense's loss (same kernel, same rounding)
        return F.cross_entropy(logits, y)
    log_p = torch.log_softmax(logits, dim=1)
    nll = -log_p.gather(1, y.view(-1, 1)).squeeze(1)
    uniform = -log_p.mean(dim=1)
    return ((1.0 - eps) * nll + eps * uniform).mean()


def smoothing_for_confidence(target_confidence: float, num_classes: int) -> float:
    """The label-smoothing factor eps whose target gives the true class `target_confidence`:
    1 - eps + eps/C = p  <=>  eps = (1 - p) * C / (C - 1)."""
    if num_classes < 2:
        raise ValueError(f"label smoothing needs at least 2 classes, got {num_classes}")
    return (1.0 - target_confidence) * num_classes / (num_classes - 1)


def warmup_factor(epoch: int, epochs: int, start: float = 0.5, end: float = 0.75) -> float:
    """Fraction of the full smoothing factor used in `epoch` (0-based) of `epochs`.

    0 while epoch < start*epochs; then a linear ramp whose last epoch before end*epochs is already
    at 1 (the first ramp epoch gets 1/ramp_length, as in the NegLS authors' scheduler); 1 afterwards.
    With 8 epochs: 0, 0, 0, 0, 0.5, 1, 1, 1.
    """
    first = start * epochs
    if epoch < first:
        return 0.0
    length = (end - start) * epochs
    if epoch >= end * epochs or length <= 0:
        return 1.0
    return min(1.0, (epoch + 1 - first) / length)


__all__ = ["smoothed_cross_entropy", "smoothing_for_confidence", "warmup_factor"]
