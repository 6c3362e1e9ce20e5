"""Pixel-space memorisation check: each reconstruction against its closest private image of the same class.

Feature-space KNN distance says how the evaluation model sees a reconstruction; this says whether it
literally reproduces a training image, which a reader can verify by looking at the pair.
"""

from __future__ import annotations

import kornia
import torch

from ..errors import MetricError
from .knn import nearest_private

SSIM_WINDOW = 11  # the usual SSIM window (Wang et al. 2004)


def _ssim_window(height: int, width: int) -> int:
    """11, or for images smaller than that the largest odd window that fits (kornia needs an odd size)."""
    side = min(SSIM_WINDOW, height, width)
    return side if side % 2 == 1 else side - 1


def per_image_ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM per image between two (N, C, H, W) batches in [-1, 1] (compared in [0, 1] units)."""
    window = _ssim_window(*a.shape[-2:])
    x, y = (a.double() + 1) / 2, (b.double() + 1) / 2
    return kornia.metrics.ssim(x, y, window, max_val=1.0).flatten(1).mean(1)


@torch.no_grad()
def nearest_private_pixels(images: torch.Tensor, labels: torch.Tensor, private_images: torch.Tensor,
                           private_labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """For each reconstruction, the private image of its class with the smallest pixel MSE.

    Returns per-sample tensors: `mse` (N,) mean squared pixel error in [-1, 1] units, `ssim` (N,) SSIM to
    that same nearest image (11x11 Gaussian window, images mapped to [0, 1]), and `index` (N,) into
    `private_images`.
    """
    if len(images) == 0:
        raise MetricError("pixel nearest neighbour: no reconstructions")
    if images.ndim != 4 or images.shape[1:] != private_images.shape[1:]:
        raise MetricError(f"pixel nearest neighbour: image shapes differ {tuple(images.shape)} vs {tuple(private_images.shape)}")
    if len(labels) != len(images) or len(private_labels) != len(private_images):
        raise MetricError(f"pixel nearest neighbour: {len(images)} images for {len(labels)} labels, "
                          f"{len(private_images)} private images for {len(private_labels)} labels")
    images, private_images = images.detach().cpu().double(), private_images.detach().cpu().double()
    labels, private_labels = labels.cpu(), private_labels.cpu()
    sq, index = nearest_private(images.flatten(1), labels, private_images.flatten(1), private_labels, exact=True,
                                what="pixel nearest neighbour")
    return {"mse": sq / images[0].numel(), "ssim": per_image_ssim(images, private_images[index]), "index": index}
