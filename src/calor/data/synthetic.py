"""Generated stand-ins for the face datasets, written in their on-disk layouts.

No package ships face images with identity labels, so tests (and anyone checking a set-up before the real
data arrives) use these: each identity is a fixed random "face" (skin tone, face ellipse, eye and mouth
positions, background colour) drawn with per-image jitter and noise, so that classifiers can learn the
identities and the split, decoding and protocol code run exactly as on the real files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError

LAYOUTS = ("celeba", "facescrub", "ffhq", "image-folder")
# Image size of each layout's files (CelebA aligned images are 178 x 218; the others are squares).
SIZES = {"celeba": (178, 218), "facescrub": (120, 120), "ffhq": (128, 128), "image-folder": (64, 64)}


def _face(rng: np.random.Generator, ident: np.random.Generator, size: tuple[int, int]):
    from PIL import Image, ImageDraw

    w, h = size
    # identity parameters (fixed per identity), then per-image jitter
    bg = ident.integers(0, 256, 3)
    skin = ident.integers(90, 250, 3)
    eye = ident.integers(0, 120, 3)
    ex, ey = ident.uniform(0.12, 0.2), ident.uniform(-0.12, 0.02)
    mouth = ident.uniform(0.12, 0.25)
    jx, jy = rng.normal(0, 0.02, 2)
    cx, cy, s = w * (0.5 + jx), h * (0.5 + jy), min(w, h) * rng.uniform(0.3, 0.36)
    im = Image.new("RGB", size, tuple(int(v) for v in bg))
    d = ImageDraw.Draw(im)
    d.ellipse([cx - s, cy - 1.25 * s, cx + s, cy + 1.25 * s], fill=tuple(int(v) for v in skin))
    for sign in (-1, 1):
        x0, y0, r = cx + sign * ex * 2 * s, cy + ey * 2 * s, 0.14 * s
        d.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=tuple(int(v) for v in eye))
    d.rectangle([cx - mouth * 2 * s, cy + 0.55 * s, cx + mouth * 2 * s, cy + 0.65 * s], fill=(120, 30, 40))
    arr = np.asarray(im, dtype=np.int16) + rng.normal(0, 8, (h, w, 3)).astype(np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def write_fake_faces(root: Path | str, layout: str, identities: int, per_identity: Sequence[int] | int,
                     *, seed: int = 0, size: tuple[int, int] | None = None) -> Path:
    """Write `identities` generated identities in `layout` under `root` and return `root`.

    `per_identity` is one count for all or a count per identity (the protocols rank identities by image
    count). For ffhq the identities are drawn but not recorded (FFHQ is unlabelled)."""
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown layout {layout!r}; choose {', '.join(LAYOUTS)}")
    counts = [per_identity] * identities if isinstance(per_identity, int) else list(per_identity)
    if len(counts) != identities or min(counts) < 1:
        raise ConfigError("per_identity: one positive count per identity")
    root = Path(root)
    size = size or SIZES[layout]
    rng = np.random.default_rng(seed)
    lines, n = [], 0
    for k, count in enumerate(counts):
        for j in range(count):
            n += 1
            img = _face(rng, np.random.default_rng([seed, k]), size)  # same identity parameters every time
            if layout == "celeba":
                name = f"{n:06d}.jpg"
                path = root / "img_align_celeba" / name
                lines.append(f"{name} {k + 1}")
            elif layout == "facescrub":
                group = "actors" if k % 2 == 0 else "actresses"
                path = root / group / "faces" / f"Person_{k:03d}" / f"Person_{k:03d}_{j}.jpeg"
            elif layout == "ffhq":
                path = root / "thumbnails128x128" / f"{n // 1000 * 1000:05d}" / f"{n:05d}.png"
            else:
                path = root / f"class_{k:03d}" / f"{j:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            img.save(path, quality=95) if path.suffix in (".jpg", ".jpeg") else img.save(path)
    if layout == "celeba":
        (root / "identity_CelebA.txt").write_text("\n".join(lines) + "\n")
    return root
