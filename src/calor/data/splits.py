"""The private train / private test / public split of a scenario, with everything needed to reproduce it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from ..scenario import Scenario
from .sources import SOURCES
from .transforms import to_model_range


@dataclass(frozen=True)
class SplitData:
    """Model-ready tensors. Private labels are remapped to 0..C-1; `class_names` gives the originals.
    Public labels exist for the defender's use only (e.g. TL-DMI pre-training); attacks receive
    `x_public` alone."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_public: torch.Tensor  # the attacker's images (attacks get these only, never the labels)
    y_public: torch.Tensor  # public labels remapped to 0..P-1: for defenses that pre-train on public data (TL)
    class_names: list[str]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def train_of_class(self, c: int) -> torch.Tensor:
        return self.x_train[self.y_train == c]


def _digest(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()[:16]


def make_splits(scenario: Scenario) -> SplitData:
    """Load the scenario's source and split it: private classes stratified into train/test, public apart."""
    spec = scenario.data
    images, labels = SOURCES.get(spec.source)(spec.path)
    if images.ndim != 3 or len(images) != len(labels):
        raise DataError(f"data source {spec.source}: expected images (N, H, W) and N labels, got {images.shape}, {labels.shape}")
    rng = np.random.default_rng(spec.split_seed)
    present = set(np.unique(labels).tolist())
    missing = [c for c in (*spec.private_classes, *spec.public_classes) if c not in present]
    if missing:
        raise DataError(f"data source {spec.source}: classes {missing} have no images (present: {sorted(present)})")

    def pick(c: int) -> np.ndarray:
        idx = np.flatnonzero(labels == c)
        idx = rng.permutation(idx)
        return idx[: spec.max_per_class] if spec.max_per_class else idx

    train_idx, test_idx, public_idx = [], [], []
    for c in spec.private_classes:
        idx = pick(c)
        n_test = max(1, int(round(len(idx) * spec.test_fraction)))
        if len(idx) - n_test < 2:
            raise DataError(f"class {c}: only {len(idx)} images, too few to split into train and test")
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    for c in spec.public_classes:
        public_idx.append(pick(c))
    tr, te, pu = (np.sort(np.concatenate(a)) for a in (train_idx, test_idx, public_idx))
    remap = {c: i for i, c in enumerate(spec.private_classes)}
    pub_remap = {c: i for i, c in enumerate(spec.public_classes)}
    to_y = lambda idx: torch.tensor([remap[int(c)] for c in labels[idx]], dtype=torch.long)  # noqa: E731
    r = scenario.resolution
    info = {
        "source": spec.source,
        "path": spec.path,
        "source_sha256": _digest(images) + _digest(labels),
        "split_seed": spec.split_seed,
        "private_classes": list(spec.private_classes),
        "public_classes": list(spec.public_classes),
        "sizes": {"private_train": len(tr), "private_test": len(te), "public": len(pu)},
        "indices_sha256": {"private_train": _digest(tr), "private_test": _digest(te), "public": _digest(pu)},
        "image_size_raw": list(images.shape[1:]),
        "resolution": r,
    }
    return SplitData(
        x_train=to_model_range(images[tr], r),
        y_train=to_y(tr),
        x_test=to_model_range(images[te], r),
        y_test=to_y(te),
        x_public=to_model_range(images[pu], r),
        y_public=torch.tensor([pub_remap[int(c)] for c in labels[pu]], dtype=torch.long),
        class_names=[str(c) for c in spec.private_classes],
        info=info | {"indices": {"private_train": tr.tolist(), "private_test": te.tolist(), "public": pu.tolist()}},
    )
