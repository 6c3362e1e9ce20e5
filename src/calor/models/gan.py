"""DCGAN-style generator and WGAN-GP critic, sized from the image resolution (16, 32, 64, ...)."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from ..errors import ConfigError


def stages(resolution: int) -> int:
    """Number of stride-2 stages between a 4x4 map and `resolution` (which must be 4 * 2^k, k >= 1)."""
    n = math.log2(resolution / 4)
    if resolution < 8 or not n.is_integer():
        raise ConfigError(f"GAN prior: resolution {resolution} must be 4 * 2^k (8, 16, 32, 64, ...)")
    return int(n)


def downsampling_layers(resolution: int, channels: int, width: int, *, norm: bool = True,
                        wrap: Callable[[nn.Module], nn.Module] = lambda m: m) -> tuple[list[nn.Module], int]:
    """The discriminators' shared trunk: stride-2 4x4 convolutions from `resolution` down to 4x4, doubling
    the channels from `width`, LeakyReLU(0.2), instance norm after all but the first (`norm`), each
    convolution passed through `wrap` (e.g. spectral norm). Returns the layers and their output channels."""
    n = stages(resolution)
    layers: list[nn.Module] = [wrap(nn.Conv2d(channels, width, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
    c = width
    for _ in range(n - 1):
        layers += [wrap(nn.Conv2d(c, 2 * c, 4, 2, 1))]
        layers += [nn.InstanceNorm2d(2 * c, affine=True)] if norm else []
        layers += [nn.LeakyReLU(0.2, inplace=True)]
        c *= 2
    return layers, c


class Generator(nn.Module):
    """z (N, z_dim) -> image (N, C, R, R) in [-1, 1]."""

    def __init__(self, z_dim: int = 100, resolution: int = 32, channels: int = 1, width: int = 32) -> None:
        super().__init__()
        n = stages(resolution)
        self.z_dim = z_dim
        c = width * 2 ** (n - 1) if n > 0 else width
        self.project = nn.Sequential(nn.Linear(z_dim, c * 16, bias=False), nn.BatchNorm1d(c * 16), nn.ReLU(inplace=True))
        self.c0 = c
        layers: list[nn.Module] = []
        for i in range(n - 1):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU(inplace=True)]
            c //= 2
        layers += [nn.ConvTranspose2d(c, channels, 4, 2, 1), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.project(z).view(len(z), self.c0, 4, 4))


class Critic(nn.Module):
    """WGAN-GP critic (no batch norm, which would break the per-sample gradient penalty)."""

    def __init__(self, resolution: int = 32, channels: int = 1, width: int = 32) -> None:
        super().__init__()
        layers, c = downsampling_layers(resolution, channels, width)
        layers += [nn.Conv2d(c, 1, 4, 1, 0)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).view(len(x))
