"""Image grids as PNG (Pillow; no torchvision)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .artifacts import write_file_atomic


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8."""
    x = ((images.detach().cpu().float().clamp(-1, 1) + 1) * 127.5).round().byte()
    return x.permute(0, 2, 3, 1).numpy()


def save_grid(rows: list[torch.Tensor], path: Path, scale: int = 3, pad: int = 2) -> Path:
    """Save rows of images (each (N_i, C, H, W), same H, W) as one PNG grid, upscaled `scale`x (nearest)."""
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("save_grid: every row needs at least one image")
    h, w = rows[0].shape[-2:]
    c = rows[0].shape[1]
    cols = max(len(r) for r in rows)
    canvas = np.full((len(rows) * (h + pad) + pad, cols * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(to_uint8(row)):
            y0, x0 = pad + i * (h + pad), pad + j * (w + pad)
            canvas[y0 : y0 + h, x0 : x0 + w] = img
    img = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return write_file_atomic(Path(path), lambda tmp: img.save(tmp, format="PNG"))
