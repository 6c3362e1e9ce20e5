"""adaptive-bpda — a white-box attack (GMI by default) with straight-through (BPDA) gradients through the
target's saturating activations.

Adaptive attack against CALoR's **back-propagation lever** (Yu et al., arXiv 2410.05814, 2024): the
low-rank head's tanh saturates, so d tanh(u)/du = 1 - tanh(u)^2 ~ 0 and the attacker's gradient
starves. Following BPDA (Athalye, Carlini & Wagner, ICML 2018, "Obfuscated Gradients Give a False Sense
of Security"), the backward pass treats every saturating activation (tanh, sigmoid, hardtanh/ReLU6,
hardsigmoid) as the identity while the forward pass is unchanged: the logits — hence the loss values
and the reconstructions' classification — are exactly the target's; only the gradient differs.

BPDA is a gradient transform composed with a `base` white-box search, not a search of its own: GMI
(Zhang et al., CVPR 2020) under any update rule, KED-MI, PLG-MI, lomma-gmi / lomma-kedmi, adaptive-pstar,
adaptive-logit. Every setting other than `base` and `iterations` is the base attack's own and is forwarded
to it unchanged (validated by the base's config, so an unknown one is an error listing the base's valid
keys); `base_settings` holds them, and a flat setting is moved there:

    adaptive-bpda[base=lomma-gmi,update=adam,reg_weight=0.5,iterations=300]
    == build_attack("adaptive-bpda", {"base": "lomma-gmi", "iterations": 300,
                                      "base_settings": {"update": "adam", "reg_weight": 0.5}})

so that the search is the base attack's with the same settings, and against a target without saturating
activations it is the same computation (bit for bit).

Implementation: `prepare` deep-copies the white-box module and replaces each saturating activation
*module* in the copy by a wrapper whose autograd Function returns act(x) forward and passes the
gradient through unchanged backward; the original target is never modified. The copy is wrapped in a
`DerivedWhiteBoxOracle`, whose every forward is counted as queries of the target oracle, and the base
search runs against it. The base's target-dependent priors (PLG-MI's cGAN, KED-MI's GAN, LOMMA's
surrogates and p_reg, adaptive-pstar's p_t estimate) are built against the **real** target oracle: their
cache keys name no BPDA flag, so they must be the very artifact the plain base attack builds (PLG-MI's
cGAN training back-propagates through the target, which the copy would change). No base's prior holds the
oracle it was built with, so the search still sees only the straight-through gradients;
`extras["prior_built_against"]` records "target".

Limits: activations applied functionally inside a module's forward (torch.tanh(x)) are not found; calor's
LowRankHead uses an activation module, and `extras["bpda_swapped"]` records how many were replaced
(0 against an undefended target, where this attack is its base).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..checkpoint import no_checkpoints
from ..config import from_dict, to_dict
from ..errors import ConfigError, collect
# every white-box base's module: registered before a base is looked up, and in this module's code-version
# closure, so that a cached BPDA run goes stale when its base's code changes
from . import adaptive_logit, adaptive_pstar, gmi, kedmi, lomma, plgmi  # noqa: F401
from .base import ATTACKS, Attack, PriorStore, Reconstructions, build_attack
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


def white_box_bases() -> list[str]:
    """The attacks BPDA can run: every registered white-box attack but itself."""
    return [n for n in ATTACKS.names() if n != "adaptive-bpda" and ATTACKS.get(n).threat_model is ThreatModel.WHITE_BOX]


OWN_SETTINGS = ("base", "iterations", "base_settings")  # BPDA's own; every other setting is the base's


@dataclass(frozen=True)
class BPDAConfig:
    base: str = "gmi"  # the white-box attack whose search runs through the straight-through copy
    iterations: int | None = None  # the base's iterations; None: the run's budget
    # the base attack's own settings (update, lam, lr, views, ...), validated by its config; a flat setting
    # (adaptive-bpda[base=plgmi,views=1]) lands here
    base_settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = white_box_bases()
        if self.base not in names:
            collect([f"base={self.base!r}: choose a white-box attack: {', '.join(names)}"], "adaptive-bpda settings")
        p = []
        if self.iterations is not None and self.iterations < 1:
            p.append(f"iterations={self.iterations}: must be >= 1")
        clash = sorted(set(OWN_SETTINGS) & set(self.base_settings))
        if clash:
            p.append(f"base_settings {', '.join(clash)}: adaptive-bpda's own setting(s), set them beside base")
        collect(p, "adaptive-bpda settings")
        self.base_config()  # validates the base's settings: unknown keys are refused with the base's valid ones

    def base_config(self) -> Any:
        """The base attack's config from `base_settings` (its iterations left to `build_attack`)."""
        return from_dict(ATTACKS.get(self.base).Config, dict(self.base_settings), f"adaptive-bpda base {self.base!r} settings")


@dataclass
class BPDAPrior:
    """The base attack, the straight-through oracle it searches through, and the base attack's own prior
    (built against the real target)."""

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

    @classmethod
    def from_settings(cls, settings: dict[str, Any] | None = None) -> Attack:
        """Settings as a command line gives them: `base`, `iterations`, and the base's own settings, flat
        (forwarded into `base_settings`) or as a `base_settings` mapping."""
        own = dict(settings or {})
        forwarded = {k: own.pop(k) for k in list(own) if k not in OWN_SETTINGS}
        nested = own.get("base_settings", {})
        if forwarded:
            if not isinstance(nested, dict):
                raise ConfigError(f"attack 'adaptive-bpda'.base_settings: expected a mapping, got {nested!r}")
            twice = sorted(set(nested) & set(forwarded))
            if twice:
                raise ConfigError(f"attack 'adaptive-bpda': {', '.join(twice)} given both flat and in base_settings")
            own["base_settings"] = {**nested, **forwarded}
        cfg = from_dict(cls.Config, own, f"attack {cls.name!r}")
        # the base's parsed values, so that "lam=50" from a command line and {"lam": 50.0} are one config (one
        # cache key)
        parsed = to_dict(cfg.base_config())
        return cls(dataclasses.replace(cfg, base_settings={k: parsed[k] for k in cfg.base_settings}))

    def base_attack(self) -> Attack:
        """The base attack with its own settings and this run's iterations: what `base` alone would run."""
        cfg = self.config
        return build_attack(cfg.base, dict(cfg.base_settings), iterations=cfg.iterations)

    def prepare(self, oracle: WhiteBoxOracle, priors: PriorStore) -> BPDAPrior:
        clone, swapped = straight_through_copy(oracle.module)
        clone.eval()
        straight_through = DerivedWhiteBoxOracle(oracle, clone)  # its forwards are counted as target queries
        base = self.base_attack()
        # the base's prior against the real target: the same artifact (and cache entry) as the plain base's
        return BPDAPrior(base, straight_through, base.prepare(oracle, priors), swapped)

    def _run(self, oracle: WhiteBoxOracle, prior: BPDAPrior, classes: list[int], per_class: int, gen: torch.Generator) -> Reconstructions:
        base = prior.base
        base.checkpoint = self.checkpoint  # the base's search snapshots and resumes with this run's checkpoint
        try:
            rec = base.reconstruct(prior.oracle, prior.prior, classes, per_class, gen)
        finally:
            base.checkpoint = no_checkpoints()
        rec.extras |= {"bpda_swapped": prior.swapped, "base": base.name, "prior_built_against": "target"}
        return rec
