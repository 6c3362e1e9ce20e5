"""Identity losses shared by attacks: logit-space objectives that never look at the softmax.

Softmax-based losses (cross-entropy) saturate once the target is confident and are what CALoR's
confidence adaptation reshapes; these work on raw logits, so they keep a gradient whatever the
softmax says (PLG-MI's max-margin loss, LOMMA's logit loss).
"""

from __future__ import annotations

import torch


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample margin  z_y - max_{j != y} z_j  (N,): positive iff class y is the top-1."""
    true = logits.gather(1, y.view(-1, 1)).squeeze(1)
    others = logits.scatter(1, y.view(-1, 1), float("-inf"))  # mask the true class out of the max
    return true - others.max(1).values


def neg_true_logit(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample  -z_y  (N,): LOMMA's logit loss before the batch reduction."""
    return -logits.gather(1, y.view(-1, 1)).squeeze(1)


def max_margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PLG-MI's max-margin loss: batch mean of  max_{j != y} z_j - z_y  (minimised = margin maximised)."""
    return -margin(logits, y).mean()


def logit_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Batch mean of  -z_y : maximises the true-class logit alone (the logit loss of LOMMA)."""
    return neg_true_logit(logits, y).mean()
