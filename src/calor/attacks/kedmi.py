"""KED-MI — Knowledge-Enriched Distributional Model Inversion (Chen et al., ICCV 2021).

White-box. Two stages, as in the paper and the authors' code:

1. **Inversion-specific GAN** trained on the public images with the target's knowledge. The
   discriminator has K class logits plus an implicit "fake" logit fixed at 0 (the improved-GAN
   parameterisation of a K+1-way classifier: p(real | x) = sigmoid(logsumexp_k D_k(x))). Its loss is
   soft cross-entropy between its K-way softmax and the target's soft labels on public images, plus
   0.5 * [-log p(real | public) - log p(fake | G(z))]. The generator matches the mean discriminator
   features (L1 between batch means on generated and public images, "feature matching") plus
   entropy_weight * (sum over the batch of the entropy of D's class prediction on G(z)) — so
   generated images look confidently like one of the target's classes. A minibatch-discrimination
   layer sits between D's features and its logits, as in the authors' discriminator.
2. **Distributional recovery**: per attacked class a Gaussian N(mu, diag(exp(log_var))) over
   latents (mu = 0, log_var = 1 at the start, as the authors' code), optimised by
   reparameterisation with Adam (lr 0.02) on  E_z[ -log p(real | G(z)) + lam * CE(T(G(z)), y) ],
   lam = 100. Reconstructions are `per_class` samples of each learned distribution.

The prior depends on the target (its soft labels): it is cached per target, and its meta records the
target queries it used (one per public image: the soft labels are computed once, the target being fixed).

Deviations (CPU budget and this codebase):
- GAN budget from the scenario's `prior` spec (steps = generator steps, width, z_dim, batch size, lr);
  the authors train 120 epochs on 30k CelebA faces with 5 D steps per G step. Here D steps per G step
  default to the scenario's n_critic for a wgan-gp scenario and 1 for a dcgan one (the cheaper
  choice that scenario made for its shared prior).
- Architectures: the shared DCGAN-style generator of calor.models and a discriminator with the same
  conv stack as calor's critic (4x4 stride-2 convs, instance norm), not the authors' 5x5 ones; the
  minibatch-discrimination layer is smaller (32 x 16 kernels instead of 64 x 50) and initialised with
  std 1/sqrt(in_features) instead of 1 (with std 1 its outputs are exp(-huge) = 0 at this width).
- The target's soft labels are computed once for all public images instead of per batch (the same
  values: the target is fixed and no augmentation is applied), and the labelled and unlabelled
  batches are both drawn from the public split, as in the authors' code.
- One latent sample per class per iteration by default, as in the authors' code (`samples_per_step`
  raises it). The authors' KED-MI does not clamp latents; `clamp` optionally does (LOMMA's KED-MI
  code clamps to [-1, 1]).
- All attacked classes are optimised in one batch (the discriminator's minibatch layer therefore
  sees samples of several classes at once, as in the authors' 60-identity batches).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import Checkpointer, no_checkpoints, resume_loop, snapshot_loop
from ..errors import collect
from ..models.gan import Generator, downsampling_layers
from ..progress import task
from .base import ATTACKS, Attack, PriorStore, Reconstructions, SearchProgress, batch_objective, initial_latents, snapshot_steps
from .identity import Identity
from .oracle import LabelOnlyOracle, ThreatModel, WhiteBoxOracle
from .surrogates import budget_of, soft_cross_entropy, soft_labels


class MinibatchDiscrimination(nn.Module):
    """Salimans et al. (2016): for each sample, out_features closeness scores to the other samples of the
    batch, sum_j exp(-||M_i,b - M_j,b||_1), appended to its features (lets D see a collapsed batch)."""

    def __init__(self, in_features: int, out_features: int, kernel_dims: int) -> None:
        super().__init__()
        self.out_features, self.kernel_dims = out_features, kernel_dims
        self.T = nn.Parameter(torch.randn(in_features, out_features * kernel_dims) / math.sqrt(in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = (x @ self.T).view(len(x), self.out_features, self.kernel_dims)
        dist = (m.unsqueeze(0) - m.unsqueeze(1)).abs().sum(3)  # (N, N, B)
        closeness = torch.exp(-dist).sum(0) - 1.0  # minus the sample's own term exp(0)
        return torch.cat([x, closeness], 1)


class KPlusOneDiscriminator(nn.Module):
    """x -> (features, K class logits); the (K+1)-th "fake" logit is the constant 0."""

    def __init__(self, num_classes: int, resolution: int = 32, channels: int = 1, width: int = 32,
                 mbd_features: int = 32, mbd_kernel: int = 16) -> None:
        super().__init__()
        layers, c = downsampling_layers(resolution, channels, width)
        self.body = nn.Sequential(*layers)
        self.feature_dim = c * 16  # 4x4 spatial after the stride-2 stages
        self.mbd = MinibatchDiscrimination(self.feature_dim, mbd_features, mbd_kernel) if mbd_features > 0 else None
        self.classify = nn.Linear(self.feature_dim + max(mbd_features, 0), num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.body(x).flatten(1)
        return feat, self.classify(self.mbd(feat) if self.mbd is not None else feat)


def realness_energy(class_logits: torch.Tensor) -> torch.Tensor:
    """-log p(real | x) = softplus(-logsumexp_k D_k(x)), per sample (the fake logit being 0)."""
    return F.softplus(-torch.logsumexp(class_logits, dim=1))


@dataclass
class KedmiPrior:
    """The trained inversion-specific GAN; `energy` is the prior loss the attack minimises."""

    generator: Generator
    discriminator: KPlusOneDiscriminator
    target_queries: int = 0

    def energy(self, images: torch.Tensor) -> torch.Tensor:
        return realness_energy(self.discriminator(images)[1])


@dataclass(frozen=True)
class KedmiGanSettings:
    """Everything that determines the inversion-specific GAN (its cache key)."""

    num_classes: int
    steps: int
    d_steps: int
    batch_size: int
    lr: float
    width: int
    z_dim: int
    entropy_weight: float
    mbd_features: int
    mbd_kernel: int


def train_kedmi_gan(x_public: torch.Tensor, probs: torch.Tensor, s: KedmiGanSettings, *, device: torch.device,
                    gen: torch.Generator, checkpoint: Checkpointer | None = None) -> tuple[Generator, KPlusOneDiscriminator, list[dict[str, Any]]]:
    """Train KED-MI's GAN on public images `x_public` with the target's soft labels `probs` (N, K); with a
    `checkpoint`, snapshots between steps and resumes an interrupted run."""
    channels, resolution = x_public.shape[1], x_public.shape[-1]
    G = Generator(s.z_dim, resolution, channels, s.width).to(device)
    D = KPlusOneDiscriminator(s.num_classes, resolution, channels, s.width, s.mbd_features, s.mbd_kernel).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=s.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=s.lr, betas=(0.5, 0.999))
    n, bs = len(x_public), min(s.batch_size, len(x_public))

    def batch() -> torch.Tensor:
        return torch.randint(0, n, (bs,), generator=gen)

    log: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    ckpt = checkpoint or no_checkpoints()
    parts = {"G": G, "D": D, "opt_g": opt_g, "opt_d": opt_d}
    start, extras = resume_loop(ckpt, parts, gen)
    log = extras.get("log", log)
    with task("KED-MI GAN (target soft labels)", s.steps) as advance:
        advance(start)
        for step in range(start, s.steps):
            if step > start:
                snapshot_loop(ckpt, step, s.steps, parts, gen, {"log": log})
            for _ in range(s.d_steps):
                lab, unl = batch(), batch()
                with torch.no_grad():
                    fake = G(torch.randn(bs, s.z_dim, generator=gen).to(device))
                _, out_lab = D(x_public[lab].to(device))
                _, out_unl = D(x_public[unl].to(device))
                _, out_fake = D(fake)
                loss_lab = soft_cross_entropy(out_lab, probs[lab].to(device))
                # -log p(real | public) - log p(fake | G(z)), with p(real) = sigmoid(logsumexp D)
                loss_unl = 0.5 * (realness_energy(out_unl).mean() + F.softplus(torch.logsumexp(out_fake, 1)).mean())
                d_loss = loss_lab + loss_unl
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
            feat_fake, out_fake = D(G(torch.randn(bs, s.z_dim, generator=gen).to(device)))
            with torch.no_grad():
                feat_real, _ = D(x_public[batch()].to(device))
            entropy = -(F.softmax(out_fake, 1) * F.log_softmax(out_fake, 1)).sum()  # summed over the batch, as the authors
            g_loss = (feat_fake.mean(0) - feat_real.mean(0)).abs().mean() + s.entropy_weight * entropy
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            if step % 100 == 0 or step == s.steps - 1:
                agree = (out_lab.argmax(1) == probs[lab].to(device).argmax(1)).float().mean().item()
                log.append({"step": step, "loss_label": loss_lab.item(), "loss_unlabel": loss_unl.item(), "g_loss": g_loss.item(),
                            "d_agreement_with_target": agree, "seconds": time.perf_counter() - t0})
            advance(info=f"g {g_loss.item():.3f}")
    G.eval()
    D.eval()
    return G, D, log


def _strip(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


@dataclass(frozen=True)
class KEDMIConfig:
    lam: float = 100.0  # weight of the identity loss
    lr: float = 0.02  # Adam on (mu, log_var)
    iterations: int | None = None  # None: the scenario's attack.iterations (paper: 1500-3000)
    samples_per_step: int = 1  # latent samples per class per iteration (authors: 1)
    init_log_var: float = 1.0  # authors' code starts at log_var = 1 (std e^0.5)
    clamp: float | None = None  # clamp sampled latents to [-clamp, clamp]; None: no clamp (KED-MI)
    gan_steps: int | None = None  # generator steps; None: the scenario's prior.steps
    d_steps: int | None = None  # D steps per G step; None: prior.n_critic for wgan-gp scenarios, else 1
    entropy_weight: float = 1e-4  # generator's entropy term (authors: 1e-4, summed over the batch)
    mbd_features: int = 32  # minibatch-discrimination outputs (0: none)
    mbd_kernel: int = 16

    def __post_init__(self) -> None:
        collect(self.problems(), "kedmi settings")

    def problems(self) -> list[str]:
        p = []
        if self.lam < 0:
            p.append(f"lam={self.lam}: must be >= 0")
        if self.lr <= 0:
            p.append(f"lr={self.lr}: must be > 0")
        if self.iterations is not None and self.iterations < 1:
            p.append(f"iterations={self.iterations}: must be >= 1")
        if self.samples_per_step < 1:
            p.append(f"samples_per_step={self.samples_per_step}: must be >= 1")
        if self.clamp is not None and self.clamp <= 0:
            p.append(f"clamp={self.clamp}: must be > 0 (or none)")
        if self.gan_steps is not None and self.gan_steps < 1:
            p.append(f"gan_steps={self.gan_steps}: must be >= 1")
        if self.d_steps is not None and self.d_steps < 1:
            p.append(f"d_steps={self.d_steps}: must be >= 1")
        if self.entropy_weight < 0:
            p.append(f"entropy_weight={self.entropy_weight}: must be >= 0")
        if self.mbd_features < 0 or self.mbd_kernel < 1:
            p.append("mbd_features must be >= 0 and mbd_kernel >= 1")
        return p


@ATTACKS.register("kedmi")
class KEDMI(Attack):
    name = "kedmi"
    threat_model = ThreatModel.WHITE_BOX
    paper = "Chen et al., Knowledge-Enriched Distributional Model Inversion Attacks, ICCV 2021"
    Config = KEDMIConfig
    identity: ClassVar[type[Identity]] = Identity  # the identity strategy (lomma-kedmi swaps it)

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.objective = self.identity(self.config)

    def gan_settings(self, oracle: LabelOnlyOracle, priors: PriorStore) -> KedmiGanSettings:
        """The GAN's budget: this attack's settings, else the scenario's prior spec."""
        cfg, spec = self.config, budget_of(priors).prior
        d_steps = cfg.d_steps if cfg.d_steps is not None else (spec.n_critic if spec.kind == "wgan-gp" else 1)
        return KedmiGanSettings(num_classes=oracle.num_classes, steps=cfg.gan_steps or spec.steps, d_steps=d_steps,
                                batch_size=spec.batch_size, lr=spec.lr, width=spec.width, z_dim=spec.z_dim,
                                entropy_weight=cfg.entropy_weight, mbd_features=cfg.mbd_features, mbd_kernel=cfg.mbd_kernel)

    def prepare(self, oracle: WhiteBoxOracle, priors: PriorStore) -> Any:
        settings = self.gan_settings(oracle, priors)
        x_public = priors.public_images()
        device = priors.device

        def build(checkpoint: Checkpointer | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
            before = oracle.queries
            probs = soft_labels(oracle, x_public)
            # sampling generator derived from the global RNG, which the PriorStore seeds before build()
            gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,)).item()))
            G, D, history = train_kedmi_gan(x_public, probs, settings, device=device, gen=gen, checkpoint=checkpoint)
            tensors = {**{f"generator.{k}": v for k, v in G.state_dict().items()},
                       **{f"discriminator.{k}": v for k, v in D.state_dict().items()}}
            return tensors, {"queries": oracle.queries - before, "history": history,
                             "target_label_histogram": torch.bincount(probs.argmax(1), minlength=settings.num_classes).tolist()}

        tensors, meta = priors.cached("kedmi-gan", dataclasses.asdict(settings), build, depends_on_target=True)
        channels, resolution = x_public.shape[1], x_public.shape[-1]
        G = Generator(settings.z_dim, resolution, channels, settings.width)
        D = KPlusOneDiscriminator(settings.num_classes, resolution, channels, settings.width, settings.mbd_features, settings.mbd_kernel)
        G.load_state_dict(_strip(tensors, "generator."))
        D.load_state_dict(_strip(tensors, "discriminator."))
        return self.objective.prepare(oracle, priors, KedmiPrior(G.to(device).eval(), D.to(device).eval(), int(meta.get("queries", 0))))

    def _sample(self, mu: torch.Tensor, log_var: torch.Tensor, m: int, gen: torch.Generator) -> torch.Tensor:
        """m reparameterised samples of each class's Gaussian, class-major: (len(mu) * m, z_dim)."""
        return self._reparameterise(mu, log_var, m, torch.randn(len(mu) * m, mu.shape[1], generator=gen).to(mu.device))

    def _reparameterise(self, mu: torch.Tensor, log_var: torch.Tensor, m: int, eps: torch.Tensor) -> torch.Tensor:
        """mu + std * eps for m draws per class (eps: (len(mu) * m, z_dim), class-major), clamped if configured."""
        z = mu.repeat_interleave(m, 0) + torch.exp(0.5 * log_var).repeat_interleave(m, 0) * eps
        clamp = self.config.clamp
        return z.clamp(-clamp, clamp) if clamp is not None else z

    def _run(self, oracle: WhiteBoxOracle, prior: KedmiPrior, classes: list[int], per_class: int, gen: torch.Generator) -> Reconstructions:
        cfg = self.config
        G = prior.generator
        iterations = cfg.iterations
        device = next(G.parameters()).device
        for module in (G, prior.discriminator):
            for p in module.parameters():
                p.requires_grad_(False)
        y = torch.tensor(classes, dtype=torch.long, device=device)
        mu = torch.zeros(len(classes), G.z_dim, device=device, requires_grad=True)
        log_var = torch.full((len(classes), G.z_dim), cfg.init_log_var, device=device, requires_grad=True)
        opt = torch.optim.Adam([mu, log_var], lr=cfg.lr)
        y_step = y.repeat_interleave(cfg.samples_per_step)
        # the reconstructions' noise, fixed per (seed, class, restart): the trajectory replays the same draws
        eps = initial_latents(gen.initial_seed(), classes, per_class, G.z_dim).to(device)
        snaps = snapshot_steps(iterations)
        progress = SearchProgress(self, oracle, {"mu": mu, "log_var": log_var, "opt": opt}, gen, iterations)
        trajectory = progress.trajectory
        with task(f"attack {self.name}", iterations) as advance:
            advance(progress.start)
            for it in progress.steps():
                if it in snaps:
                    trajectory.append(self._reparameterise(mu, log_var, per_class, eps).detach().cpu())
                fake = G(self._sample(mu, log_var, cfg.samples_per_step, gen))
                prior_loss = prior.energy(fake).view(-1)
                iden_loss = self.objective.term(oracle, prior, fake, y_step)
                # sum over the batch / REFERENCE_BATCH; Adam is scale-free, so this only keeps losses comparable
                loss = batch_objective(prior_loss + cfg.lam * iden_loss)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if it % 50 == 0:
                    advance(min(50, iterations - it), info=f"iden {iden_loss.mean().item():.3f}")
        with torch.no_grad():
            z = self._reparameterise(mu, log_var, per_class, eps)
            trajectory.append(z.cpu())
            images = G(z).cpu()
        std = torch.exp(0.5 * log_var.detach())
        rec = Reconstructions(images=images, labels=y.repeat_interleave(per_class).cpu(), latents=z.cpu(),
                              trajectory=torch.stack(trajectory), decode=lambda z_, y_: G(z_),
                              extras={"final_identity_loss": iden_loss.mean().item(), "final_prior_loss": prior_loss.mean().item(),
                                      "iterations": iterations, "mean_latent_std": std.mean().item(),
                                      "latent_std_by_class": std.mean(1).tolist(), **progress.resumed()})
        self.objective.finish(oracle, prior, rec)
        return rec
