"""The identity strategy of a latent search: what pulls a generated image towards its class.

A search engine (GMI's latent search, KED-MI's distributional search) owns the optimisation: latents,
prior term, updates, checkpoints. It delegates to one `Identity` the three things the attacks built on it
change: the prior they search with (`prepare`, e.g. add surrogate models), the per-sample identity term
(`term`), and what a finished run records (`finish`). An attack built on an engine declares its identity
class instead of overriding the engine's methods:

    class AdaptiveLogit(GMI):        # GMI's search, a logit-margin identity term
        identity = LogitIdentity
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .base import PriorStore, Reconstructions
from .oracle import LabelOnlyOracle


class Identity:
    """The field's default: cross-entropy of the target's logits (GMI, KED-MI). `config` is the attack's."""

    def __init__(self, config: Any) -> None:
        self.config = config

    def prepare(self, oracle: LabelOnlyOracle, priors: PriorStore, base: Any) -> Any:
        """The prior the search runs with, given the engine's `base` prior. Default: `base` itself."""
        return base

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample (N,) loss of logits for class y."""
        return F.cross_entropy(logits, y, reduction="none")

    def term(self, oracle: Any, prior: Any, images: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample (N,) identity term of generated `images`. Default: `loss` of the target's logits."""
        return self.loss(oracle.logits(images), y)

    def finish(self, oracle: Any, prior: Any, rec: Reconstructions) -> None:
        """Add to a finished run's extras (e.g. how the reconstructions fare on the target)."""
