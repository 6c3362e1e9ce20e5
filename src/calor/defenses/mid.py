"""`mid`: mutual-information regularisation through a variational information bottleneck (VIB) head.

Wang, Zhang, Jia, "Improving Robustness to Model Inversion Attacks via Mutual Information
Regularization", AAAI 2021 (arXiv 2009.05241). The classifier's head becomes

    h = features(x) -> Linear(d, 2k) -> (mu, s),  std = softplus(s - 5),  z = mu + std * e,  e ~ N(0, I)
    logits = Linear(k, C)(z),  k = d / 2 by default

trained with CE + beta * KL(N(mu, diag std^2) || N(0, I)) (KL summed over the k dimensions, averaged
over the batch; beta = 0.003 as in the paper's code). The KL reaches the loss through `extras`.
Test time: the original code samples e at test time too; here the eval-mode head returns the mean
(z = mu) by default, which makes the released model deterministic; `sample_at_test = true` restores
sampling. Deviation: log std is taken of max(std, 1e-8) so a saturated softplus cannot produce -inf.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, collect
from .base import DEFENSES, Defense, Stage

STD_SHIFT = 5.0  # std = softplus(s - 5): starts the posterior nearly deterministic (std ~ 0.0067)


def gaussian_kl(mu: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Batch mean of KL(N(mu, diag std^2) || N(0, I)) = 0.5 * sum_k (mu^2 + std^2 - 1 - 2 log std)."""
    log_std = torch.log(std.clamp_min(1e-8))
    return (0.5 * (mu.pow(2) + std.pow(2) - 1.0 - 2.0 * log_std).sum(dim=1)).mean()


class VIBHead(nn.Module):
    """Stochastic bottleneck head: Linear(d, 2k) -> (mu, std) -> z -> Linear(k, C).

    Train mode samples z = mu + std * e; eval mode returns the logits of z = mu unless
    `sample_at_test`. Uses the global torch RNG (seeded by the pipeline) for e.
    """

    def __init__(self, in_features: int, k: int, num_classes: int, sample_at_test: bool = False) -> None:
        super().__init__()
        if k < 1:
            raise ConfigError(f"VIB head: bottleneck size k={k} must be >= 1")
        self.k, self.sample_at_test = k, sample_at_test
        self.encoder = nn.Linear(in_features, 2 * k)
        self.classifier = nn.Linear(k, num_classes)

    def statistics(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and standard deviation of z given features h."""
        stats = self.encoder(h)
        mu, s = stats[:, : self.k], stats[:, self.k :]
        return mu, F.softplus(s - STD_SHIFT)

    def latent(self, mu: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """z: a reparameterised sample in train mode (or with sample_at_test), else the mean."""
        if self.training or self.sample_at_test:
            return mu + std * torch.randn_like(std)
        return mu

    def forward_with_kl(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the batch-mean KL term (the training path)."""
        mu, std = self.statistics(h)
        return self.classifier(self.latent(mu, std)), gaussian_kl(mu, std)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        mu, std = self.statistics(h)
        return self.classifier(self.latent(mu, std))


@dataclass(frozen=True)
class MIDConfig:
    """beta: KL weight (paper code 0.003; 0.005-0.01 elsewhere, CALoR's authors used 0.005);
    k: bottleneck size (None = feature_dim // 2); sample_at_test: sample z in eval mode too."""

    beta: float = 0.003
    k: int | None = None
    sample_at_test: bool = False

    def __post_init__(self) -> None:
        p = []
        if self.beta < 0:
            p.append(f"beta={self.beta}: must be >= 0")
        if self.k is not None and self.k < 1:
            p.append(f"k={self.k}: must be >= 1 (or unset for feature_dim // 2)")
        collect(p, "mid settings")


@DEFENSES.register("mid")
class MID(Defense):
    """Variational information bottleneck before the classification layer, CE + beta * KL."""

    name = "mid"
    paper = "Wang, Zhang, Jia, AAAI 2021 (arXiv 2009.05241)"
    Config = MIDConfig

    def prepare(self, model: nn.Module) -> nn.Module:
        d = model.feature_dim
        k = self.config.k if self.config.k is not None else max(1, d // 2)
        model.head = VIBHead(d, k, model.num_classes, self.config.sample_at_test)
        return model

    def forward(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        if not isinstance(model.head, VIBHead):
            raise ConfigError("mid: the model's head is not a VIB head (was the model prepared by this defense?)")
        logits, kl = model.head.forward_with_kl(model.features(x))
        return logits, {"kl": kl}

    def loss(self, stage: Stage, logits: torch.Tensor, y: torch.Tensor, extras: dict[str, Any]) -> torch.Tensor:
        return F.cross_entropy(logits, y) + self.config.beta * extras["kl"]
