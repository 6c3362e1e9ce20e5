"""GAN priors trained on the attacker's public split: WGAN-GP (as in GMI) or DCGAN (cheaper on a CPU)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

import torch.nn.functional as F

from ..checkpoint import Checkpointer, no_checkpoints, resume_loop, snapshot_loop
from ..models.gan import Critic, Generator
from ..progress import task
from ..scenario import PriorSpec


def gradient_penalty(critic: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """WGAN-GP penalty: (||grad_x D(x_hat)||_2 - 1)^2 on random interpolates of real and fake."""
    eps = torch.rand(len(real), 1, 1, 1, generator=gen).to(real.device)
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
        """Per-image "unrealness": -D(x) for a WGAN critic, -log sigmoid(D(x)) for a DCGAN discriminator."""
        out = self.critic(images)
        return -out if self.kind == "wgan-gp" else F.softplus(-out)


def train_gan(x_public: torch.Tensor, spec: PriorSpec, *, device: torch.device, seed: int,
              checkpoint: Checkpointer | None = None) -> tuple[GanPrior, list[dict[str, Any]]]:
    """Train generator and discriminator on public images (spec.kind selects the objective).

    wgan-gp: n_critic critic steps with gradient penalty per generator step (GMI's prior).
    dcgan: one non-saturating discriminator step per generator step (about 6x cheaper on a CPU).
    Returns the prior in eval mode and a log row every 100 steps. With a `checkpoint`, a snapshot is
    written between steps when due, and a snapshot left by an interrupted run is resumed."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    channels, resolution = x_public.shape[1], x_public.shape[-1]
    G = Generator(spec.z_dim, resolution, channels, spec.width).to(device)
    D = Critic(resolution, channels, spec.width).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=spec.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=spec.lr, betas=(0.5, 0.999))
    n, bs = len(x_public), min(spec.batch_size, len(x_public))
    log: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    wgan = spec.kind == "wgan-gp"
    ckpt = checkpoint or no_checkpoints()
    parts = {"G": G, "D": D, "opt_g": opt_g, "opt_d": opt_d}
    start, extras = resume_loop(ckpt, parts, gen)
    log = extras.get("log", log)
    with task(f"GAN prior ({spec.kind})", spec.steps) as advance:
        advance(start)
        for step in range(start, spec.steps):
            if step > start:
                snapshot_loop(ckpt, step, spec.steps, parts, gen, {"log": log})
            for _ in range(spec.n_critic if wgan else 1):
                real = x_public[torch.randint(0, n, (bs,), generator=gen)].to(device)
                z = torch.randn(bs, spec.z_dim, generator=gen).to(device)
                with torch.no_grad():
                    fake = G(z)
                d_real, d_fake = D(real), D(fake)
                wdist = d_real.mean() - d_fake.mean()  # logged for both kinds: how well D separates
                if wgan:
                    d_loss = -wdist + spec.gp_weight * gradient_penalty(D, real, fake, gen)
                else:
                    d_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
            z = torch.randn(bs, spec.z_dim, generator=gen).to(device)
            d_gen = D(G(z))
            g_loss = -d_gen.mean() if wgan else F.softplus(-d_gen).mean()
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            if step % 100 == 0 or step == spec.steps - 1:
                log.append({"step": step, "wasserstein": wdist.item(), "g_loss": g_loss.item(), "seconds": time.perf_counter() - t0})
            advance(info=f"D gap {wdist.item():.3f}" if step % 20 == 0 else None)  # .item() waits for the device
    G.eval()
    D.eval()
    return GanPrior(G, D, spec.kind), log
