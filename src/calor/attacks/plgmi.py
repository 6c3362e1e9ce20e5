"""PLG-MI — Pseudo Label-Guided Model Inversion (Yuan et al., AAAI 2023, "Pseudo Label-Guided Model
Inversion Attack via Conditional Generative Adversarial Network").

White-box. Two stages, as in the paper and the authors' code:

1. **Prior (depends on the target).** The target labels the public images; for every class the `top_n`
   public images with the highest confidence *for that class* get that class as pseudo-label (an image
   may be chosen by several classes, as in the authors' top-n selection). A conditional GAN is trained
   on them: a generator with class-conditional batch norm and a projection discriminator with spectral
   norm (Miyato & Koyama 2018), hinge loss, Adam (lr 2e-4, betas (0, 0.9)), `n_dis` discriminator
   steps per generator step (paper: 5). The target is in the loop: the generator also minimises
   alpha * max-margin(T(aug(G(z, y))), y) with alpha = 0.2, so that its class-y samples are classified
   as y by the target. Cached per target with the target queries it used (top-n selection + one batch
   per generator step).
2. **Attack.** For each attacked class, latents z ~ N(0, I) of the conditional generator (class
   fixed) are optimised with Adam (lr 0.1) to minimise the max-margin loss
   max_{j != y} z_j - z_y of the target on `views` (= 2, as in the authors' code) independently
   augmented copies of G(z, y): random resized crop (area 0.8-1, ratio 1), brightness/contrast jitter
   0.2, horizontal flip (optional), rotation ±5°. No discriminator term at this stage (the conditional
   generator is the prior). One reconstruction per latent.

Deviations from the paper (CPU budget and data):
- Architecture: DCGAN-style conditional generator / projection discriminator sized from the scenario's
  `prior.width` (the paper uses SNGAN ResNet blocks at 64x64 for faces).
- Budget: `gan_steps` defaults to the scenario's `prior.steps` generator steps (paper: 30,000),
  `iterations` to the scenario's `attack.iterations` (paper: 600), the batch to `prior.batch_size`, and
  `n_dis` to the discriminator/generator ratio of the scenario's shared prior (`prior.n_critic` for
  wgan-gp, 1 for dcgan — the built-in mnist scenario: 1), so the cGAN costs about what the shared GAN
  prior costs; with the paper's n_dis = 5 it costs ~4x more on a CPU. Set `n_dis=5` for the paper's
  ratio.
- `top_n` defaults to len(public) // num_classes, i.e. about as many pseudo-labelled images as public
  ones, like the paper's 30 x 1,000 classes from ~30k FFHQ images; MNIST has 5 classes, not 1,000.
- Horizontal flip is OFF by default (`flip`): our built-in scenarios are digits, where a flip changes
  the class; the paper (faces) flips. Set `flip=true` for face data.
- Colour jitter is brightness/contrast only (the data are grayscale; the paper also jitters only these).
- The authors add uniform dequantisation noise to real images when training the cGAN; we do not.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..checkpoint import Checkpointer, no_checkpoints, resume_loop, snapshot_loop
from ..errors import ConfigError, collect
from ..models.cgan import ConditionalGenerator, ProjectionDiscriminator
from ..progress import task
from .augment import DiffAugment
from .base import ATTACKS, Attack, PriorStore, Reconstructions, SearchProgress, batch_objective, initial_latents, snapshot_steps
from .losses import margin, max_margin_loss
from .oracle import ThreatModel, WhiteBoxOracle
from .surrogates import budget_of, soft_labels


@dataclass(frozen=True)
class PLGMIConfig:
    top_n: int | None = None  # pseudo-labelled public images per class; None: len(public) // num_classes
    alpha: float = 0.2  # weight of the target's max-margin loss in the generator objective
    gan_steps: int | None = None  # generator steps; None: the scenario's prior.steps (paper: 30,000)
    n_dis: int | None = None  # D steps per G step; None: the scenario prior's ratio (paper: 5)
    gan_lr: float = 2e-4
    gan_beta1: float = 0.0
    gan_beta2: float = 0.9
    gan_batch_size: int | None = None  # None: the scenario's prior.batch_size
    lr: float = 0.1  # Adam on the latents
    iterations: int | None = None  # None: the scenario's attack.iterations (paper: 600)
    views: int = 2  # augmented copies per attack step (authors' code: 2)
    flip: bool = False  # horizontal flip in the augmentation; off for digits (paper, faces: on)
    crop_min: float = 0.8  # random resized crop keeps [crop_min, 1] of the area
    brightness: float = 0.2
    contrast: float = 0.2
    rotation: float = 5.0  # degrees

    def __post_init__(self) -> None:
        p = []
        for name in ("top_n", "gan_steps", "gan_batch_size", "iterations", "n_dis"):
            v = getattr(self, name)
            if v is not None and v < 1:
                p.append(f"{name}={v}: must be >= 1")
        if self.gan_batch_size is not None and self.gan_batch_size < 2:
            p.append(f"gan_batch_size={self.gan_batch_size}: must be >= 2 (batch norm)")
        if self.alpha < 0:
            p.append(f"alpha={self.alpha}: must be >= 0")
        if self.views < 1:
            p.append(f"views={self.views}: must be >= 1")
        if self.gan_lr <= 0 or self.lr <= 0:
            p.append("gan_lr and lr must be > 0")
        if not (0 <= self.gan_beta1 < 1 and 0 <= self.gan_beta2 < 1):
            p.append("gan_beta1 and gan_beta2 must be in [0, 1)")
        if not 0 < self.crop_min <= 1:
            p.append(f"crop_min={self.crop_min}: must be in (0, 1]")
        if self.brightness < 0 or self.contrast < 0 or self.rotation < 0:
            p.append("brightness, contrast and rotation must be >= 0")
        collect(p, "plgmi settings")

    def augmentation(self, resolution: int, jitter_p: float) -> DiffAugment:
        return DiffAugment(resolution, crop_scale=(self.crop_min, 1.0), brightness=self.brightness, contrast=self.contrast,
                           jitter_p=jitter_p, flip=self.flip, rotation=self.rotation)


@dataclass
class ConditionalPrior:
    """PLG-MI's trained conditional GAN and what its pseudo-labelling found."""

    generator: ConditionalGenerator
    discriminator: ProjectionDiscriminator
    meta: dict[str, Any] = field(default_factory=dict)


def top_n_pseudo_labels(probs: torch.Tensor, top_n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PLG-MI's top-n selection: for every class c, the `top_n` images with the highest p_c.

    `probs` (N, K) are the target's softmax outputs. Returns (indices into the N images, pseudo-labels,
    confidences), each of length K * top_n, grouped by class."""
    if top_n > len(probs):
        raise ConfigError(f"plgmi: top_n={top_n} exceeds the {len(probs)} public images; lower top_n")
    conf, idx = probs.topk(top_n, dim=0)  # (top_n, K): column c ranks images by p_c
    labels = torch.arange(probs.shape[1]).repeat_interleave(top_n)
    return idx.t().reshape(-1), labels, conf.t().reshape(-1)


def train_plg_cgan(oracle: WhiteBoxOracle, images: torch.Tensor, labels: torch.Tensor, cfg: PLGMIConfig, *, z_dim: int,
                   width: int, steps: int, n_dis: int, batch_size: int, device: torch.device,
                   gen: torch.Generator, checkpoint: Checkpointer | None = None,
                   ) -> tuple[ConditionalGenerator, ProjectionDiscriminator, list[dict[str, Any]], int]:
    """Train PLG-MI's conditional GAN on pseudo-labelled `images` with the target in the loop.

    Per step: one generator update on hinge-adversarial + alpha * max-margin(T(aug(G(z, y))), y) with
    y uniform over classes, then `n_dis` hinge discriminator updates on (real, pseudo-label) and fresh
    (fake, y) pairs. Returns both networks in eval mode, a log row every 100 steps and the target queries the
    training spent (including those of an interrupted run it resumed from a `checkpoint` snapshot)."""
    channels, resolution = images.shape[1], images.shape[-1]
    k = oracle.num_classes
    G = ConditionalGenerator(k, z_dim, resolution, channels, width).to(device)
    D = ProjectionDiscriminator(k, resolution, channels, width).to(device)
    betas = (cfg.gan_beta1, cfg.gan_beta2)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.gan_lr, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.gan_lr, betas=betas)
    augment = cfg.augmentation(resolution, jitter_p=0.5)  # the authors' stage-1 jitter probability
    n, bs = len(images), min(batch_size, len(images))
    log: list[dict[str, Any]] = []
    t0 = time.perf_counter()

    def sample_fake() -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.randn(bs, z_dim, generator=gen).to(device)
        y = torch.randint(0, k, (bs,), generator=gen).to(device)
        return G(z, y), y

    G.train()
    D.train()
    ckpt = checkpoint or no_checkpoints()
    parts = {"G": G, "D": D, "opt_g": opt_g, "opt_d": opt_d}
    start, extras = resume_loop(ckpt, parts, gen)
    log = extras.get("log", log)
    q0 = oracle.queries - extras.get("queries", 0)
    with task("PLG-MI cGAN", steps) as advance:
        advance(start)
        for step in range(start, steps):
            if step > start:
                snapshot_loop(ckpt, step, steps, parts, gen, {"log": log, "queries": oracle.queries - q0})
            fake, y_fake = sample_fake()
            logits = oracle.logits(augment(fake, gen))
            inv_loss = max_margin_loss(logits, y_fake)
            g_adv = -D(fake, y_fake).mean()
            opt_g.zero_grad(set_to_none=True)
            (g_adv + cfg.alpha * inv_loss).backward()
            opt_g.step()
            target_acc = (logits.argmax(1) == y_fake).float().mean().item()
            for _ in range(n_dis):
                idx = torch.randint(0, n, (bs,), generator=gen)
                real, y_real = images[idx].to(device), labels[idx].to(device)
                with torch.no_grad():
                    fake, y_fake = sample_fake()
                d_loss = F.relu(1 - D(real, y_real)).mean() + F.relu(1 + D(fake, y_fake)).mean()
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
            if step % 100 == 0 or step == steps - 1:
                log.append({"step": step, "d_loss": d_loss.item(), "g_adv": g_adv.item(), "inv_loss": inv_loss.item(),
                            "target_acc_on_fakes": target_acc, "seconds": time.perf_counter() - t0})
            advance(info=f"inv {inv_loss.item():.3f}")
    G.eval()
    D.eval()
    return G, D, log, oracle.queries - q0


@ATTACKS.register("plgmi")
class PLGMI(Attack):
    name = "plgmi"
    threat_model = ThreatModel.WHITE_BOX
    paper = "Yuan et al., Pseudo Label-Guided Model Inversion Attack via Conditional GAN, AAAI 2023"
    Config = PLGMIConfig

    def prepare(self, oracle: WhiteBoxOracle, priors: PriorStore) -> ConditionalPrior:
        cfg = self.config
        spec = budget_of(priors).prior
        public = priors.public_images()
        k = oracle.num_classes
        top_n = cfg.top_n if cfg.top_n is not None else max(1, len(public) // k)
        steps = cfg.gan_steps if cfg.gan_steps is not None else spec.steps
        batch = cfg.gan_batch_size if cfg.gan_batch_size is not None else spec.batch_size
        n_dis = cfg.n_dis if cfg.n_dis is not None else (spec.n_critic if spec.kind == "wgan-gp" else 1)
        key = {"top_n": top_n, "alpha": cfg.alpha, "steps": steps, "n_dis": n_dis, "lr": cfg.gan_lr,
               "betas": [cfg.gan_beta1, cfg.gan_beta2], "batch_size": batch, "z_dim": spec.z_dim, "width": spec.width,
               "augment": {"flip": cfg.flip, "crop_min": cfg.crop_min, "brightness": cfg.brightness,
                           "contrast": cfg.contrast, "rotation": cfg.rotation}}
        device = priors.device

        def build(checkpoint: Checkpointer | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
            q0 = oracle.queries
            gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))  # global RNG seeded by the store
            idx, labels, conf = top_n_pseudo_labels(soft_labels(oracle, public), top_n)
            label_queries = oracle.queries - q0
            G, D, history, gan_queries = train_plg_cgan(oracle, public[idx], labels, cfg, z_dim=spec.z_dim, width=spec.width,
                                                        steps=steps, n_dis=n_dis, batch_size=batch, device=device, gen=gen,
                                                        checkpoint=checkpoint)
            tensors = {**{f"generator.{n}": v for n, v in G.state_dict().items()},
                       **{f"discriminator.{n}": v for n, v in D.state_dict().items()},
                       "pseudo_indices": idx, "pseudo_labels": labels, "pseudo_confidence": conf}
            per_class = conf.view(k, top_n)
            meta = {"queries": label_queries + gan_queries, "history": history, "top_n": top_n,
                    "n_dis": n_dis, "distinct_public_images": int(idx.unique().numel()),
                    "pseudo_confidence_mean_by_class": per_class.mean(1).tolist(),
                    "pseudo_confidence_min_by_class": per_class.min(1).values.tolist()}
            return tensors, meta

        tensors, meta = priors.cached("plgmi-cgan", key, build, depends_on_target=True)
        c, r = oracle.image_shape[0], oracle.image_shape[-1]
        G = ConditionalGenerator(k, spec.z_dim, r, c, spec.width)
        D = ProjectionDiscriminator(k, r, c, spec.width)
        G.load_state_dict({n[len("generator."):]: v for n, v in tensors.items() if n.startswith("generator.")})
        D.load_state_dict({n[len("discriminator."):]: v for n, v in tensors.items() if n.startswith("discriminator.")})
        summary = {m: meta[m] for m in ("top_n", "distinct_public_images", "pseudo_confidence_mean_by_class", "queries")}
        return ConditionalPrior(G.to(device).eval(), D.to(device).eval(), summary)

    def _run(self, oracle: WhiteBoxOracle, prior: ConditionalPrior, classes: list[int], per_class: int,
             gen: torch.Generator) -> Reconstructions:
        cfg = self.config
        G = prior.generator
        iterations = cfg.iterations
        device = next(G.parameters()).device
        for p in G.parameters():
            p.requires_grad_(False)
        augment = cfg.augmentation(oracle.image_shape[-1], jitter_p=1.0)  # the authors' attack-stage jitter
        y = torch.tensor(classes, dtype=torch.long).repeat_interleave(per_class).to(device)
        z = initial_latents(gen.initial_seed(), classes, per_class, G.z_dim).to(device).requires_grad_(True)
        opt = torch.optim.Adam([z], lr=cfg.lr)
        snaps = snapshot_steps(iterations)
        progress = SearchProgress(self, oracle, {"z": z, "opt": opt}, gen, iterations)
        trajectory = progress.trajectory
        with task(f"attack {self.name}", iterations) as advance:
            advance(progress.start)
            for it in progress.steps():
                if it in snaps:
                    trajectory.append(z.detach().cpu().clone())
                fake = G(z, y)
                per_sample = sum(-margin(oracle.logits(augment(fake, gen)), y) for _ in range(cfg.views))
                loss = batch_objective(per_sample)  # batch-invariant; Adam is scale-free, so steps match the paper's
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                progress.extra.setdefault("first", per_sample.mean().item())  # the starting loss, kept across a resume
                if it % 50 == 0:
                    advance(min(50, iterations - it), info=f"margin loss {per_sample.mean().item():.3f}")
        trajectory.append(z.detach().cpu().clone())
        with torch.no_grad():
            images = G(z, y)
            final_margin = margin(oracle.logits(images), y)  # un-augmented, for the record (N queries)
        return Reconstructions(images=images.cpu(), labels=y.cpu(), latents=z.detach().cpu(),
                               trajectory=torch.stack(trajectory), decode=lambda z_, y_: G(z_, y_.to(z_.device)),
                               extras={"iterations": iterations, "initial_identity_loss": progress.extra["first"],
                                       "final_identity_loss": per_sample.mean().item(), "final_margin_mean": final_margin.mean().item(),
                                       "final_top1_rate": (final_margin > 0).float().mean().item(), "cgan": prior.meta,
                                       **progress.resumed()})
