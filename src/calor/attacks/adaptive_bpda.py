"""adaptive-bpda — GMI (or any white-box attack) with straight-through (BPDA) gradients through the target's
saturating activations.

Adaptive attack against CALoR's **back-propagation lever** (Yu et al., arXiv 2410.05814, 2024): the
low-rank head's tanh saturates, so d tanh(u)/du = 1 - tanh(u)^2 ~ 0 and the attacker's gradient
starves. Following BPDA (Athalye, Carlini & Wagner, ICML 2018, "Obfuscated Gradients Give a False Sense
of Security"), the backward pass treats every saturating activation (tanh, sigmoid, hardtanh/ReLU6,
hardsigmoid) as the identity while the forward pass is unchanged: the logits — hence the loss values
and the reconstructions' classification — are exactly the target's; only the gradient differs.

Implementation: `prepare` deep-copies the white-box module and replaces each saturating activation
*module* in the copy by a wrapper whose autograd Function returns act(x) forward and passes the
gradient through unchanged backward; the original target is never modified. The copy is wrapped in a
`DerivedWhiteBoxOracle`, whose every forward is counted as queries of the target oracle, and the
`base` attack runs against it unchanged: GMI (Zhang et al., CVPR 2020) by default, cross-entropy
identity loss included, or any other white-box attack (`base=lomma-kedmi`, `base=plgmi`, ...; its
target-dependent priors are then built through the copy too — same forward, so the same priors).

Limits: activations applied functionally inside a module's forward (torch.tanh(x)) are not found; calor's
LowRankHead uses an activation module, and `extras["bpda_swapped"]` records how many were replaced
(0 against an undefended target, where this attack is plain GMI).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import to_dict
from ..errors import collect
from .base import ATTACKS, Attack, PriorStore, Reconstructions, build_attack
from .gmi import GMI, GMIConfig
from .oracle import DerivedWhiteBoxOracle, ThreatModel, WhiteBoxOracle

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
                parent.add_module(name, StraightThroughActivation(child))  # replaces the child of that name
                swapped += 1
    return clone, swapped


@dataclass(frozen=True)
class BPDAConfig(GMIConfig):
    # The white-box attack run through the straight-through copy. GMI's settings above (lam, lr, momentum,
    # clamp) apply when base is gmi; another base runs with its own defaults and these iterations.
    base: str = "gmi"

    def __post_init__(self) -> None:
        super().__post_init__()
        p = []
        names = [n for n in ATTACKS.names() if n != "adaptive-bpda" and ATTACKS.get(n).threat_model is ThreatModel.WHITE_BOX]
        if self.base not in names:
            p.append(f"base={self.base!r}: choose a white-box attack: {', '.join(names)}")
        elif self.base != "gmi":
            gmi_only = [f.name for f in dataclasses.fields(GMIConfig) if f.name != "iterations" and getattr(self, f.name) != f.default]
            if gmi_only:
                p.append(f"{', '.join(gmi_only)}: GMI's settings, used only with base=gmi (base={self.base} runs with its own defaults)")
        collect(p, "adaptive-bpda settings")


@dataclass
class BPDAPrior:
    """The base attack, the straight-through oracle it runs against, and the base attack's own prior."""

    base: Attack
    oracle: DerivedWhiteBoxOracle
    prior: Any
    swapped: int


@ATTACKS.register("adaptive-bpda")
class AdaptiveBPDA(Attack):
    name = "adaptive-bpda"
    threat_model = ThreatModel.WHITE_BOX
    paper = ("adaptive attack on CALoR (Yu et al., arXiv 2410.05814): BPDA (Athalye et al., ICML 2018) "
             "straight-through gradients, on GMI (Zhang et al., CVPR 2020) or any white-box attack (`base`)")
    Config = BPDAConfig

    def base_attack(self) -> Attack:
        cfg = self.config
        if cfg.base == "gmi":
            return GMI(GMIConfig(**{k: v for k, v in to_dict(cfg).items() if k != "base"}))
        return build_attack(cfg.base, {}, iterations=cfg.iterations)

    def prepare(self, oracle: WhiteBoxOracle, priors: PriorStore) -> BPDAPrior:
        clone, swapped = straight_through_copy(oracle.module)
        clone.eval()
        straight_through = DerivedWhiteBoxOracle(oracle, clone)  # its forwards are counted as target queries
        base = self.base_attack()
        return BPDAPrior(base, straight_through, base.prepare(straight_through, priors), swapped)

    def _run(self, oracle: WhiteBoxOracle, prior: BPDAPrior, classes: list[int], per_class: int, gen: torch.Generator) -> Reconstructions:
        rec = prior.base.reconstruct(prior.oracle, prior.prior, classes, per_class, gen)
        rec.extras |= {"bpda_swapped": prior.swapped, "base": prior.base.name}
        return rec
