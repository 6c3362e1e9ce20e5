"""Mirror-b — the black-box attack of MIRROR (An et al., "MIRROR: Model Inversion for Deep Learning Network
with High Fidelity", NDSS 2022): genetic search in a GAN's latent space driven by the target's confidences.

Black-box: the target is reached only through `BlackBoxOracle.probs` (softmax confidences, no gradient);
everything here runs without autograd. One independent genetic search per reconstruction:

- **Initial population** (Mirror: the top-k of a large presampled pool by the target's confidence for
  the class): `init_pool` latents are drawn, scored, and the best `population` are kept.
- **Fitness**: log-confidence of the attacked class, log softmax(T(G(z)))_y (Mirror's code).
- **Each generation**: the elite (the fittest latent) survives unchanged; the other population - 1 members
  are children of two parents drawn with probability softmax(fitness), i.e. proportional to confidence;
  uniform crossover takes each coordinate from parent 1 with probability c1 / (c1 + c2) (c = confidence),
  else from parent 2; mutation adds, with probability `mutation_prob` per coordinate, uniform noise in
  [-mutation_scale, +mutation_scale] (Mirror: 0.1 and 0.1 std); children are clipped to [-clamp, clamp]
  (Mirror clips to mean +- 1 std of its latent distribution, i.e. [-1, 1] for z ~ N(0, I)).
- The reconstruction is the final elite. Optional early stop per run when the elite's confidence reaches
  `min_score` (Mirror's code: 0.95).

Deviations (stated plainly):
- Mirror searches StyleGAN's W space (with LeakyReLU-inverted "P space" mutation noise); here the shared
  GAN prior's z space, whose coordinates are N(0, 1), so the noise scale is in units of 1.
- Crossover weight: Mirror's code uses f1 / (f1 + f2) of the *log*-fitness values, which for two
  negative log-probabilities favours the worse parent; we use the confidences c = exp(f) instead, the
  evident intent ("inherit more from the fitter parent").
- Budget: Mirror uses population 1000 and 100 generations; defaults here are population 100 and
  generations = max(1, iterations // 10) (the scenario's attack.iterations 1000 -> Mirror's 100).
- Early stop is off by default (`min_score=None`), so defended and undefended targets get the same query
  budget (a defense that caps confidence below 0.95 would otherwise be charged more queries).
- One independent search per reconstruction (Mirror keeps one elite per class); all searches are batched.

Queries: runs x (init_pool + generations x (population - 1)) when no run stops early; reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..errors import collect
from ..progress import task
from .base import ATTACKS, Attack, PriorStore, Reconstructions
from .oracle import BlackBoxOracle, LabelOnlyOracle, ThreatModel
from .priors import GanPrior


@dataclass(frozen=True)
class MirrorBConfig:
    population: int = 100  # Mirror: 1000
    init_pool: int = 500  # latents scored to pick the initial population (Mirror: a large presampled pool)
    generations: int | None = None  # None: max(1, iterations // 10)
    iterations: int | None = None  # None: the scenario's attack.iterations (only sets the default generations)
    mutation_prob: float = 0.1  # per-coordinate mutation probability (Mirror: 0.1)
    mutation_scale: float = 0.1  # half-width of the uniform mutation noise (Mirror: 0.1 std)
    clamp: float = 1.0  # latents kept in [-clamp, clamp]
    min_score: float | None = None  # stop a run once its elite's confidence reaches this (Mirror: 0.95); None: never
    chunk: int = 4096  # images per target call (memory only)

    def __post_init__(self) -> None:
        p = []
        if self.population < 2:
            p.append(f"population={self.population}: must be >= 2 (elite + at least one child)")
        if self.init_pool < self.population:
            p.append(f"init_pool={self.init_pool}: must be >= population ({self.population})")
        if self.generations is not None and self.generations < 1:
            p.append(f"generations={self.generations}: must be >= 1")
        if self.iterations is not None and self.iterations < 1:
            p.append(f"iterations={self.iterations}: must be >= 1")
        if not 0 <= self.mutation_prob <= 1:
            p.append(f"mutation_prob={self.mutation_prob}: must be in [0, 1]")
        if self.mutation_scale < 0:
            p.append(f"mutation_scale={self.mutation_scale}: must be >= 0")
        if self.clamp <= 0:
            p.append(f"clamp={self.clamp}: must be > 0")
        if self.min_score is not None and not 0 < self.min_score <= 1:
            p.append(f"min_score={self.min_score}: must be in (0, 1]")
        if self.chunk < 1:
            p.append(f"chunk={self.chunk}: must be >= 1")
        collect(p, "mirror-b settings")


def _rows(t: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    """t (runs, k, d) indexed per run by i (runs, m) -> (runs, m, d)."""
    return t.gather(1, i.unsqueeze(2).expand(-1, -1, t.shape[2]))


@ATTACKS.register("mirror-b")
class MirrorB(Attack):
    name = "mirror-b"
    threat_model = ThreatModel.BLACK_BOX
    paper = "An et al., MIRROR: Model Inversion for Deep Learning Network with High Fidelity, NDSS 2022 (black-box genetic search)"
    Config = MirrorBConfig

    def prepare(self, oracle: LabelOnlyOracle, priors: PriorStore) -> GanPrior:
        return priors.gan()

    def generations(self) -> int:
        cfg = self.config
        if cfg.generations is not None:
            return cfg.generations
        return max(1, cfg.iterations // 10)

    @torch.no_grad()
    def fitness(self, oracle: BlackBoxOracle, G: torch.nn.Module, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """log p_y(G(z)) for latents z (runs, k, z_dim) and one class per run y (runs,): shape (runs, k)."""
        runs, k, zd = z.shape
        device = next(G.parameters()).device
        flat = z.reshape(-1, zd)
        probs = torch.cat([oracle.probs(G(part.to(device))).cpu() for part in flat.split(self.config.chunk)])
        p_y = probs.view(runs, k, -1).gather(2, y.view(-1, 1, 1).expand(runs, k, 1)).squeeze(2)
        return p_y.clamp_min(1e-30).log()  # clamp: a confidence that underflows to 0 must not give -inf

    @torch.no_grad()
    def _run(self, oracle: BlackBoxOracle, prior: GanPrior, classes: list[int], per_class: int, gen: torch.Generator) -> Reconstructions:
        cfg = self.config
        G = prior.generator
        zd, pop = G.z_dim, cfg.population
        y = torch.tensor(classes, dtype=torch.long).repeat_interleave(per_class)
        runs = len(y)
        generations = self.generations()

        # initial population: the fittest `population` of a random pool, per run
        pool = torch.randn(runs, cfg.init_pool, zd, generator=gen).clamp_(-cfg.clamp, cfg.clamp)
        pool_fit = self.fitness(oracle, G, pool, y)
        order = pool_fit.argsort(dim=1, descending=True)[:, :pop]
        popu = _rows(pool, order)
        fit = pool_fit.gather(1, order)
        initial_conf = fit[:, 0].exp().clone()

        active = torch.ones(runs, dtype=torch.bool)
        done_generations = torch.zeros(runs, dtype=torch.long)
        with task(f"attack {self.name}", generations) as advance:
            for g in range(generations):
                if cfg.min_score is not None:
                    active &= fit.max(1).values.exp() < cfg.min_score
                idx = torch.nonzero(active).view(-1)
                if len(idx) == 0:
                    break
                pa, fa = popu[idx], fit[idx]
                best = fa.argmax(1)
                elite = pa[torch.arange(len(idx)), best]
                elite_fit = fa[torch.arange(len(idx)), best]
                # parents: probability softmax(log-confidence) = confidence-proportional selection
                weights = fa.softmax(1)
                parents = torch.multinomial(weights, 2 * (pop - 1), replacement=True, generator=gen)
                p1, p2 = parents[:, : pop - 1], parents[:, pop - 1:]
                # crossover: each coordinate from parent 1 with probability c1 / (c1 + c2)
                c1, c2 = fa.gather(1, p1).exp(), fa.gather(1, p2).exp()
                share = (c1 / (c1 + c2).clamp_min(1e-30)).unsqueeze(2)
                mask = torch.rand(len(idx), pop - 1, zd, generator=gen) < share
                children = torch.where(mask, _rows(pa, p1), _rows(pa, p2))
                # mutation: uniform noise on a random subset of coordinates
                mutate = torch.rand(children.shape, generator=gen) < cfg.mutation_prob
                noise = (torch.rand(children.shape, generator=gen) * 2 - 1) * cfg.mutation_scale
                children = (children + mutate * noise).clamp_(-cfg.clamp, cfg.clamp)
                child_fit = self.fitness(oracle, G, children, y[idx])
                popu[idx] = torch.cat([elite.unsqueeze(1), children], dim=1)
                fit[idx] = torch.cat([elite_fit.unsqueeze(1), child_fit], dim=1)
                done_generations[idx] += 1
                advance(info=f"mean elite conf {fit.max(1).values.exp().mean().item():.3f}")

        best = fit.argmax(1)
        latents = popu[torch.arange(runs), best]
        final_conf = fit[torch.arange(runs), best].exp()
        device = next(G.parameters()).device
        images = torch.cat([G(part.to(device)).cpu() for part in latents.split(cfg.chunk)])
        extras: dict[str, Any] = {
            "generations": generations, "population": pop, "init_pool": cfg.init_pool,
            "generations_run_mean": done_generations.float().mean().item(),
            "initial_confidence_mean": initial_conf.mean().item(), "final_confidence_mean": final_conf.mean().item(),
            "final_confidence": final_conf.tolist(),
        }
        return Reconstructions(images=images, labels=y, latents=latents, extras=extras)
