"""Kernel Inception Distance in the evaluation model's feature space (Binkowski et al. 2018).

Unlike FID it has an unbiased estimator, so it stays meaningful with a few dozen reconstructions in a
high-dimensional feature space, where the FID covariance is rank-deficient.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import MetricError
from .accuracy import predict


def _cubic_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """k(x, y) = (x.y / d + 1)^3 for every pair of rows."""
    return (a @ b.T / a.shape[1] + 1.0).pow(3)


def kernel_inception_distance(fake_feats: torch.Tensor, real_feats: torch.Tensor) -> float:
    """Unbiased estimate of MMD^2 between `fake_feats` (m, d) and `real_feats` (n, d) with the cubic
    polynomial kernel, over all pairs (no subsets), in float64. Can be slightly negative when the two
    sets come from the same distribution: that is the estimator being unbiased, not an error."""
    if fake_feats.ndim != 2 or real_feats.ndim != 2 or fake_feats.shape[1] != real_feats.shape[1]:
        raise MetricError(f"KID: expected (N, d) features of equal d, got {tuple(fake_feats.shape)} and {tuple(real_feats.shape)}")
    m, n = len(fake_feats), len(real_feats)
    if m < 2 or n < 2:
        raise MetricError(f"KID needs at least 2 samples per set (got {m} fake, {n} real)")
    x, y = fake_feats.detach().cpu().double(), real_feats.detach().cpu().double()
    k_xx, k_yy, k_xy = _cubic_kernel(x, x), _cubic_kernel(y, y), _cubic_kernel(x, y)
    # Dropping the diagonals (k(x_i, x_i)) is what makes the within-set means, hence MMD^2, unbiased.
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    value = float(within_x + within_y - 2.0 * k_xy.mean())
    if not math.isfinite(value):
        raise MetricError(f"KID is not finite ({value}); are the features finite?")
    return value


def kid_from_images(model: nn.Module, fake: torch.Tensor, real: torch.Tensor) -> float:
    """KID between `fake` and `real` images in `model.features` space (penultimate features)."""
    return kernel_inception_distance(predict(model, fake, features=True), predict(model, real, features=True))
