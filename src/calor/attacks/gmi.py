"""GMI — Generative Model Inversion (Zhang et al., CVPR 2020).

White-box. A WGAN-GP trained on public data is the prior; for each attacked class, latents are
optimised to minimise  E(G(z)) + lambda * CE(T(G(z)), y)  with SGD (lr 0.02, momentum 0.9), latents
clamped to [-1, 1] after each step, where E = -D for the WGAN-GP critic (GMI) or -log sigmoid D for a
DCGAN discriminator; each restart yields one reconstruction. As in the authors' code,
the loss is the batch mean. Deviation: all classes and restarts are optimised in one batch
(the per-sample objective is the same; SGD's per-sample step scales with 1/batch size, as in GMI).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import collect
from ..progress import task
from .base import ATTACKS, Attack, PriorStore, Reconstructions
from .priors import GanPrior
from .oracle import LabelOnlyOracle, ThreatModel, WhiteBoxOracle


@dataclass(frozen=True)
class GMIConfig:
    lam: float = 100.0  # weight of the identity (classification) loss
    lr: float = 0.02
    momentum: float = 0.9
    iterations: int | None = None  # None: the scenario's attack.iterations (paper: 1500)
    clamp: float = 1.0  # latents are kept in [-clamp, clamp]

    def __post_init__(self) -> None:
        p = []
        if self.lam < 0:
            p.append(f"lam={self.lam}: must be >= 0")
        if self.lr <= 0:
            p.append(f"lr={self.lr}: must be > 0")
        if self.iterations is not None and self.iterations < 1:
            p.append(f"iterations={self.iterations}: must be >= 1")
        if self.clamp <= 0:
            p.append(f"clamp={self.clamp}: must be > 0")
        collect(p, "gmi settings")


@ATTACKS.register("gmi")
class GMI(Attack):
    name = "gmi"
    threat_model = ThreatModel.WHITE_BOX
    paper = "Zhang et al., The Secret Revealer, CVPR 2020"
    Config = GMIConfig

    def prepare(self, oracle: LabelOnlyOracle, priors: PriorStore) -> GanPrior:
        return priors.gan()

    def identity_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The term that pulls G(z) towards class y (cross-entropy in GMI)."""
        return F.cross_entropy(logits, y)

    def identity_term(self, oracle: WhiteBoxOracle, prior: Any, images: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The identity loss of generated `images`: `identity_loss` of the target's logits. Attacks that need
        the images themselves (surrogate models, feature terms: LOMMA) override this instead."""
        return self.identity_loss(oracle.logits(images), y)

    def _run(self, oracle: WhiteBoxOracle, prior: GanPrior, classes: list[int], per_class: int, gen: torch.Generator) -> Reconstructions:
        G, D = prior.generator, prior.critic
        cfg = self.config
        iterations = cfg.iterations if cfg.iterations is not None else 1500
        device = next(G.parameters()).device
        for p in (*G.parameters(), *D.parameters()):
            p.requires_grad_(False)
        y = torch.tensor(classes, dtype=torch.long).repeat_interleave(per_class).to(device)
        z = torch.randn(len(y), G.z_dim, generator=gen).clamp_(-cfg.clamp, cfg.clamp).to(device).requires_grad_(True)
        opt = torch.optim.SGD([z], lr=cfg.lr, momentum=cfg.momentum)
        with task(f"attack {self.name}", iterations) as advance:
            for it in range(iterations):
                fake = G(z)
                prior_loss = prior.energy(fake).mean()
                iden_loss = self.identity_term(oracle, prior, fake, y)
                loss = prior_loss + cfg.lam * iden_loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    z.clamp_(-cfg.clamp, cfg.clamp)
                if it % 50 == 0:
                    advance(min(50, iterations - it), info=f"iden {iden_loss.item():.3f}")
        with torch.no_grad():
            images = G(z).cpu()
        return Reconstructions(images=images, labels=y.cpu(), latents=z.detach().cpu(),
                               extras={"final_identity_loss": iden_loss.item(), "final_prior_loss": prior_loss.item(), "iterations": iterations})
