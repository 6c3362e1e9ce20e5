"""adaptive-bpda — GMI with straight-through (BPDA) gradients through the target's saturating activations.

Adaptive attack against CALoR's **back-propagation lever** (Yu et al., arXiv 2410.05814, 2024): the
low-rank head's tanh saturates, so d tanh(u)/du = 1 - tanh(u)^2 ~ 0 and the attacker's gradient
starves. Following BPDA (Athalye, Carlini & Wagner, ICML 2018, "Obfuscated Gradients Give a False Sense
of Security"), the backward pass treats every saturating activation (tanh, sigmoid, hardtanh/ReLU6,
hardsigmoid) as the identity while the forward pass is unchanged: the logits — hence the loss values
and the reconstructions' classification — are exactly the target's; only the gradient differs.

Implementation: `prepare` deep-copies the white-box module and replaces each saturating activation
*module* in the copy by a wrapper whose autograd Function returns act(x) forward and passes the
gradient through unchanged backward; the original target is never modified. Each forward through the
copy is counted as queries of the target oracle. Everything else is GMI (Zhang et al., CVPR 2020),
cross-entropy identity loss included (combine levers with adaptive-logit/pstar in a later study);
this class only replaces GMI's `identity_term`.

Limits: activations applied functionally inside a module's forward (torch.tanh(x)) are not found; calor's
LowRankHead uses an activation module, and `extras["bpda_swapped"]` records how many were replaced
(0 against an undefended target, where this attack is plain GMI).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .base import ATTACKS, PriorStore, Reconstructions
from .gmi import GMI
from .oracle import ThreatModel, WhiteBoxOracle
from .priors import GanPrior

SATURATING = (nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.Hardsigmoid)  # nn.ReLU6 is a Hardtanh


class _StraightThrough(torch.autograd.Function):
    """y = act(x) forward; dL/dx = dL/dy backward (the activation's Jacobian replaced by the identity)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, act: nn.Module) -> torch.Tensor:
        return act(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class StraightThroughActivation(nn.Module):
    """Wraps an activation module: same forward, identity backward."""

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _StraightThrough.apply(x, self.act)


def straight_through_copy(module: nn.Module) -> tuple[nn.Module, int]:
    """A deep copy of `module` with every saturating activation module wrapped straight-through.
    Returns (copy, number of activations replaced); `module` itself is untouched."""
    clone = copy.deepcopy(module)
    swapped = 0
    for parent in list(clone.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, SATURATING):
                setattr(parent, name, StraightThroughActivation(child))
                swapped += 1
    return clone, swapped


@dataclass
class BPDAPrior(GanPrior):
    """The shared GAN prior plus the straight-through copy of the target."""

    straight_through: nn.Module | None = None
    swapped: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


@ATTACKS.register("adaptive-bpda")
class AdaptiveBPDA(GMI):
    name = "adaptive-bpda"
    threat_model = ThreatModel.WHITE_BOX
    paper = ("adaptive attack on CALoR (Yu et al., arXiv 2410.05814): BPDA (Athalye et al., ICML 2018) "
             "straight-through gradients, built on GMI (Zhang et al., CVPR 2020)")

    def prepare(self, oracle: WhiteBoxOracle, priors: PriorStore) -> BPDAPrior:
        gan = priors.gan()
        clone, swapped = straight_through_copy(oracle.module)
        clone.eval()
        return BPDAPrior(gan.generator, gan.critic, gan.kind, gan.path, straight_through=clone, swapped=swapped)

    def identity_term(self, oracle: WhiteBoxOracle, prior: BPDAPrior, images: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        oracle.count(images)  # the copy computes the target's own logits: count them as target queries
        return self.identity_loss(prior.straight_through(images), y)

    def _run(self, oracle: WhiteBoxOracle, prior: BPDAPrior, classes: list[int], per_class: int, gen: torch.Generator) -> Reconstructions:
        rec = super()._run(oracle, prior, classes, per_class, gen)
        rec.extras["bpda_swapped"] = prior.swapped
        return rec
