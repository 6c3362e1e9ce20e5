"""The Defense contract: a model transform, a loss, and training stages run by the one training loop."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..config import from_dict, to_dict
from ..errors import ConfigError
from ..registry import Registry
from ..scenario import ClassifierSpec

DEFENSES: Registry = Registry("defense")


@dataclass(frozen=True)
class Stage:
    """One phase of training (e.g. CALoR: 'lor' with CE, then 'ca' fine-tune).

    `milestones` are fractions of `epochs` at which the learning rate is multiplied by `lr_decay`.
    """

    name: str
    epochs: int
    optimizer: str = "adam"  # adam | sgd
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    milestones: tuple[float, ...] = (0.75, 0.9)
    lr_decay: float = 0.1
    augment: bool = True
    data: str = "private"  # which labelled split the stage trains on: private | public


def budget_stage(name: str, budget: ClassifierSpec, *, epochs: int | None = None, lr: float | None = None, **kw: Any) -> Stage:
    """A stage trained with the scenario's budget (its epochs, optimiser, learning rate, weight decay and
    augmentation), `epochs`/`lr` replacing the budget's where a defense has its own."""
    return Stage(name, epochs or budget.epochs, budget.optimizer, lr or budget.lr, weight_decay=budget.weight_decay,
                 augment=budget.augment, **kw)


def build_optimizer(stage: Stage, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """The optimiser a stage asks for (Adam or SGD with momentum)."""
    if stage.optimizer == "adam":
        return torch.optim.Adam(params, lr=stage.lr, weight_decay=stage.weight_decay)
    if stage.optimizer == "sgd":
        return torch.optim.SGD(params, lr=stage.lr, momentum=stage.momentum, weight_decay=stage.weight_decay)
    raise ConfigError(f"stage {stage.name!r}: unknown optimizer {stage.optimizer!r} (adam or sgd)")


@dataclass(frozen=True)
class NoConfig:
    """A defense with no hyper-parameters."""


class Defense:
    """Base class. A subclass sets `name`, `Config` (a frozen dataclass with the paper's defaults and a
    `__post_init__` that validates), and overrides `prepare`, `loss` and, if it needs more than one
    CE stage, `stages`. Hooks, all optional, called by `calor.training.train_classifier`:
    `on_stage_start` (swap heads, freeze layers), `make_optimizer` (e.g. DP-SGD), `on_epoch_start`
    (schedules; returns values logged per epoch), `after_step` (auxiliary optimisers, e.g. triggers),
    and `summary` (numbers to record in the artifact, e.g. a privacy budget)."""

    name: ClassVar[str]
    Config: ClassVar[type] = NoConfig
    paper: ClassVar[str] = ""
    architectures: ClassVar[tuple[str, ...] | None] = None  # None: any registered classifier
    # Whether training can resume from a mid-stage checkpoint: the model, optimiser and RNG states are all
    # of the defense's state. False where hooks keep more (an auxiliary optimiser, a privacy accountant).
    resumable: ClassVar[bool] = True
    # Whether N processes (torchrun) train it as one process would with the same global batch: its loss is a
    # mean over samples and its hooks keep no per-process state. False refuses data-parallel training.
    data_parallel: ClassVar[bool] = True

    def __init__(self, config: Any = None) -> None:
        self.config = config if config is not None else self.Config()

    def check_architecture(self, arch: str) -> None:
        if self.architectures is not None and arch not in self.architectures:
            raise ConfigError(f"defense {self.name!r} needs a target architecture in {list(self.architectures)}, "
                              f"the scenario's is {arch!r} (e.g. --scenario-set target.arch={self.architectures[0]})")

    @classmethod
    def from_settings(cls, settings: dict[str, Any] | None = None) -> "Defense":
        return cls(from_dict(cls.Config, dict(settings or {}), f"defense {cls.name!r}"))

    def config_dict(self) -> dict[str, Any]:
        return to_dict(self.config)

    def prepare(self, model: nn.Module) -> nn.Module:
        """Transform a freshly built classifier (e.g. replace its head). Default: unchanged."""
        return model

    def stages(self, budget: ClassifierSpec) -> list[Stage]:
        """Training stages; default: one CE stage with the scenario's budget."""
        return [budget_stage("train", budget)]

    def on_stage_start(self, stage: Stage, model: nn.Module) -> None:
        """Called before each stage's optimiser is built (may replace the head or freeze parameters)."""

    def make_optimizer(self, stage: Stage, model: nn.Module, params: list[nn.Parameter], num_samples: int, batch_size: int) -> torch.optim.Optimizer:
        """The stage's optimiser over the trainable `params`."""
        return build_optimizer(stage, params)

    def on_epoch_start(self, stage: Stage, epoch: int) -> dict[str, float]:
        """Called before each epoch; returns values to log for that epoch (schedules)."""
        return {}

    def after_step(self, stage: Stage, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        """Called after each optimiser step with the batch (auxiliary updates)."""

    def summary(self) -> dict[str, Any]:
        """Numbers recorded in the trained artifact's metrics under `defense` (e.g. DP epsilon)."""
        return {}

    def forward(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """Training-time forward pass: logits plus whatever the loss needs (features, KL terms...)."""
        return model(x), {}

    def loss(self, stage: Stage, logits: torch.Tensor, y: torch.Tensor, extras: dict[str, Any]) -> torch.Tensor:
        """Training loss of one batch in `stage`. Default: cross-entropy."""
        return F.cross_entropy(logits, y)


def build_defense(name: str, settings: dict[str, Any] | None = None) -> Defense:
    """Instantiate a registered defense with validated hyper-parameters (unknown keys are errors)."""
    return DEFENSES.get(name).from_settings(settings)


def describe(defense_cls: type[Defense]) -> dict[str, Any]:
    return {
        "name": defense_cls.name,
        "paper": defense_cls.paper,
        "architectures": list(defense_cls.architectures) if defense_cls.architectures else "any",
        "defaults": to_dict(defense_cls.Config()) if dataclasses.is_dataclass(defense_cls.Config) else {},
    }


__all__ = ["DEFENSES", "Defense", "NoConfig", "Stage", "budget_stage", "build_defense", "build_optimizer", "describe", "field"]
