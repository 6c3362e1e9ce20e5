"""eval-FID: Frechet distance in the evaluation model's feature space (not Inception; not comparable
with published FID numbers — hence the name)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

from ..errors import MetricError


class _FeatureExtractor(nn.Module):
    """Adapter giving torchmetrics the evaluation model's penultimate features."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.num_features = int(model.feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)


def fid_min_samples(feature_dim: int) -> int:
    """Fewest images per set for which eval-FID is defined in a `feature_dim`-d space.

    With n <= d samples the sample covariance has rank at most n - 1 < d, so its matrix square root
    is ill-conditioned and the distance depends on numerical noise rather than on the images.
    """
    if feature_dim < 1:
        raise MetricError(f"eval-FID: feature dimension must be positive, got {feature_dim}")
    return int(feature_dim) + 1


@torch.no_grad()
def eval_fid(eval_model: nn.Module, fake: torch.Tensor, real: torch.Tensor, batch_size: int = 256) -> float:
    """Frechet distance between `fake` and `real` images in `eval_model.features` space.

    Refused (MetricError) when either set has no more images than the feature dimension; use
    `kernel_inception_distance` (KID), which is unbiased at small sample sizes, instead.
    """
    need = fid_min_samples(int(eval_model.feature_dim))
    if len(fake) < need or len(real) < need:
        raise MetricError(
            f"eval-FID needs at least {need} images per set in a {need - 1}-d feature space (got {len(fake)} fake, "
            f"{len(real)} real): with fewer the covariance is rank-deficient and the distance is not meaningful; "
            "use KID (calor.metrics.kid.kernel_inception_distance), which is unbiased at small sample sizes")
    was_training = eval_model.training
    eval_model.eval()
    device = next(eval_model.parameters()).device
    metric = FrechetInceptionDistance(feature=_FeatureExtractor(eval_model), normalize=True).to(device)
    for imgs, is_real in ((real, True), (fake, False)):
        for i in range(0, len(imgs), batch_size):
            metric.update(imgs[i : i + batch_size].to(device), real=is_real)
    value = float(metric.compute())
    eval_model.train(was_training)
    if not math.isfinite(value):
        raise MetricError(f"eval-FID is not finite ({value}); too few samples for the feature dimension?")
    return value
