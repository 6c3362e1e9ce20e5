"""True-class confidence statistics: what Confidence Adaptation is meant to move."""

from __future__ import annotations

import torch
from torch import nn

from .accuracy import predict

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def true_class_confidence(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """softmax(model(x))_y for every sample."""
    return predict(model, x).softmax(1).gather(1, y.view(-1, 1)).squeeze(1)


def confidence_summary(p: torch.Tensor, bins: int = 20) -> dict[str, object]:
    """Mean, std, quantiles and a histogram on [0, 1] of true-class confidences."""
    q = torch.quantile(p.double(), torch.tensor(QUANTILES, dtype=torch.float64))
    return {
        "mean": p.mean().item(),
        "std": p.std().item() if len(p) > 1 else 0.0,
        "quantiles": {f"q{int(k * 100):02d}": v for k, v in zip(QUANTILES, q.tolist())},
        "histogram": torch.histc(p.double(), bins=bins, min=0.0, max=1.0).long().tolist(),
    }
