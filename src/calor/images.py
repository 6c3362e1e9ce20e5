"""Image grids as PNG (Pillow; no torchvision)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

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


HIT, MISS = (0, 160, 0), (210, 0, 0)  # frame colours: green = hit, red = miss


def save_annotated_grid(rows: list[torch.Tensor], path: Path, row_labels: list[str],
                        marks: list[list[tuple[bool | str, str]] | None], scale: int = 4) -> Path:
    """Like `save_grid`, with a text label left of each row and, for rows whose `marks` entry is a list of
    (hit, caption) per image, a green (hit) or red (miss) frame round each image and its caption below;
    `hit` may also be a colour name or "#rrggbb" for the frame.

    Rows with marks None get no frames or captions. Always saved as RGB (the frames are coloured).
    """
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("save_annotated_grid: every row needs at least one image")
    if len(row_labels) != len(rows) or len(marks) != len(rows):
        raise ValueError(f"save_annotated_grid: {len(rows)} rows, {len(row_labels)} labels, {len(marks)} marks")
    for i, (row, row_marks) in enumerate(zip(rows, marks)):
        if row.shape[1:] != rows[0].shape[1:]:
            raise ValueError(f"save_annotated_grid: row {i} has images {tuple(row.shape[1:])}, row 0 {tuple(rows[0].shape[1:])}")
        if row_marks is not None and len(row_marks) != len(row):
            raise ValueError(f"save_annotated_grid: row {i} has {len(row)} images but {len(row_marks)} marks")
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def text_size(text: str) -> tuple[int, int]:
        left, top, right, bottom = measure.textbbox((0, 0), text, font=font)
        return right - left, bottom - top

    h, w = (side * scale for side in rows[0].shape[-2:])
    frame, pad = 2, 4
    captions = [c for m in marks if m is not None for _, c in m]
    caption_h = max((text_size(c)[1] for c in captions), default=0) + pad
    # Captions may be wider than small images; widen the column rather than clip them.
    cell_w = max([w + 2 * frame] + [text_size(c)[0] for c in captions]) + pad
    label_w = max(text_size(label)[0] for label in row_labels) + 2 * pad
    row_h = [h + 2 * frame + (caption_h if m is not None else 0) + pad for m in marks]
    cols = max(len(r) for r in rows)
    canvas = Image.new("RGB", (label_w + cols * cell_w + pad, sum(row_h) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    y0 = pad
    for row, label, row_marks, height in zip(rows, row_labels, marks, row_h):
        draw.text((pad, y0 + frame + (h - text_size(label)[1]) // 2), label, fill="black", font=font)
        for j, pixels in enumerate(to_uint8(row)):
            x0 = label_w + j * cell_w + (cell_w - pad - w - 2 * frame) // 2
            tile = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).convert("RGB")
            canvas.paste(tile.resize((w, h), Image.NEAREST), (x0 + frame, y0 + frame))
            if row_marks is not None:
                hit, caption = row_marks[j]
                draw.rectangle((x0, y0, x0 + w + 2 * frame - 1, y0 + h + 2 * frame - 1),
                               outline=hit if isinstance(hit, str) else HIT if hit else MISS, width=frame)
                draw.text((x0 + (w + 2 * frame - text_size(caption)[0]) // 2, y0 + h + 2 * frame + pad // 2),
                          caption, fill="black", font=font)
        y0 += height
    return write_file_atomic(Path(path), lambda tmp: canvas.save(tmp, format="PNG"))
