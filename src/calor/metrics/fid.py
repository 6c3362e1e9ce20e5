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


@torch.no_grad()
def eval_fid(eval_model: nn.Module, fake: torch.Tensor, real: torch.Tensor, batch_size: int = 256) -> float:
    """Frechet distance between `fake` and `real` images in `eval_model.features` space."""
    if len(fake) < 2 or len(real) < 2:
        raise MetricError(f"eval-FID needs at least 2 images per set (got {len(fake)} fake, {len(real)} real)")
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
