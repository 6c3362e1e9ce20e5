"""Probe image sets: inputs that are no image of any class (constants, noise, sparse dots, tiled textures),
at a scenario's shape in [-1, 1]. A judge that calls them a private class would count the same junk from
a collapsed attack as a successful reconstruction; `calor.evaluation.probe_judges` measures how often it
does, and benchmarks/judge_probe.py prints the table."""

from __future__ import annotations

import torch

from ..errors import MetricError

CONSTANTS = {"black": -1.0, "dark grey": -0.5, "grey": 0.0, "light grey": 0.5, "white": 1.0}
DOT_FRACTIONS = (0.02, 0.05, 0.10)  # share of pixels lit


def _tile(patch: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(N, C, ph, pw) patches repeated over an (h, w) image, cropped to size."""
    ph, pw = patch.shape[-2:]
    return patch.repeat(1, 1, -(-h // ph), -(-w // pw))[..., :h, :w].contiguous()


def probe_images(shape: tuple[int, int, int], n: int, seed: int = 0,
                 natural: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Named sets of `n` probe images each, of `shape` (C, H, W), in [-1, 1], drawn from `seed`:

    - constants: black, dark grey, grey, light grey, white;
    - noise: uniform in [-1, 1]; gaussian (std 0.5, clipped);
    - sparse dots: a black image with 2 %, 5 %, 10 % of its pixels (all channels) set to white;
    - tiled textures: a random 4x4 patch (uniform, and binary with 30 % lit) tiled over the image;
    - with `natural` images (N, C, H, W): their central patch of a quarter and of half the side, tiled —
      the stroke texture of a real image without its shape.
    """
    c, h, w = (int(s) for s in shape)
    if n < 1 or min(c, h, w) < 1:
        raise MetricError(f"probe images: need n >= 1 and a positive shape, got n={n}, shape={shape}")
    g = torch.Generator().manual_seed(seed)
    sets = {name: torch.full((n, c, h, w), value) for name, value in CONSTANTS.items()}
    sets["uniform noise"] = torch.rand(n, c, h, w, generator=g) * 2 - 1
    sets["gaussian noise"] = (torch.randn(n, c, h, w, generator=g) * 0.5).clamp(-1, 1)
    for p in DOT_FRACTIONS:
        lit = torch.rand(n, 1, h, w, generator=g) < p
        sets[f"dots {p:.0%}"] = torch.where(lit, 1.0, -1.0).expand(n, c, h, w).contiguous()
    side = max(1, min(4, h, w))
    sets["tiled random patch"] = _tile(torch.rand(n, c, side, side, generator=g) * 2 - 1, h, w)
    binary = torch.rand(n, 1, side, side, generator=g) < 0.3
    sets["tiled binary patch"] = _tile(torch.where(binary, 1.0, -1.0).expand(n, c, side, side), h, w)
    if natural is not None:
        if natural.ndim != 4 or tuple(natural.shape[1:]) != (c, h, w) or len(natural) == 0:
            raise MetricError(f"probe images: natural images must be (N, {c}, {h}, {w}), got {tuple(natural.shape)}")
        pick = natural[torch.randint(len(natural), (n,), generator=g)].float()
        for name, frac in (("tiled image patch 1/4", 4), ("tiled image patch 1/2", 2)):
            ph, pw = max(1, h // frac), max(1, w // frac)
            top, left = (h - ph) // 2, (w - pw) // 2
            sets[name] = _tile(pick[..., top:top + ph, left:left + pw], h, w)
    return sets
