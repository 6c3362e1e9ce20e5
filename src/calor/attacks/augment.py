"""Differentiable random augmentation (kornia) for attacks that optimise through a classifier.

PLG-MI (and PPA after it) evaluate the target on randomly augmented copies of each generated image,
so the optimised latents must produce images that stay in the class under small crops, contrast
changes and rotations instead of exploiting one brittle pixel pattern.
"""

from __future__ import annotations

import kornia.augmentation as K
import torch

from ..errors import collect


class DiffAugment:
    """Random resized crop (area `crop_scale`, aspect ratio 1) -> colour jitter (brightness, contrast,
    applied with probability `jitter_p`) -> optional horizontal flip -> rotation (±`rotation` degrees),
    all differentiable w.r.t. the images.

    Images are in [-1, 1]; kornia's colour ops work in [0, 1] and clamp, so images are mapped there and
    back (a geometric op's zero padding is then black, i.e. -1, the MNIST background). Saturation and
    hue are not used: they mean nothing for grayscale and PLG-MI only jitters brightness and contrast.
    kornia samples its parameters from torch's global RNG; `__call__` draws a seed from the caller's
    generator and runs kornia under a forked, reseeded RNG, so results depend on that generator only and
    the global RNG state is left untouched.
    """

    def __init__(self, resolution: int, *, crop_scale: tuple[float, float] = (0.8, 1.0), brightness: float = 0.2,
                 contrast: float = 0.2, jitter_p: float = 1.0, flip: bool = False, rotation: float = 5.0) -> None:
        p = []
        if not 0.0 < crop_scale[0] <= crop_scale[1] <= 1.0:
            p.append(f"crop_scale={crop_scale}: need 0 < min <= max <= 1")
        if brightness < 0 or contrast < 0 or rotation < 0:
            p.append("brightness, contrast and rotation must be >= 0")
        if not 0.0 <= jitter_p <= 1.0:
            p.append(f"jitter_p={jitter_p}: must be in [0, 1]")
        collect(p, "differentiable augmentation")
        ops: list[torch.nn.Module] = [K.RandomResizedCrop((resolution, resolution), scale=crop_scale, ratio=(1.0, 1.0))]
        if (brightness > 0 or contrast > 0) and jitter_p > 0:
            ops.append(K.ColorJitter(brightness=brightness, contrast=contrast, p=jitter_p))
        if flip:
            ops.append(K.RandomHorizontalFlip())
        if rotation > 0:
            ops.append(K.RandomRotation(rotation))
        self.pipeline = K.ImageSequential(*ops)

    def __call__(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        devices = [images.device.index or 0] if images.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            out = self.pipeline((images + 1) / 2)
        return out * 2 - 1
