"""`ca`: Confidence Adaptation alone, on the ordinary linear head (no low-rank compression).

Yu et al., "CALoR: Towards Comprehensive Model Inversion Defense", arXiv 2410.05814 (2024) — the
"CA" ablation. Stage 1 trains the unchanged classifier with cross-entropy; stage 2 fine-tunes all
weights with L_CA = alpha * p^gamma * log p using exactly CALoR's CA settings and schedule (alpha 0.25,
gamma 8, SGD lr 2e-5, momentum 0.9, 5 epochs, LR x0.1 at 60% and 80%, no augmentation).
Reuses the `CALoR` class (its loss and stage builder); only the head transform is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..errors import collect
from ..scenario import ClassifierSpec
from .base import DEFENSES, Stage
from .calor import CALoR, CALossSettings, FineTuneSettings


@dataclass(frozen=True)
class CAConfig(FineTuneSettings, CALossSettings):
    """CALoR's CA loss and fine-tune settings (fields: alpha, gamma, then the ca_* schedule)."""

    def __post_init__(self) -> None:
        collect(self.ca_loss_problems() + self.fine_tune_problems(), "ca settings")


@DEFENSES.register("ca")
class CA(CALoR):
    """Plain linear head trained with CE, then CALoR's confidence-adaptation fine-tune."""

    name = "ca"
    paper = "Yu et al. 2024, arXiv 2410.05814 (CA ablation of CALoR)"
    Config = CAConfig

    def prepare(self, model: nn.Module) -> nn.Module:
        return model  # keep the architecture's own linear head

    def stages(self, budget: ClassifierSpec) -> list[Stage]:
        return [Stage("train", budget.epochs, "adam", budget.lr, augment=budget.augment), *self.config.fine_tune_stages("ca")]
