"""What a dataset on disk holds: its image files and, for labelled data, each file's identity.

One reader per on-disk layout of the field's datasets (CelebA, FaceScrub, FFHQ) and a generic labelled
image folder (``root/<class>/*.png|jpg``). A reader only lists; it never decodes (see `decode.py`) and never
splits (see `identity_split.py`). Each listing carries a fingerprint of what was listed, which the split
file records, so a different copy of the data is noticed instead of silently re-split.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ..errors import DataError
from ..registry import Registry
from .decode import IMAGE_SUFFIXES, files_digest, list_images


@dataclass(frozen=True)
class Listing:
    """Files under `base` with their identities (None for unlabelled data such as FFHQ)."""

    base: Path
    files: tuple[Path, ...]
    identities: Optional[tuple[str, ...]]
    fingerprint: str  # sha256 of what defines the listing (an identity file, or names and sizes)
    kind: str  # which layout was read, e.g. "CelebA (identity_CelebA.txt)": recorded, and part of split names

    def __post_init__(self) -> None:
        if not self.files:
            raise DataError(f"{self.layout}: no images found")

    @property
    def layout(self) -> str:
        """What was read and where, for messages and records."""
        return f"{self.kind} at {self.base}"


LISTINGS: Registry = Registry("dataset layout")
Reader = Callable[[Path], Listing]


def _first(base: Path, candidates: tuple[str, ...], what: str, kind: str) -> Path:
    for c in candidates:
        p = base / c
        if (p.is_dir() if kind == "dir" else p.is_file()):
            return p
    tried = ", ".join(str(base / c) for c in candidates)
    raise DataError(f"{what}: {kind == 'dir' and 'image directory' or 'file'} not found; looked for {tried}")


def _folders(base: Path, what: str) -> Listing:
    """`base/<identity>/*.<image>`: one folder per identity, folder name = identity."""
    if not base.is_dir():
        raise DataError(f"{what}: {base} is not a directory")
    files, ids = [], []
    for folder in sorted(p for p in base.iterdir() if p.is_dir()):
        for f in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
            files.append(f)
            ids.append(folder.name)
    if not files:
        raise DataError(f"{what}: {base} holds no <class>/<image> files ({', '.join(IMAGE_SUFFIXES)})")
    return Listing(base, tuple(files), tuple(ids), files_digest(files, base), what)


@LISTINGS.register("image-folder")
def image_folder(base: Path) -> Listing:
    """A labelled image folder: ``root/<class>/*.png|jpg`` (the class is the folder name)."""
    return _folders(base, "image folder")


@LISTINGS.register("celeba")
def celeba(base: Path) -> Listing:
    """CelebA as distributed: aligned images (``img_align_celeba/``, or ``Img/img_align_celeba/``) and the
    identity file ``identity_CelebA.txt`` (or ``Anno/identity_CelebA.txt``), lines ``000001.jpg 2880``."""
    if not base.is_dir():
        raise DataError(f"CelebA: {base} is not a directory")
    ident = _first(base, ("identity_CelebA.txt", "Anno/identity_CelebA.txt"), "CelebA", "file")
    images = _first(base, ("img_align_celeba/img_align_celeba", "img_align_celeba", "Img/img_align_celeba"), "CelebA", "dir")
    raw = ident.read_bytes()
    files, ids = [], []
    for n, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].isdigit():
            raise DataError(f"{ident}, line {n}: expected '<file> <identity number>', got {line.strip()!r}")
        files.append(images / parts[0])
        ids.append(parts[1])
    return Listing(base, tuple(files), tuple(ids), hashlib.sha256(raw).hexdigest(), f"CelebA ({ident.name})")


@LISTINGS.register("facescrub")
def facescrub(base: Path) -> Listing:
    """FaceScrub face crops as the field uses them: ``actors/faces/<Name>/*`` and ``actresses/faces/<Name>/*``
    (530 identities), or one folder per identity directly under the root."""
    if not base.is_dir():
        raise DataError(f"FaceScrub: {base} is not a directory")
    parts = [base / g / "faces" for g in ("actors", "actresses") if (base / g / "faces").is_dir()]
    if not parts:
        return _folders(base, "FaceScrub")
    listings = [_folders(p, "FaceScrub") for p in parts]
    files = tuple(f for lst in listings for f in lst.files)
    ids = tuple(i for lst in listings for i in (lst.identities or ()))
    return Listing(base, files, ids, files_digest(files, base), "FaceScrub (actors/actresses)")


@LISTINGS.register("ffhq")
def ffhq(base: Path) -> Listing:
    """FFHQ (unlabelled public data): every image under the root, e.g. ``thumbnails128x128/00000/*.png``."""
    if not base.is_dir():
        raise DataError(f"FFHQ: {base} is not a directory")
    files = list_images(base)
    if not files:
        raise DataError(f"FFHQ: no images under {base}")
    return Listing(base, tuple(files), None, files_digest(files, base), "FFHQ")
