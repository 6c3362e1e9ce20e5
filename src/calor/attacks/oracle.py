"""Threat models as types: the target reaches an attack only through an oracle that exposes exactly
what its threat model allows, and counts every image it is queried with.

An oracle keeps the target and its query count outside the object (in a module-level table keyed by the
oracle), so an attack holding a label-only or black-box oracle finds no model among its attributes, no
private helper that returns logits, and no query counter it could reset. Python cannot sandbox code that
runs in the same process; `tests/test_threat_model.py` closes the remaining routes for every registered
attack by inspecting its source (no private or dunder attribute access, no import of calor's internals).
"""

from __future__ import annotations

import enum
import weakref
from dataclasses import dataclass

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


@dataclass
class _Hidden:
    model: nn.Module
    queries: int = 0
    counted_by: "LabelOnlyOracle | None" = None  # a derived oracle's queries are its parent's


_HIDDEN: "weakref.WeakKeyDictionary[LabelOnlyOracle, _Hidden]" = weakref.WeakKeyDictionary()


def _hidden(oracle: "LabelOnlyOracle") -> _Hidden:
    state = _HIDDEN[oracle]
    return _HIDDEN[state.counted_by] if state.counted_by is not None else state


def _answer(oracle: "LabelOnlyOracle", x: torch.Tensor) -> torch.Tensor:
    """The target's logits on `x`, without a graph (counted as queries)."""
    oracle.count(x)
    with torch.no_grad():
        return _HIDDEN[oracle].model(x.detach().to(oracle.device)).detach()


class LabelOnlyOracle:
    """Answers `label(x)`: the target's top-1 class, nothing else."""

    __slots__ = ("num_classes", "image_shape", "device", "__weakref__")
    threat_model = ThreatModel.LABEL_ONLY

    def __init__(self, model: nn.Module, num_classes: int, image_shape: tuple[int, ...]) -> None:
        _HIDDEN[self] = _Hidden(model)
        self.num_classes = num_classes
        self.image_shape = tuple(image_shape)
        self.device = next(model.parameters()).device

    @property
    def queries(self) -> int:
        """Images this oracle (and any oracle derived from it) has answered; read-only."""
        return _hidden(self).queries

    def count(self, x: torch.Tensor) -> None:
        """Record `x` as target queries (checking its shape); every method that answers calls it."""
        if tuple(x.shape[1:]) != self.image_shape:
            raise ThreatModelError(f"oracle expects images of shape {self.image_shape}, got {tuple(x.shape[1:])}")
        _hidden(self).queries += len(x)

    def label(self, x: torch.Tensor) -> torch.Tensor:
        return _answer(self, x).argmax(1)


class BlackBoxOracle(LabelOnlyOracle):
    """Answers `probs(x)` (softmax confidences, no gradient) and `label(x)`."""

    __slots__ = ()
    threat_model = ThreatModel.BLACK_BOX

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        return _answer(self, x).softmax(1)


class WhiteBoxOracle(BlackBoxOracle):
    """Full access: differentiable `logits(x)` and the module itself (for adaptive attacks)."""

    __slots__ = ()
    threat_model = ThreatModel.WHITE_BOX

    @property
    def module(self) -> nn.Module:
        return _HIDDEN[self].model

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        self.count(x)
        return self.module(x.to(self.device))  # differentiable; a no-op when x is already there


class DerivedWhiteBoxOracle(WhiteBoxOracle):
    """A white-box oracle over a modified copy of the target (an adaptive attack's straight-through
    copy, say), with the full white-box interface; every image it sees is counted as a query of the
    `parent` oracle, so the attack's reported queries include them."""

    __slots__ = ()

    def __init__(self, parent: WhiteBoxOracle, module: nn.Module) -> None:
        super().__init__(module, parent.num_classes, parent.image_shape)
        root = _HIDDEN[parent].counted_by or parent
        _HIDDEN[self].counted_by = root


ORACLES = {ThreatModel.WHITE_BOX: WhiteBoxOracle, ThreatModel.BLACK_BOX: BlackBoxOracle, ThreatModel.LABEL_ONLY: LabelOnlyOracle}


def make_oracle(model: nn.Module, threat_model: ThreatModel, num_classes: int, image_shape: tuple[int, ...]) -> LabelOnlyOracle:
    """Wrap a target (put in eval mode, parameters frozen) in the oracle of `threat_model`."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return ORACLES[ThreatModel(threat_model)](model, num_classes, image_shape)
