"""Class-conditional GAN: a generator with class-conditional batch norm and a projection discriminator
(Miyato & Koyama, ICLR 2018) with spectral norm — the kind of cGAN PLG-MI trains — sized like the
unconditional pair in `gan.py` (DCGAN-style, from the image resolution)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from .gan import downsampling_layers, stages


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm2d without its own affine part; scale and shift are looked up per class."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.gamma = nn.Embedding(num_classes, channels)
        self.beta = nn.Embedding(num_classes, channels)
        nn.init.ones_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.norm(x) * self.gamma(y)[:, :, None, None] + self.beta(y)[:, :, None, None]


class ConditionalGenerator(nn.Module):
    """(z (N, z_dim), y (N,)) -> image (N, C, R, R) in [-1, 1]; the class enters every batch norm."""

    def __init__(self, num_classes: int, z_dim: int = 100, resolution: int = 32, channels: int = 1, width: int = 32) -> None:
        super().__init__()
        n = stages(resolution)
        self.z_dim, self.num_classes = z_dim, num_classes
        c = width * 2 ** (n - 1) if n > 0 else width
        self.c0 = c
        self.project = nn.Linear(z_dim, c * 16, bias=False)
        self.norms = nn.ModuleList([ConditionalBatchNorm2d(c, num_classes)])
        self.ups = nn.ModuleList()
        for _ in range(n - 1):
            self.ups.append(nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False))
            self.norms.append(ConditionalBatchNorm2d(c // 2, num_classes))
            c //= 2
        self.out = nn.ConvTranspose2d(c, channels, 4, 2, 1)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.norms[0](self.project(z).view(len(z), self.c0, 4, 4), y))
        for up, norm in zip(self.ups, self.norms[1:]):
            h = torch.relu(norm(up(h), y))
        return torch.tanh(self.out(h))


class ProjectionDiscriminator(nn.Module):
    """D(x, y) = psi(phi(x)) + <embed(y), phi(x)>, phi = spectrally normalised convolutions with global
    sum pooling; one real-valued score per image (trained with the hinge loss)."""

    def __init__(self, num_classes: int, resolution: int = 32, channels: int = 1, width: int = 32) -> None:
        super().__init__()
        layers, c = downsampling_layers(resolution, channels, width, norm=False, wrap=spectral_norm)
        self.body = nn.Sequential(*layers)
        self.psi = spectral_norm(nn.Linear(c, 1))
        self.embed = spectral_norm(nn.Embedding(num_classes, c))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.body(x).sum((2, 3))
        return self.psi(h).view(len(x)) + (self.embed(y) * h).sum(1)
