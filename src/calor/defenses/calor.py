"""CALoR: Confidence Adaptation + Low-Rank compression of the classification head.

Yu et al., "CALoR: Towards Comprehensive Model Inversion Defense", arXiv 2410.05814 (2024).
Stage 1 trains the classifier end to end with cross-entropy through the low-rank head
BN -> Linear(d, r) -> tanh -> Linear(r, C); stage 2 fine-tunes all weights with the
confidence-adaptation loss L_CA = alpha * p^gamma * log p, whose minimum lies at p* = exp(-1/gamma).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, collect
from ..models.heads import ACTIVATIONS, LowRankHead
from ..scenario import ClassifierSpec
from .base import DEFENSES, Defense, Stage, budget_stage


def confidence_adaptation_loss(logits: torch.Tensor, y: torch.Tensor, alpha: float = 0.25, gamma: float = 8.0) -> torch.Tensor:
    """Batch mean of alpha * p^gamma * log p, p = softmax(logits)_y.

    Not monotone in p: minimising it raises p below p* = exp(-1/gamma) and lowers it above, adapting
    the true-class confidence to p* instead of 1. Computed from log-probabilities for stability.
    """
    log_p = torch.log_softmax(logits, dim=1).gather(1, y.view(-1, 1)).squeeze(1)
    return (alpha * torch.exp(gamma * log_p) * log_p).mean()


def ca_target_confidence(gamma: float) -> float:
    """p* = exp(-1/gamma), the confidence the CA loss pulls every training sample towards."""
    return math.exp(-1.0 / gamma)


@dataclass(frozen=True)
class LowRankSettings:
    """Settings of the low-rank head (shared by `calor`, `lor` and `ls-ft`)."""

    rank: int = 50
    activation: str = "tanh"

    def low_rank_problems(self) -> list[str]:
        p = []
        if self.rank < 1:
            p.append(f"rank={self.rank}: must be >= 1")
        if self.activation not in ACTIVATIONS:
            p.append(f"activation={self.activation!r}: choose one of {sorted(ACTIVATIONS)}")
        return p


@dataclass(frozen=True)
class CALossSettings:
    """Settings of the confidence-adaptation loss (shared by `calor` and `ca`)."""

    alpha: float = 0.25
    gamma: float = 8.0

    def ca_loss_problems(self) -> list[str]:
        p = []
        if self.alpha <= 0:
            p.append(f"alpha={self.alpha}: must be > 0")
        if self.gamma <= 0:
            p.append(f"gamma={self.gamma}: must be > 0 (p* = exp(-1/gamma))")
        return p


@dataclass(frozen=True)
class FineTuneSettings:
    """The CA fine-tune schedule (shared by `calor`, `ca` and, as its LS fine-tune, `ls-ft`)."""

    ca_epochs: int = 5
    ca_optimizer: str = "sgd"
    ca_lr: float = 2e-5
    ca_momentum: float = 0.9
    ca_milestones: tuple[float, ...] = (0.6, 0.8)
    ca_augment: bool = False

    def fine_tune_problems(self) -> list[str]:
        p = []
        if self.ca_epochs < 0:
            p.append(f"ca_epochs={self.ca_epochs}: must be >= 0 (0 = no fine-tune stage)")
        if self.ca_optimizer not in ("sgd", "adam"):
            p.append(f"ca_optimizer={self.ca_optimizer!r}: choose sgd or adam")
        if self.ca_lr <= 0:
            p.append(f"ca_lr={self.ca_lr}: must be > 0")
        if any(not 0 < m < 1 for m in self.ca_milestones):
            p.append(f"ca_milestones={self.ca_milestones}: fractions in (0, 1)")
        return p

    def fine_tune_stages(self, name: str) -> list[Stage]:
        """The fine-tune stage called `name`, or none when ca_epochs = 0."""
        if self.ca_epochs == 0:
            return []
        return [Stage(name, self.ca_epochs, self.ca_optimizer, self.ca_lr, momentum=self.ca_momentum,
                      milestones=self.ca_milestones, augment=self.ca_augment)]


@dataclass(frozen=True)
class CALoRConfig(FineTuneSettings, CALossSettings, LowRankSettings):
    """Defaults: the authors' scripts (alpha 0.25, gamma 8, tanh) with r and the fine-tune budget chosen
    for the embedded MNIST scenario by the sweep in benchmarks/sweep_calor.py (see docs).
    Fields, in order: rank, activation, alpha, gamma, ca_epochs, ca_optimizer, ca_lr, ca_momentum,
    ca_milestones, ca_augment (the bases are listed in reverse so that dataclass keeps this order)."""

    def __post_init__(self) -> None:
        collect(self.low_rank_problems() + self.ca_loss_problems() + self.fine_tune_problems(), "calor settings")


# The parts CALoR and its ablations are composed of (`lor`, `ca`, `ls-ft` each take the parts they keep,
# rather than inheriting CALoR and overriding what they drop).

def low_rank_head(model: nn.Module, settings: LowRankSettings, defense: str) -> nn.Module:
    """Replace `model.head` by the low-rank head BN -> Linear(d, r) -> activation -> Linear(r, C)."""
    d, c = model.feature_dim, model.num_classes
    if settings.rank >= d:  # a bottleneck as wide as the features compresses nothing
        raise ConfigError(f"{defense}: rank={settings.rank} must be below the model's feature_dim={d}")
    model.head = LowRankHead(d, settings.rank, c, settings.activation)
    return model


def cross_entropy_stage(name: str, budget: ClassifierSpec) -> Stage:
    """The first stage of every CALoR variant: cross-entropy with the scenario's training budget."""
    return budget_stage(name, budget)


def adapted_loss(stage: Stage, logits: torch.Tensor, y: torch.Tensor, settings: CALossSettings) -> torch.Tensor:
    """L_CA in the "ca" stage, cross-entropy in any other."""
    if stage.name == "ca":
        return confidence_adaptation_loss(logits, y, settings.alpha, settings.gamma)
    return F.cross_entropy(logits, y)


@DEFENSES.register("calor")
class CALoR(Defense):
    """Low-rank tanh head trained with CE, then a confidence-adaptation fine-tune (arXiv 2410.05814)."""

    name = "calor"
    paper = "Yu et al. 2024, arXiv 2410.05814"
    Config = CALoRConfig

    def prepare(self, model: nn.Module) -> nn.Module:
        return low_rank_head(model, self.config, self.name)

    def stages(self, budget: ClassifierSpec) -> list[Stage]:
        return [cross_entropy_stage("lor", budget), *self.config.fine_tune_stages("ca")]

    def loss(self, stage: Stage, logits: torch.Tensor, y: torch.Tensor, extras: dict[str, Any]) -> torch.Tensor:
        return adapted_loss(stage, logits, y, self.config)
