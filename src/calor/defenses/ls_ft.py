"""`ls-ft`: the CALoR authors' control — low-rank model, then a positive label-smoothing fine-tune.

Yu et al., "CALoR: Towards Comprehensive Model Inversion Defense", arXiv 2410.05814 (2024): to show that
CA is not "just lower confidence", the authors fine-tuned the low-rank model with positive label
smoothing eps = 0.12 instead of CA — the smoothing whose target confidence (~0.88) equals CA's
p* = exp(-1/gamma) for gamma = 8 with 530 classes. Here the match is computed for the model's number of
classes C: the LS target gives the true class 1 - eps + eps/C, so by default

    eps = (1 - p*) * C / (C - 1),   p* = exp(-1/gamma)

(gamma 8, C 5 -> eps = 0.1469; C 530 -> 0.1177). An explicit `eps` overrides it. Stage 1 is CALoR's
LoR stage (CE through the low-rank head); stage 2 ("ls") uses CALoR's CA fine-tune schedule
(`ca_*` settings) with the smoothed cross-entropy of `calor.defenses.losses` instead of L_CA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, collect
from ..scenario import ClassifierSpec
from .base import DEFENSES, Defense, Stage
from .calor import FineTuneSettings, LowRankSettings, ca_target_confidence, cross_entropy_stage, low_rank_head
from .losses import smoothed_cross_entropy, smoothing_for_confidence


@dataclass(frozen=True)
class LSFTConfig(FineTuneSettings, LowRankSettings):
    """CALoR's head and fine-tune schedule; `gamma` only sets the matched target confidence p*;
    `eps` (None = matched to p*) is the label-smoothing factor of the fine-tune."""

    gamma: float = 8.0
    eps: float | None = None

    def __post_init__(self) -> None:
        p = self.low_rank_problems() + self.fine_tune_problems()
        if self.gamma <= 0:
            p.append(f"gamma={self.gamma}: must be > 0 (target confidence p* = exp(-1/gamma))")
        if self.eps is not None and not 0 < self.eps < 1:
            p.append(f"eps={self.eps}: positive label smoothing needs 0 < eps < 1 (or leave it unset to match p*)")
        collect(p, "ls-ft settings")


@DEFENSES.register("ls-ft")
class LSFT(Defense):
    """Low-rank head trained with CE, then a positive-LS fine-tune matched to CA's target confidence."""

    name = "ls-ft"
    paper = "Yu et al. 2024, arXiv 2410.05814 (positive-LS control of CALoR's CA)"
    Config = LSFTConfig

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self._num_classes: int | None = None

    def smoothing(self, num_classes: int) -> float:
        """The fine-tune's eps: the explicit setting, else the one whose LS target confidence is p*."""
        if self.config.eps is not None:
            return self.config.eps
        eps = smoothing_for_confidence(ca_target_confidence(self.config.gamma), num_classes)
        if not 0 < eps < 1:
            raise ConfigError(f"ls-ft: gamma={self.config.gamma} gives p* = {ca_target_confidence(self.config.gamma):.4f} "
                              f"<= 1/C for C={num_classes} classes (matched eps={eps:.4f}); raise gamma or set eps")
        return eps

    def prepare(self, model: nn.Module) -> nn.Module:
        self._num_classes = model.num_classes
        self.smoothing(model.num_classes)  # fail before training if no valid eps matches p*
        return low_rank_head(model, self.config, self.name)

    def stages(self, budget: ClassifierSpec) -> list[Stage]:
        return [cross_entropy_stage("lor", budget), *self.config.fine_tune_stages("ls")]

    def on_epoch_start(self, stage: Stage, epoch: int) -> dict[str, float]:
        if stage.name == "ls" and self._num_classes is not None:
            return {"ls_eps": self.smoothing(self._num_classes)}
        return {}

    def loss(self, stage: Stage, logits: torch.Tensor, y: torch.Tensor, extras: dict[str, Any]) -> torch.Tensor:
        if stage.name == "ls":
            return smoothed_cross_entropy(logits, y, self.smoothing(logits.shape[1]))
        return super().loss(stage, logits, y, extras)

    def summary(self) -> dict[str, Any]:
        if self._num_classes is None:
            return {}
        return {"ls_eps": self.smoothing(self._num_classes), "target_confidence": ca_target_confidence(self.config.gamma)}
