"""Tensor transforms (no torchvision): scaling to [-1, 1], resizing, and the training augmentation."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def to_model_range(images: np.ndarray, resolution: int) -> torch.Tensor:
    """uint8 (N, H, W) or (N, H, W, C) -> float (N, C, R, R) in [-1, 1] (C = 1 for the first).

    28x28 digits become 32x32 by zero padding (exact, as in the GMI/MNIST protocol); any other
    size is padded to a square and then resized with antialiasing. The resolution is recorded in the
    scenario, so this is never a silent resize.
    """
    x = torch.from_numpy(np.asarray(images).astype(np.float32) / 127.5 - 1.0)
    x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2).contiguous()
    h, w = x.shape[-2:]
    side = max(h, w, resolution)
    pad_h, pad_w = side - h, side - w
    x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=-1.0)
    if side != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp_(-1.0, 1.0)


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Translate each image by up to `max_shift` pixels (background -1)."""
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).to(x.device)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).to(x.device)
    idx = torch.arange(n, device=x.device).view(n, 1, 1)
    # Advanced indexing on dims 0, 2, 3 puts the channel dim last: (n, h, w, c).
    return padded[idx, :, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2).contiguous()


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2 (faces; never digits)."""
    flip = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
