"""GAN priors trained on the attacker's public split: WGAN-GP (as in GMI) or DCGAN (cheaper on a CPU)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

import torch.nn.functional as F

from ..parallel import DataParallel, current, global_batch_norm, is_writer, sum_gradients
from ..errors import ConfigError
from ..checkpoint import Checkpointer, no_checkpoints, resume_loop, snapshot_loop
from ..models.gan import Critic, Generator
from ..progress import task
from ..scenario import PriorSpec


def gradient_penalty(critic: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor, gen: torch.Generator | None,
                     eps: torch.Tensor | None = None) -> torch.Tensor:
    """WGAN-GP penalty: (||grad_x D(x_hat)||_2 - 1)^2 on random interpolates of real and fake (with the
    interpolation weights `eps` when given, else drawn from `gen`)."""
    if eps is None:
        eps = torch.rand(len(real), 1, 1, 1, generator=gen)
    eps = eps.to(real.device)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1).pow(2).mean()


@dataclass
class GanPrior:
    """A trained generator and its discriminator/critic; `energy` is the prior loss attacks minimise."""

    generator: Generator
    critic: Critic
    kind: str  # wgan-gp | dcgan
    path: str = ""

    @property
    def name(self) -> str:
        """The prior's artifact name (the last part of its path; "" when it was never saved): what
        attack-specific caches record as the GAN they were built on."""
        return self.path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]

    def energy(self, images: torch.Tensor) -> torch.Tensor:
        """Per-image "unrealness": -D(x) for a WGAN critic, -log sigmoid(D(x)) for a DCGAN or StyleGAN2
        discriminator (both trained with the logistic loss)."""
        out = self.critic(images)
        return -out if self.kind == "wgan-gp" else F.softplus(-out)


def train_gan(x_public: torch.Tensor, spec: PriorSpec, *, device: torch.device, seed: int,
              checkpoint: Checkpointer | None = None) -> tuple[GanPrior, list[dict[str, Any]]]:
    """Train generator and discriminator on public images (spec.kind selects the objective).

    wgan-gp: n_critic critic steps with gradient penalty per generator step (GMI's prior).
    dcgan: one non-saturating discriminator step per generator step (about 6x cheaper on a CPU).
    (stylegan2 priors: `calor.prior_store.train_prior` dispatches to `calor.attacks.stylegan_prior`.)
    Returns the prior in eval mode and a log row every 100 steps. With a `checkpoint`, a snapshot is
    written between steps when due, and a snapshot left by an interrupted run is resumed.

    Under torchrun every process draws the global batch and trains on its share (see `calor.parallel`);
    the logged figures are those of rank 0's share."""
    if spec.kind == "stylegan2":  # not imported here: a DCGAN's code versions must not depend on the StyleGAN modules
        raise ConfigError("prior.kind=stylegan2: train it with calor.prior_store.train_prior (or calor.attacks.stylegan_prior)")
    dp = current()
    G, D, log = _train_gan(x_public, spec, device=device, seed=seed, checkpoint=checkpoint, dp=dp)
    G.eval()
    D.eval()
    return GanPrior(G, D, spec.kind), log


def _train_gan(x_public: torch.Tensor, spec: PriorSpec, *, device: torch.device, seed: int, checkpoint: Checkpointer | None,
               dp: DataParallel | None) -> tuple[Generator, Critic, list[dict[str, Any]]]:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    channels, resolution = x_public.shape[1], x_public.shape[-1]
    G = Generator(spec.z_dim, resolution, channels, spec.width).to(device)
    D = Critic(resolution, channels, spec.width).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=spec.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=spec.lr, betas=(0.5, 0.999))
    n, bs = len(x_public), min(spec.batch_size, len(x_public))
    if device.type == "cuda":  # the public split fits in GPU memory: copy it once
        x_public = x_public.pin_memory().to(device, non_blocking=True)
    part = dp.share(bs) if dp is not None else slice(0, bs)
    weight = (part.stop - part.start) / bs  # this process's share of each global batch's mean loss
    if dp is not None and part.stop - part.start < 2:
        raise ConfigError(f"prior.batch_size={spec.batch_size}: at least 2 images per process are needed ({dp.world} processes)")

    def step(opt: torch.optim.Optimizer, loss: torch.Tensor, params: Any) -> None:
        opt.zero_grad(set_to_none=True)
        (loss * weight).backward()
        if dp is not None:
            sum_gradients(params, dp)
        opt.step()

    log: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    wgan = spec.kind == "wgan-gp"
    ckpt = checkpoint or no_checkpoints()
    parts = {"G": G, "D": D, "opt_g": opt_g, "opt_d": opt_d}
    start, extras = resume_loop(ckpt, parts, gen)
    log = extras.get("log", log)
    with task(f"GAN prior ({spec.kind})", spec.steps) as advance, global_batch_norm(G, D):
        advance(start)
        for it in range(start, spec.steps):
            if it > start and is_writer():
                snapshot_loop(ckpt, it, spec.steps, parts, gen, {"log": log})
            for _ in range(spec.n_critic if wgan else 1):
                # the global batch's random draws, in the single-process order; then this process's share
                rows = torch.randint(0, n, (bs,), generator=gen)
                real = x_public[rows.to(x_public.device)][part].to(device)
                z = torch.randn(bs, spec.z_dim, generator=gen)[part].to(device)
                with torch.no_grad():
                    fake = G(z)
                d_real, d_fake = D(real), D(fake)
                wdist = d_real.mean() - d_fake.mean()  # logged for both kinds: how well D separates
                if wgan:
                    eps = torch.rand(bs, 1, 1, 1, generator=gen)[part]
                    d_loss = -wdist + spec.gp_weight * gradient_penalty(D, real, fake, None, eps)
                else:
                    d_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
                step(opt_d, d_loss, D.parameters())
            z = torch.randn(bs, spec.z_dim, generator=gen)[part].to(device)
            d_gen = D(G(z))
            g_loss = -d_gen.mean() if wgan else F.softplus(-d_gen).mean()
            step(opt_g, g_loss, G.parameters())
            if it % 100 == 0 or it == spec.steps - 1:
                log.append({"step": it, "wasserstein": wdist.item(), "g_loss": g_loss.item(), "seconds": time.perf_counter() - t0})
            advance(info=f"D gap {wdist.item():.3f}" if it % 20 == 0 else None)  # .item() waits for the device
    return G, D, log
