"""GMI — Generative Model Inversion (Zhang et al., CVPR 2020).

White-box. A WGAN-GP trained on public data is the prior; for each attacked class, latents are
optimised to minimise  E(G(z)) + lambda * CE(T(G(z)), y)  with SGD (lr 0.02, momentum 0.9), latents
clamped to [-1, 1] after each step, where E = -D for the WGAN-GP critic (GMI) or -log sigmoid D for a
DCGAN discriminator; each restart yields one reconstruction.

Batch invariance: the authors average the loss over a batch of 60 latents, so each latent moves by
lr / 60 times its own gradient. calor optimises all classes and restarts in one batch of any size and
keeps exactly that per-latent step by summing per-sample losses and dividing by 60
(`base.REFERENCE_BATCH`); the latent of restart j of class c depends only on (seed, c, j).

`update` separates "small gradients" from "misleading gradients" when a defense is tested:
`sgd` (the paper), `normalized` (each latent's gradient rescaled to unit RMS per coordinate before the
momentum step, so the gradient's size no longer matters, only its direction), `adam`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..errors import collect
from ..progress import task
from .base import ATTACKS, Attack, PriorStore, Reconstructions, SearchProgress, batch_objective, initial_latents, snapshot_steps
from .identity import Identity
from .priors import GanPrior
from .oracle import LabelOnlyOracle, ThreatModel, WhiteBoxOracle


UPDATES = ("sgd", "normalized", "adam")


def make_latent_optimizer(z: torch.Tensor, update: str, lr: float, momentum: float) -> torch.optim.Optimizer:
    """The optimiser of a latent batch; `normalized` rescales gradients in `normalize_gradients` first."""
    if update == "adam":
        return torch.optim.Adam([z], lr=lr)
    return torch.optim.SGD([z], lr=lr, momentum=momentum)


def normalize_gradients(z: torch.Tensor) -> None:
    """Rescale each latent's gradient (row of z.grad) to unit RMS per coordinate: direction only."""
    g = z.grad
    rms = g.pow(2).mean(dim=1, keepdim=True).sqrt()
    g.div_(rms.clamp_min(1e-12))


@dataclass(frozen=True)
class GMIConfig:
    lam: float = 100.0  # weight of the identity (classification) loss
    lr: float = 0.02
    momentum: float = 0.9
    iterations: int | None = None  # None: the run's budget (scenario attack.iterations; paper: 1500)
    clamp: float = 1.0  # latents are kept in [-clamp, clamp]
    update: str = "sgd"  # sgd (paper) | normalized | adam — see the module docstring

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
        if self.update not in UPDATES:
            p.append(f"update={self.update!r}: choose one of {', '.join(UPDATES)}")
        collect(p, "gmi settings")


@ATTACKS.register("gmi")
class GMI(Attack):
    name = "gmi"
    threat_model = ThreatModel.WHITE_BOX
    paper = "Zhang et al., The Secret Revealer, CVPR 2020"
    Config = GMIConfig

    identity: ClassVar[type[Identity]] = Identity  # the identity strategy; attacks built on GMI's search swap it

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.objective = self.identity(self.config)

    def prepare(self, oracle: LabelOnlyOracle, priors: PriorStore) -> Any:
        return self.objective.prepare(oracle, priors, priors.gan())

    def _run(self, oracle: WhiteBoxOracle, prior: GanPrior, classes: list[int], per_class: int, gen: torch.Generator) -> Reconstructions:
        G, D = prior.generator, prior.critic
        cfg = self.config
        iterations = cfg.iterations
        device = next(G.parameters()).device
        for p in (*G.parameters(), *D.parameters()):
            p.requires_grad_(False)
        y = torch.tensor(classes, dtype=torch.long).repeat_interleave(per_class).to(device)
        z = initial_latents(gen.initial_seed(), classes, per_class, G.z_dim).clamp_(-cfg.clamp, cfg.clamp).to(device).requires_grad_(True)
        opt = make_latent_optimizer(z, cfg.update, cfg.lr, cfg.momentum)
        snaps = snapshot_steps(iterations)
        progress = SearchProgress(self, oracle, {"z": z, "opt": opt}, gen, iterations)
        trajectory = progress.trajectory
        with task(f"attack {self.name}", iterations) as advance:
            advance(progress.start)
            for it in progress.steps():
                if it in snaps:
                    trajectory.append(z.detach().cpu().clone())
                fake = G(z)
                prior_loss = prior.energy(fake).view(-1)
                iden_loss = self.objective.term(oracle, prior, fake, y)
                loss = batch_objective(prior_loss + cfg.lam * iden_loss)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.update == "normalized":
                    normalize_gradients(z)
                opt.step()
                with torch.no_grad():
                    z.clamp_(-cfg.clamp, cfg.clamp)
                if it % 50 == 0:
                    advance(min(50, iterations - it), info=f"iden {iden_loss.mean().item():.3f}")
        trajectory.append(z.detach().cpu().clone())
        with torch.no_grad():
            images = G(z).cpu()
        rec = Reconstructions(images=images, labels=y.cpu(), latents=z.detach().cpu(),
                              extras={"final_identity_loss": iden_loss.mean().item(), "final_prior_loss": prior_loss.mean().item(),
                                      "iterations": iterations, **progress.resumed()},
                              trajectory=torch.stack(trajectory), decode=lambda z_, y_: G(z_))
        self.objective.finish(oracle, prior, rec)
        return rec
