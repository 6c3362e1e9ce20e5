"""Mechanism diagnostics for defenses that act on the attacker's gradient (CALoR's bounded bottleneck).

A latent-optimisation attack records its latents at evenly spaced steps (`Reconstructions.trajectory`).
This module replays that path against the attacked target and against the undefended target of the
same seed, and measures at every snapshot:

- `saturated_fraction`: the share of low-rank bottleneck units with |tanh| > SATURATION on the images of
  the path (None for targets without a low-rank head) — CALoR's stated mechanism is that saturated
  units starve the attacker of gradient;
- `grad_norm`: the median over reconstructions of ||d CE(T(G(z)), y) / dz||, the gradient GMI's identity
  term gives each latent, for the target and for the undefended reference on the same latents;
  `grad_ratio` is the median of the per-latent ratio target / reference.

The replay is a measurement, not an attack: it does not count as target queries.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .attacks.base import Reconstructions
from .models.heads import LowRankHead

SATURATION = 0.99


def _latent_gradients(model: nn.Module, decode: Any, z: torch.Tensor, y: torch.Tensor,
                      heads: list[LowRankHead]) -> tuple[torch.Tensor, float | None]:
    """Per-latent gradient norms of the cross-entropy identity loss, and the saturated share of `heads`' units."""
    outputs: list[torch.Tensor] = []
    hooks = [h.act.register_forward_hook(lambda _m, _i, out: outputs.append(out.detach())) for h in heads]
    try:
        z = z.detach().requires_grad_(True)
        device = next(model.parameters()).device
        logits = model(decode(z, y).to(device))
        loss = F.cross_entropy(logits, y.to(device), reduction="sum")  # sum: each latent gets its own gradient
        (grad,) = torch.autograd.grad(loss, z)
    finally:
        for hook in hooks:
            hook.remove()
    saturated = torch.cat([o.abs().flatten() for o in outputs]).gt(SATURATION).float().mean().item() if outputs else None
    return grad.flatten(1).norm(dim=1).cpu(), saturated


def gradient_path(target: nn.Module, rec: Reconstructions, reference: nn.Module | None = None) -> dict[str, Any] | None:
    """Diagnostics along `rec.trajectory` (None when the attack recorded no path)."""
    if rec.trajectory is None or rec.decode is None:
        return None
    heads = [m for m in target.modules() if isinstance(m, LowRankHead)]
    was_training = target.training
    target.eval()
    out: dict[str, Any] = {"progress": [], "saturated_fraction": [], "grad_norm": [], "grad_norm_reference": [], "grad_ratio": []}
    snapshots = len(rec.trajectory)
    labels = rec.labels
    for t, z in enumerate(rec.trajectory):
        device = next(target.parameters()).device
        g, sat = _latent_gradients(target, rec.decode, z.to(device), labels.to(device), heads)
        out["progress"].append(t / max(snapshots - 1, 1))
        out["saturated_fraction"].append(sat)
        out["grad_norm"].append(g.median().item())
        if reference is not None:
            ref_device = next(reference.parameters()).device
            g_ref, _ = _latent_gradients(reference.eval(), rec.decode, z.to(ref_device), labels.to(ref_device), [])
            out["grad_norm_reference"].append(g_ref.median().item())
            out["grad_ratio"].append((g / g_ref.clamp_min(1e-12)).median().item())
    target.train(was_training)
    if reference is None:
        del out["grad_norm_reference"], out["grad_ratio"]
    if not heads:
        out["saturated_fraction"] = None
    return out
