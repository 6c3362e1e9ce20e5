"""TL-DMI: transfer-learning-based model-inversion defense.

Ho et al., "Model Inversion Robustness: Can Transfer Learning Help?", CVPR 2024.
Pre-train the whole classifier on labelled *public* data, freeze the front of the network, and fine-tune
only the back on the private data, so that the early layers hold no private information an inversion
attack could exploit.

Stages run by `calor.training.train_classifier`:
1. ``pretrain`` (``data="public"``): all parameters, trained with cross-entropy on the public split
   through a *temporary* linear head sized for the public classes.
2. ``finetune`` (private data): the first ``n_frozen = floor(freeze_fraction * len(blocks) + 0.5)``
   of ``model.blocks`` (round half up, so 0.7 of the cnn's 4 blocks freezes 3 and 0.7 of the resnet's
   6 blocks freezes 4) are frozen; the private head is re-initialised and, with the unfrozen blocks,
   trained on the private data.

Choices and deviations, stated:
- The paper measures the frozen part in layers/parameters of its VGG/IR networks; here the unit is a
  classifier *block* (`Classifier.blocks`), the granularity our models expose. The head is never frozen.
- Frozen blocks are put in eval mode before every forward pass of the fine-tune (a forward pre-hook),
  so their BatchNorm layers normalise with, and keep, the statistics learned on public data — a frozen
  block is a fixed feature extractor, not one whose normalisation drifts towards the private data.
  The hooks only act in train mode and stay on the in-memory model (a rebuilt model has none; in eval
  mode both behave identically).
- The public head is built in `on_stage_start`, which cannot see the data, so its size comes from
  ``public_classes`` (0 = as many classes as the private task, true of the MNIST protocol); a public
  label outside the head stops the training loop with a DataError naming the stage and the head's size
  (raise ``public_classes``). After the fine-tune only the private
  head is part of the module, so saved weights load into ``prepare``d models with ``strict=True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import collect
from ..models.heads import LinearHead
from ..scenario import ClassifierSpec
from .base import DEFENSES, Defense, Stage, budget_stage


def frozen_block_count(num_blocks: int, freeze_fraction: float) -> int:
    """How many front blocks to freeze: freeze_fraction * num_blocks rounded half up (not banker's)."""
    return min(num_blocks, int(freeze_fraction * num_blocks + 0.5))


def _force_eval(module: nn.Module, _inputs: Any) -> None:
    # Forward pre-hook: the training loop calls model.train() every epoch; a frozen block must keep
    # using (and not update) its BatchNorm running statistics, so switch it back right before it runs.
    if module.training:
        module.eval()


@dataclass(frozen=True)
class TLConfig:
    """freeze_fraction: share of the classifier's blocks frozen after public pre-training (the CALoR
    authors' baseline setting: 70%; TL-DMI reports 0.5-0.7). Epochs/LR left at None follow the
    scenario's target budget."""

    freeze_fraction: float = 0.7
    public_classes: int = 0
    pretrain_epochs: int | None = None
    pretrain_lr: float | None = None
    finetune_epochs: int | None = None
    finetune_lr: float | None = None

    def __post_init__(self) -> None:
        p = []
        if not 0.0 <= self.freeze_fraction <= 1.0:
            p.append(f"freeze_fraction={self.freeze_fraction}: must be in [0, 1] (share of blocks frozen)")
        if self.public_classes < 0:
            p.append(f"public_classes={self.public_classes}: must be >= 0 (0 = as many as private classes)")
        for key in ("pretrain_epochs", "finetune_epochs"):
            v = getattr(self, key)
            if v is not None and v < 1:
                p.append(f"{key}={v}: must be >= 1 (or none for the scenario's target epochs)")
        for key in ("pretrain_lr", "finetune_lr"):
            v = getattr(self, key)
            if v is not None and v <= 0:
                p.append(f"{key}={v}: must be > 0 (or none for the scenario's target lr)")
        collect(p, "tl settings")


@DEFENSES.register("tl")
class TransferLearning(Defense):
    """Pre-train on public data, freeze the front blocks, fine-tune the rest on private data (CVPR 2024)."""

    name = "tl"
    paper = "Ho et al., Model Inversion Robustness: Can Transfer Learning Help?, CVPR 2024"
    Config = TLConfig

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.n_frozen = 0
        self.n_blocks = 0
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []

    def stages(self, budget: ClassifierSpec) -> list[Stage]:
        cfg = self.config
        return [
            budget_stage("pretrain", budget, epochs=cfg.pretrain_epochs, lr=cfg.pretrain_lr, data="public"),
            budget_stage("finetune", budget, epochs=cfg.finetune_epochs, lr=cfg.finetune_lr),
        ]

    def on_stage_start(self, stage: Stage, model: nn.Module) -> None:
        if stage.name == "pretrain":
            classes = self.config.public_classes or model.num_classes
            model.head = LinearHead(model.feature_dim, classes)
        elif stage.name == "finetune":
            # A fresh private head: the public head's classes mean nothing for the private task, and it
            # must not stay in the module (the artifact's state dict holds the private head only).
            model.head = LinearHead(model.feature_dim, model.num_classes)
            self.freeze_front(model)

    def freeze_front(self, model: nn.Module) -> int:
        """Freeze the first `n_frozen` blocks: no gradients, BatchNorm statistics kept as they are."""
        blocks = list(model.blocks)
        self.n_blocks = len(blocks)
        self.n_frozen = frozen_block_count(len(blocks), self.config.freeze_fraction)
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        for block in blocks[: self.n_frozen]:
            block.requires_grad_(False)
            for p in block.parameters():
                p.grad = None  # drop the pre-training gradients: frozen means no gradient at all
            self._hooks.append(block.register_forward_pre_hook(_force_eval))
        return self.n_frozen

    def loss(self, stage: Stage, logits: torch.Tensor, y: torch.Tensor, extras: dict[str, Any]) -> torch.Tensor:
        return F.cross_entropy(logits, y)

    def summary(self) -> dict[str, Any]:
        return {"frozen_blocks": self.n_frozen, "blocks": self.n_blocks, "freeze_fraction": self.config.freeze_fraction}
