"""`ca`: Confidence Adaptation alone, on the ordinary linear head (no low-rank compression).

Yu et al., "CALoR: Towards Comprehensive Model Inversion Defense", arXiv 2410.05814 (2024) — the
"CA" ablation. Stage 1 trains the unchanged classifier with cross-entropy; stage 2 fine-tunes all
weights with L_CA = alpha * p^gamma * log p using exactly CALoR's CA settings and schedule (alpha 0.25,
gamma 8, SGD lr 2e-5, momentum 0.9, 5 epochs, LR x0.1 at 60% and 80%, no augmentation).
Takes CALoR's loss and fine-tune stage; only the head transform is left out.
"""

from __future__ import annotations

from dataclasses import dataclass

from typing import Any

import torch

from ..errors import collect
from ..scenario import ClassifierSpec
from .base import DEFENSES, Defense, Stage
from .calor import CALossSettings, FineTuneSettings, adapted_loss, cross_entropy_stage


@dataclass(frozen=True)
class CAConfig(FineTuneSettings, CALossSettings):
    """CALoR's CA loss and fine-tune settings (fields: alpha, gamma, then the ca_* schedule)."""

    def __post_init__(self) -> None:
        collect(self.ca_loss_problems() + self.fine_tune_problems(), "ca settings")


@DEFENSES.register("ca")
class CA(Defense):
    """Plain linear head trained with CE, then CALoR's confidence-adaptation fine-tune."""

    name = "ca"
    paper = "Yu et al. 2024, arXiv 2410.05814 (CA ablation of CALoR)"
    Config = CAConfig

    def stages(self, budget: ClassifierSpec) -> list[Stage]:
        return [cross_entropy_stage("train", budget), *self.config.fine_tune_stages("ca")]

    def loss(self, stage: Stage, logits: torch.Tensor, y: torch.Tensor, extras: dict[str, Any]) -> torch.Tensor:
        return adapted_loss(stage, logits, y, self.config)
