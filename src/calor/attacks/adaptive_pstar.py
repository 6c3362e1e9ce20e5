"""adaptive-pstar — GMI whose identity term aims at the defended model's *typical* confidence.

Adaptive attack against CALoR's **confidence-adaptation lever** (Yu et al., arXiv 2410.05814, 2024).
CA fine-tunes the target so that real training images sit at a moderate true-class confidence
p* = exp(-1/gamma) instead of 1; an attack that pushes p_y -> 1 (GMI's cross-entropy) is then drawn to
inputs that are *more* confident than real data, i.e. away from them. This attack pulls p_y to a target
confidence p_t instead:

    squared (default):  (p_y - p_t)^2                          minimised at p_y = p_t
    ca:                 p_y^g log p_y,  g = -1/ln p_t           CA's own objective shape, minimised at p_t

everything else is GMI (Zhang et al., CVPR 2020: WGAN-GP/DCGAN prior, SGD lr 0.02 m 0.9, lam = 100,
latents clamped to [-1, 1]); this class only replaces GMI's identity term.

p_t is either given (`p_target`, e.g. exp(-1/gamma) when the attacker knows CALoR's gamma) or estimated
white-box from the target's outputs on the attacker's own public images. **Estimator**: for every
class c take the `estimate_top_k` public images with the highest p_c (the most class-c-like natural
images the attacker has, as in PLG-MI's top-n selection), take the median of those confidences per
class, and use the median over classes. It costs len(public) queries, cached per target and recorded.

Deviations / caveats: the estimator sees public (other-class) images, not private ones, so it measures
the confidence the defended model gives natural images it is most sure about, which is an estimate of,
not the same as, the training-data confidence (on the mnist CALoR target, gamma = 2: estimate 0.59,
p* = 0.61, measured training confidence 0.61). `lam` defaults to 1,000, not GMI's 100: the gradient of
(p_y - p_t)^2 w.r.t. the true logit, 2 (p_y - p_t) p_y (1 - p_y), is about an order of magnitude smaller
than cross-entropy's, and with lam = 100 the reconstructions stopped short of p_t on that target (mean
p_y 0.49 for p_t 0.59 after 200 iterations; 0.575 with lam = 1,000; one seed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ConfigError, collect
from .base import ATTACKS, PriorStore, Reconstructions
from .gmi import GMI, GMIConfig
from .identity import Identity
from .oracle import BlackBoxOracle, ThreatModel, WhiteBoxOracle
from .priors import GanPrior
from .surrogates import soft_labels

FORMS = ("squared", "ca")


@dataclass(frozen=True)
class PStarConfig(GMIConfig):
    lam: float = 1000.0  # GMI's 100 leaves this bounded loss too weak to reach p_t (see the module docstring)
    p_target: float | None = None  # None: estimated from the target's outputs on public images
    form: str = "squared"  # squared | ca
    estimate_top_k: int | None = None  # None: max(1, len(public) // (20 * num_classes))

    def __post_init__(self) -> None:
        super().__post_init__()
        p = []
        if self.p_target is not None and not 0.0 < self.p_target < 1.0:
            p.append(f"p_target={self.p_target}: must be in (0, 1)")
        if self.form not in FORMS:
            p.append(f"form={self.form!r}: choose one of {', '.join(FORMS)}")
        if self.estimate_top_k is not None and self.estimate_top_k < 1:
            p.append(f"estimate_top_k={self.estimate_top_k}: must be >= 1")
        collect(p, "adaptive-pstar settings")


@dataclass
class PStarPrior(GanPrior):
    """The shared GAN prior plus the confidence the attack aims at."""

    p_target: float = 0.5
    estimate: dict[str, Any] = field(default_factory=dict)


def pstar_loss(logits: torch.Tensor, y: torch.Tensor, p_target: float, form: str = "squared") -> torch.Tensor:
    """Per-sample (N,) loss of the true-class probability p_y that is minimal at p_y = p_target."""
    logp = F.log_softmax(logits, dim=1).gather(1, y.view(-1, 1)).squeeze(1)
    if form == "squared":
        return (logp.exp() - p_target).pow(2)
    if form == "ca":
        gamma = -1.0 / math.log(p_target)  # CA's p* = exp(-1/gamma) = p_target
        return torch.exp(gamma * logp) * logp
    raise ConfigError(f"unknown pstar loss form {form!r}; choose one of {', '.join(FORMS)}")


def estimate_p_target(probs: torch.Tensor, top_k: int) -> tuple[float, torch.Tensor]:
    """The estimator: median over classes of the median of each class's `top_k` highest confidences.

    `probs` (N, K): the target's softmax on the attacker's public images. Returns (p_t, per-class medians)."""
    if top_k > len(probs):
        raise ConfigError(f"adaptive-pstar: estimate_top_k={top_k} exceeds the {len(probs)} public images")
    per_class = probs.topk(top_k, dim=0).values.quantile(0.5, dim=0)  # (K,)
    return per_class.quantile(0.5).item(), per_class


class PStarIdentity(Identity):
    """Pulls the target's true-class confidence to p_target (given, or estimated from public images)."""

    def prepare(self, oracle: BlackBoxOracle, priors: PriorStore, base: Any) -> PStarPrior:
        gan = base
        cfg = self.config
        if cfg.p_target is not None:
            estimate: dict[str, Any] = {"source": "config"}
            p_t = cfg.p_target
        else:
            public = priors.public_images()
            top_k = cfg.estimate_top_k or max(1, len(public) // (20 * oracle.num_classes))

            def build() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
                q0 = oracle.queries
                p, per_class = estimate_p_target(soft_labels(oracle, public), top_k)
                return {"per_class": per_class}, {"queries": oracle.queries - q0, "p_target": p}

            tensors, meta = priors.cached("pstar-estimate", {"estimator": "public-top-k-median", "top_k": top_k}, build,
                                          depends_on_target=True)
            p_t = float(meta["p_target"])
            estimate = {"source": "public-top-k-median", "top_k": top_k, "per_class": tensors["per_class"].tolist(),
                        "queries": int(meta["queries"])}
        return PStarPrior(gan.generator, gan.critic, gan.kind, gan.path, p_target=p_t, estimate=estimate)

    def term(self, oracle: WhiteBoxOracle, prior: PStarPrior, images: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return pstar_loss(oracle.logits(images), y, prior.p_target, self.config.form)

    def finish(self, oracle: WhiteBoxOracle, prior: PStarPrior, rec: Reconstructions) -> None:
        with torch.no_grad():  # where the reconstructions ended up (N queries): near p_target if the attack worked
            p = oracle.probs(rec.images).gather(1, rec.labels.view(-1, 1).to(oracle.device)).squeeze(1)
        rec.extras |= {"p_target": prior.p_target, "p_target_estimate": prior.estimate,
                       "final_true_confidence_mean": p.mean().item()}


@ATTACKS.register("adaptive-pstar")
class AdaptivePStar(GMI):
    name = "adaptive-pstar"
    threat_model = ThreatModel.WHITE_BOX
    paper = "adaptive attack on CALoR (Yu et al., arXiv 2410.05814) built on GMI (Zhang et al., CVPR 2020)"
    Config = PStarConfig
    identity = PStarIdentity
