"""Classification heads: the plain linear head and CALoR's low-rank bottleneck head."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError

ACTIVATIONS = {
    "tanh": nn.Tanh,
    "none": nn.Identity,
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
}


class LinearHead(nn.Linear):
    """The ordinary head: Linear(d, C)."""


class LowRankHead(nn.Module):
    """CALoR's low-rank head: BatchNorm1d(d) -> Linear(d, r) -> activation (tanh) -> Linear(r, C).

    Trained end to end with the rest of the classifier. With tanh the bottleneck is bounded in
    [-1, 1], so every logit satisfies |z_c| <= ||W2[c]||_1 + |b2_c| (see `logit_bound`).
    """

    def __init__(self, in_features: int, rank: int, num_classes: int, activation: str = "tanh") -> None:
        super().__init__()
        if not 1 <= rank <= in_features:
            raise ConfigError(f"low-rank head: rank={rank} must be in [1, feature_dim={in_features}]")
        if activation not in ACTIVATIONS:
            raise ConfigError(f"low-rank head: unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        self.rank, self.activation_name = rank, activation
        self.norm = nn.BatchNorm1d(in_features)
        self.down = nn.Linear(in_features, rank)
        self.act = ACTIVATIONS[activation]()
        self.up = nn.Linear(rank, num_classes)

    def bottleneck(self, h: torch.Tensor) -> torch.Tensor:
        return self.act(self.down(self.norm(h)))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.up(self.bottleneck(h))

    def logit_bound(self) -> torch.Tensor:
        """Per-class bound on |logit| implied by a tanh/sigmoid bottleneck (inf for unbounded activations)."""
        if self.activation_name not in ("tanh", "sigmoid"):
            return torch.full((self.up.out_features,), float("inf"))
        return self.up.weight.abs().sum(1) + self.up.bias.abs()
