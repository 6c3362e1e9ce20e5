"""adaptive-logit — GMI with a logit-space identity loss that never looks at the softmax.

Adaptive attack against CALoR's **confidence-adaptation lever** (Yu et al., arXiv 2410.05814, 2024).
CA reshapes the *softmax* confidence of real data (towards p* < 1); a softmax cross-entropy attack is
steered by that reshaped confidence. This attack optimises the raw logits instead:

    margin (default):  max_{j != y} z_j - z_y      (PLG-MI's max-margin loss; also the C&W margin)
    logit:             -z_y                        (LOMMA's logit loss)

so the confidence level CA trained for is irrelevant to its objective (optionally capped C&W-style:
the margin stops counting once it exceeds `kappa`, so the prior term takes over from there); against the low-rank head it still
meets the tanh logit bound and saturation (see adaptive-bpda for that lever). Everything else is GMI
(Zhang et al., CVPR 2020): same prior term, SGD lr 0.02 m 0.9, lam = 100, latents clamped to [-1, 1];
this attack only swaps GMI's identity strategy (`LogitIdentity`).

Deviation: unlike cross-entropy, these losses never saturate, so with GMI's lam = 100 the identity term
dominates the prior term more than in GMI (LOMMA uses the logit loss with GMI's weights too).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import collect
from .base import ATTACKS
from .gmi import GMI, GMIConfig
from .identity import Identity
from .losses import margin, neg_true_logit
from .oracle import ThreatModel

# per-sample identity losses (N,); the attack loop reduces them batch-invariantly
KINDS = {"margin": lambda logits, y: -margin(logits, y), "logit": neg_true_logit}


@dataclass(frozen=True)
class LogitConfig(GMIConfig):
    kind: str = "margin"  # margin | logit
    kappa: float | None = None  # margin kind only: stop rewarding margins above kappa (None: uncapped)

    def __post_init__(self) -> None:
        super().__post_init__()
        p = [] if self.kind in KINDS else [f"kind={self.kind!r}: choose one of {', '.join(KINDS)}"]
        if self.kappa is not None and (self.kappa <= 0 or self.kind != "margin"):
            p.append(f"kappa={self.kappa}: must be > 0 and needs kind=margin")
        collect(p, "adaptive-logit settings")


class LogitIdentity(Identity):
    """A logit-space loss of the target's logits (margin or -z_y), optionally capped at kappa."""

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.config.kappa is not None:
            return -margin(logits, y).clamp(max=self.config.kappa)
        return KINDS[self.config.kind](logits, y)


@ATTACKS.register("adaptive-logit")
class AdaptiveLogit(GMI):
    name = "adaptive-logit"
    threat_model = ThreatModel.WHITE_BOX
    paper = "adaptive attack on CALoR (Yu et al., arXiv 2410.05814) built on GMI (Zhang et al., CVPR 2020)"
    Config = LogitConfig
    identity = LogitIdentity
