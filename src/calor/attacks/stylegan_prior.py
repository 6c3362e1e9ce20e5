"""Training a StyleGAN2 prior on the public split (`prior.kind: stylegan2`): the generator PPA and IF-GMI search.

The StyleGAN2 objective (Karras et al. 2020), at CPU budgets:

- non-saturating logistic loss for both networks: D minimises softplus(D(G(z))) + softplus(-D(x)),
  G minimises softplus(-D(G(z)));
- R1 on real images, lazily every `R1_INTERVAL` D steps and scaled by the interval:
  (gamma / 2) E |grad_x D(x)|^2, gamma = `prior.gp_weight`;
- optional style mixing (`prior.style_mixing`: the probability that the ws of a second z take over from a
  random layer on) and path-length regularisation (`prior.pl_weight`, every `PL_INTERVAL` G steps, with
  the running mean path length kept in the checkpoint);
- Adam with betas (0, 0.99) at `prior.lr` (D's adjusted for the lazy R1 as in the paper: lr and betas to
  the power interval / (interval + 1)); the mapping network tracks w_avg; the prior kept is an exponential
  moving average of G (`EMA_HALF_LIFE` steps), as StyleGAN2's G_ema.

Checkpointed and resumed like the other priors (the RNG stream, both networks, the EMA, the optimisers and
the log are in every snapshot), so a run killed at any point ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
import torch.nn.functional as F

from ..checkpoint import Checkpointer, no_checkpoints, resume_loop, snapshot_loop
from ..models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator, prior_config
from ..progress import task
from ..scenario import PriorSpec

R1_INTERVAL = 16
PL_INTERVAL = 4
EMA_HALF_LIFE = 100  # steps: G_ema = beta G_ema + (1 - beta) G with beta = 0.5 ** (1 / EMA_HALF_LIFE)
PL_DECAY = 0.01


def build_networks(spec: PriorSpec, resolution: int, channels: int) -> tuple[StyleGAN2Generator, StyleGAN2Discriminator]:
    cfg = prior_config(resolution, channels, spec.width, spec.z_dim, spec.mapping_layers)
    return StyleGAN2Generator(cfg), StyleGAN2Discriminator(cfg)


def _mixed_ws(G: StyleGAN2Generator, z: torch.Tensor, z2: torch.Tensor, mix: torch.Tensor, cut: torch.Tensor) -> torch.Tensor:
    ws = G.mapping(z, update_w_avg=True)
    if not bool(mix.any()):  # no image mixes: the second mapping would be thrown away
        return ws
    ws2 = G.mapping(z2)
    layer = torch.arange(G.num_ws).view(1, -1, 1)
    take = (mix.view(-1, 1, 1) & (layer >= cut.view(-1, 1, 1)))
    return torch.where(take, ws2, ws)


def train_stylegan2(x_public: torch.Tensor, spec: PriorSpec, *, device: torch.device, seed: int,
                    checkpoint: Checkpointer | None = None) -> tuple[StyleGAN2Generator, StyleGAN2Discriminator, list[dict[str, Any]]]:
    """Train on public images (N, C, R, R) in [-1, 1]; returns (G_ema, D) in eval mode and a log row every
    100 steps. Every random draw comes from one generator seeded by `seed`, in a fixed order."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    channels, resolution = x_public.shape[1], x_public.shape[-1]
    G, D = build_networks(spec, resolution, channels)
    G, D = G.to(device).train(), D.to(device).train()
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    ratio = R1_INTERVAL / (R1_INTERVAL + 1)
    opt_g = torch.optim.Adam(G.parameters(), lr=spec.lr, betas=(0.0, 0.99))
    opt_d = torch.optim.Adam(D.parameters(), lr=spec.lr * ratio, betas=(0.0, 0.99 ** ratio))
    beta = 0.5 ** (1 / EMA_HALF_LIFE)
    n, bs = len(x_public), min(spec.batch_size, len(x_public))
    ckpt = checkpoint or no_checkpoints()
    parts = {"G": G, "G_ema": G_ema, "D": D, "opt_g": opt_g, "opt_d": opt_d}
    start, extras = resume_loop(ckpt, parts, gen)
    log: list[dict[str, Any]] = extras.get("log", [])
    pl_mean = torch.as_tensor(extras.get("pl_mean", 0.0), dtype=torch.float32)
    t0 = time.perf_counter()

    def latents() -> torch.Tensor:
        z, z2 = torch.randn(bs, spec.z_dim, generator=gen), torch.randn(bs, spec.z_dim, generator=gen)
        mix = torch.rand(bs, generator=gen) < spec.style_mixing
        cut = torch.randint(1, G.num_ws, (bs,), generator=gen)
        return _mixed_ws(G, z.to(device), z2.to(device), mix.to(device), cut.to(device))

    with task("StyleGAN2 prior", spec.steps) as advance:
        advance(start)
        for it in range(start, spec.steps):
            if it > start:
                snapshot_loop(ckpt, it, spec.steps, parts, gen, {"log": log, "pl_mean": float(pl_mean)})
            # D: logistic loss, lazy R1 on reals
            real = x_public[torch.randint(0, n, (bs,), generator=gen)].to(device)
            with torch.no_grad():
                fake = G.synthesize(latents())
            d_loss = F.softplus(D(fake)).mean() + F.softplus(-D(real)).mean()
            r1 = torch.zeros(())
            if it % R1_INTERVAL == 0 and spec.gp_weight > 0:
                real_r1 = real.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(D(real_r1).sum(), real_r1, create_graph=True)
                r1 = grad.square().sum(dim=[1, 2, 3]).mean()
                d_loss = d_loss + (spec.gp_weight / 2) * r1 * R1_INTERVAL
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            # G: non-saturating loss, optional path-length regularisation
            ws = latents()
            img = G.synthesize(ws)
            g_loss = F.softplus(-D(img)).mean()
            if spec.pl_weight > 0 and it % PL_INTERVAL == 0:
                ws_pl = latents()
                img_pl = G.synthesize(ws_pl)
                noise = torch.randn(img_pl.shape, generator=gen).to(device) / resolution
                (g_ws,) = torch.autograd.grad((img_pl * noise).sum(), ws_pl, create_graph=True)
                lengths = g_ws.square().sum(2).mean(1).sqrt()
                pl_mean = pl_mean.lerp(lengths.mean().detach().cpu(), PL_DECAY)
                g_loss = g_loss + spec.pl_weight * PL_INTERVAL * (lengths - pl_mean.to(device)).square().mean()
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            with torch.no_grad():  # G_ema follows G (w_avg included: a buffer)
                for pe, p in zip(G_ema.parameters(), G.parameters()):
                    pe.lerp_(p, 1 - beta)
                for be, b in zip(G_ema.buffers(), G.buffers()):
                    be.copy_(b)
            if it % 100 == 0 or it == spec.steps - 1:
                log.append({"step": it, "d_loss": d_loss.item(), "g_loss": g_loss.item(), "r1": float(r1.detach()),
                            "pl_mean": float(pl_mean), "seconds": time.perf_counter() - t0})
            advance(info=f"D {d_loss.item():.3f} G {g_loss.item():.3f}" if it % 20 == 0 else None)
    D.eval()
    return G_ema.eval(), D, log
