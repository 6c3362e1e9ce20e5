"""Threat models as types: the target reaches an attack only through an oracle that exposes exactly
what its threat model allows, and counts every image it is queried with."""

from __future__ import annotations

import enum

import torch
from torch import nn

from ..errors import ThreatModelError


class ThreatModel(str, enum.Enum):
    WHITE_BOX = "white-box"  # parameters and gradients
    BLACK_BOX = "black-box"  # output probabilities only
    LABEL_ONLY = "label-only"  # predicted label only

    def allows(self, needed: "ThreatModel") -> bool:
        order = [ThreatModel.LABEL_ONLY, ThreatModel.BLACK_BOX, ThreatModel.WHITE_BOX]
        return order.index(self) >= order.index(needed)


class LabelOnlyOracle:
    """Answers `label(x)`: the target's top-1 class, nothing else."""

    threat_model = ThreatModel.LABEL_ONLY

    def __init__(self, model: nn.Module, num_classes: int, image_shape: tuple[int, ...]) -> None:
        self.__model = model  # name-mangled: not part of this oracle's interface
        self.num_classes = num_classes
        self.image_shape = tuple(image_shape)
        self.queries = 0
        self.device = next(model.parameters()).device

    def count(self, x: torch.Tensor) -> None:
        """Record `x` as target queries (checking its shape); every method that answers calls it."""
        if tuple(x.shape[1:]) != self.image_shape:
            raise ThreatModelError(f"oracle expects images of shape {self.image_shape}, got {tuple(x.shape[1:])}")
        self.queries += len(x)

    @torch.no_grad()
    def _logits_nograd(self, x: torch.Tensor) -> torch.Tensor:
        self.count(x)
        return self.__model(x.detach().to(self.device)).detach()

    def label(self, x: torch.Tensor) -> torch.Tensor:
        return self._logits_nograd(x).argmax(1)


class BlackBoxOracle(LabelOnlyOracle):
    """Answers `probs(x)` (softmax confidences, no gradient) and `label(x)`."""

    threat_model = ThreatModel.BLACK_BOX

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        return self._logits_nograd(x).softmax(1)


class WhiteBoxOracle(BlackBoxOracle):
    """Full access: differentiable `logits(x)` and the module itself (for adaptive attacks)."""

    threat_model = ThreatModel.WHITE_BOX

    def __init__(self, model: nn.Module, num_classes: int, image_shape: tuple[int, ...]) -> None:
        super().__init__(model, num_classes, image_shape)
        self._module = model

    @property
    def module(self) -> nn.Module:
        return self._module

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        self.count(x)
        return self._module(x.to(self.device))  # differentiable; a no-op when x is already there


class DerivedWhiteBoxOracle(WhiteBoxOracle):
    """A white-box oracle over a modified copy of the target (an adaptive attack's straight-through
    copy, say), with the full white-box interface; every image it sees is counted as a query of the
    `parent` oracle, so the attack's reported queries include them."""

    def __init__(self, parent: WhiteBoxOracle, module: nn.Module) -> None:
        super().__init__(module, parent.num_classes, parent.image_shape)
        self.parent = parent
        self.queries = parent.queries

    def count(self, x: torch.Tensor) -> None:
        self.parent.count(x)
        self.queries = self.parent.queries


ORACLES = {ThreatModel.WHITE_BOX: WhiteBoxOracle, ThreatModel.BLACK_BOX: BlackBoxOracle, ThreatModel.LABEL_ONLY: LabelOnlyOracle}


def make_oracle(model: nn.Module, threat_model: ThreatModel, num_classes: int, image_shape: tuple[int, ...]) -> LabelOnlyOracle:
    """Wrap a target (put in eval mode, parameters frozen) in the oracle of `threat_model`."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return ORACLES[ThreatModel(threat_model)](model, num_classes, image_shape)
