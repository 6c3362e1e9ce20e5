"""Image files on disk -> one uint8 array, decoded once.

Face protocols read tens of thousands of JPEG/PNG files. Decoding them every time a scenario loads would
dominate short runs, so the decoded images (already cropped and resized to the scenario resolution) are
written once as an ``.npy`` file beside the split file and memory-mapped on later loads. The cache is named
by a hash of the file list (relative names and sizes) and of the crop/resolution, so a changed copy of the
data or a different protocol gets its own file. Pillow decodes; no torchvision.

Also the data root: scenarios name their data relative to ``--data-root`` / ``CALOR_DATA_ROOT``.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import DataError
from ..progress import task

DATA_ROOT_ENV = "CALOR_DATA_ROOT"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
# Above this many bytes a decoded cache is memory-mapped instead of read into memory.
MMAP_BYTES = 512 * 2**20


@dataclass(frozen=True)
class Decode:
    """How files become model-size images: an optional centre crop (a square of `crop` pixels, the CelebA
    protocol's 108), else the largest centred square, then a resize to `resolution` (antialiased bilinear)."""

    resolution: int
    crop: Optional[int] = None


def data_root() -> Optional[Path]:
    raw = os.environ.get(DATA_ROOT_ENV, "").strip()
    return Path(raw).expanduser() if raw else None


def resolve_data_path(path: Optional[str], what: str) -> Path:
    """`path` as given when absolute; a relative one under the data root when one is set, else under the
    current directory if it exists there; errors say which setting is missing."""
    if not path:
        raise DataError(f"{what}: no path given (set data.path in the scenario)")
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    root = data_root()
    if root is not None:
        if not (root / p).exists():
            raise DataError(f"{what}: {root / p} does not exist (data root {root} from --data-root / {DATA_ROOT_ENV})")
        return root / p
    if p.exists():
        return p
    raise DataError(f"{what}: '{path}' is relative to the data root, and none is set; pass --data-root DIR or set {DATA_ROOT_ENV}")


def list_images(directory: Path) -> list[Path]:
    """Image files under `directory` (recursively), sorted by relative name so every machine lists them alike."""
    files = [p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(files, key=lambda p: p.relative_to(directory).as_posix())


def _decode_one(path: Path, decode: Decode, mode: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    from PIL.Image import DecompressionBombError

    try:
        with Image.open(path) as im:
            im = im.convert(mode)
            w, h = im.size
            side = decode.crop if decode.crop is not None else min(w, h)
            if side > min(w, h):
                raise DataError(f"{path}: image is {w}x{h}, smaller than the {side}-pixel crop")
            left, top = (w - side) // 2, (h - side) // 2
            im = im.crop((left, top, left + side, top + side))
            if side != decode.resolution:
                im = im.resize((decode.resolution, decode.resolution), Image.Resampling.BILINEAR, reducing_gap=None)
            return np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, DecompressionBombError, OSError, SyntaxError, ValueError) as exc:  # ValueError: e.g. a bad mode
        raise DataError(f"{path}: cannot decode image ({exc})") from None


def _image_mode(path: Path) -> str:
    from PIL import Image, UnidentifiedImageError
    from PIL.Image import DecompressionBombError

    try:
        with Image.open(path) as im:
            return "L" if im.mode in ("1", "L", "I;16", "I") else "RGB"
    except (UnidentifiedImageError, DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot decode image ({exc})") from None


def files_digest(files: Sequence[Path], base: Path) -> str:
    """A digest of a file list: relative names and sizes (not contents: hashing 200k JPEGs takes minutes)."""
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(base).as_posix()}\t{f.stat().st_size}\n".encode())
    return h.hexdigest()


def decode_images(files: Sequence[Path], base: Path, decode: Decode, cache_dir: Path, *, what: str) -> np.ndarray:
    """(N, R, R) or (N, R, R, 3) uint8 for `files` (one channel if every file is grayscale, else RGB), from the
    decoded cache in `cache_dir` when it is there, decoded with a thread pool and cached otherwise."""
    if not files:
        raise DataError(f"{what}: no image files")
    key = hashlib.sha256(f"{files_digest(files, base)}|{decode}".encode()).hexdigest()[:16]
    cache = cache_dir / f"calor-decoded-{decode.resolution}px-{key}.npy"
    if cache.is_file():
        try:
            arr = np.load(cache, mmap_mode="r" if cache.stat().st_size > MMAP_BYTES else None)
            if arr.dtype == np.uint8 and len(arr) == len(files):
                return arr
        except (OSError, ValueError):
            pass  # a torn or foreign file: decode again and replace it
    workers = min(8, max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)))
    with ThreadPoolExecutor(workers) as pool:  # one channel only if every file is grayscale (headers only)
        mode = "L" if all(m == "L" for m in pool.map(_image_mode, files)) else "RGB"
    out = np.empty((len(files), decode.resolution, decode.resolution) + ((3,) if mode == "RGB" else ()), dtype=np.uint8)
    with task(f"decode {what}", len(files)) as advance, ThreadPoolExecutor(workers) as pool:
        for i, img in enumerate(pool.map(lambda f: _decode_one(f, decode, mode), files)):
            out[i] = img
            advance()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, out)
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only data directory: decoding again next time is slower, not wrong
    return out
