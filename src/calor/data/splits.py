"""The private train / private test / public split of a scenario, with everything needed to reproduce it.

Two kinds of source give the same `SplitData`:
- class-list sources (embedded MNIST, IDX directories, a labelled image folder): the scenario names the
  private and the public classes, and each private class is split into train and test here;
- the face protocols (`data.identities` set; CelebA, FaceScrub, an image folder): the N identities with most
  images are private, public images come from the other identities or from `data.public_source`, and the
  split lives in a checksummed split file (`identity_split.py`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from ..scenario import Scenario
from .decode import Decode, decode_images, resolve_data_path
from .identity_split import IdentityProtocol, load_or_make_split, split_directory
from .listings import LISTINGS
from .sources import SOURCES
from .transforms import to_model_range


@dataclass(frozen=True)
class SplitData:
    """Model-ready tensors. Private labels are remapped to 0..C-1; `class_names` gives the originals.
    Public labels exist for the defender's use only (e.g. TL-DMI pre-training); attacks receive
    `x_public` alone. Unlabelled public data (FFHQ) has every public label -1."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_public: torch.Tensor  # the attacker's images (attacks get these only, never the labels)
    y_public: torch.Tensor  # public labels remapped to 0..P-1: for defenses that pre-train on public data (TL)
    class_names: list[str]
    info: dict[str, Any] = field(default_factory=dict)
    # the public pool's other two parts (`DataSpec.judge_public_fraction`, `public_holdout_fraction`);
    # None: not cut (the judges and the floor use the attacker's images)
    x_public_judge: torch.Tensor | None = None
    y_public_judge: torch.Tensor | None = None
    x_public_holdout: torch.Tensor | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_public_classes(self) -> int:
        """Classes among the public labels (0 when the public data is unlabelled)."""
        return int(self.y_public.max()) + 1 if len(self.y_public) and int(self.y_public.max()) >= 0 else 0

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def train_of_class(self, c: int) -> torch.Tensor:
        return self.x_train[self.y_train == c]

    def judge_public(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The labelled public images a judge learns its public classes from: the judges' own part of the pool
        (never the attacker's), or the attacker's images where the pool was not cut."""
        if self.x_public_judge is not None and self.y_public_judge is not None and len(self.x_public_judge):
            return self.x_public_judge, self.y_public_judge
        return self.x_public, self.y_public

    def public_reference(self) -> torch.Tensor:
        """Natural public images that no model saw (the public floor, the realism test's reference), or the
        attacker's images where the pool has no holdout."""
        if self.x_public_holdout is not None and len(self.x_public_holdout):
            return self.x_public_holdout
        return self.x_public


def _digest(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()[:16]


def _check_images(images: np.ndarray, labels: np.ndarray, source: str) -> None:
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] not in (1, 3)) \
            or len(images) != len(labels):
        raise DataError(f"data source {source}: expected uint8 images (N, H, W) or (N, H, W, 1|3) and N labels, "
                        f"got {images.dtype} {images.shape} and {labels.shape}")


def _class_list_split(scenario: Scenario) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, torch.Tensor], list[str], dict[str, Any]]:
    spec = scenario.data
    images, labels = SOURCES.get(spec.source)(spec.path, Decode(scenario.resolution, spec.crop))
    _check_images(images, labels, spec.source)
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
    parts = {"private_train": images[tr], "private_test": images[te], "public": images[pu]}
    ys = {"private_train": torch.tensor([remap[int(c)] for c in labels[tr]], dtype=torch.long),
          "private_test": torch.tensor([remap[int(c)] for c in labels[te]], dtype=torch.long),
          "public": torch.tensor([pub_remap[int(c)] for c in labels[pu]], dtype=torch.long)}
    info = {
        "source_sha256": _digest(images) + _digest(labels),
        "private_classes": list(spec.private_classes),
        "public_classes": list(spec.public_classes),
        "indices_sha256": {"private_train": _digest(tr), "private_test": _digest(te), "public": _digest(pu)},
        "image_size_raw": list(images.shape[1:]),
        "indices": {"private_train": tr.tolist(), "private_test": te.tolist(), "public": pu.tolist()},
    }
    return images, parts, ys, [str(c) for c in spec.private_classes], info


def _identity_split(scenario: Scenario) -> tuple[dict[str, np.ndarray], dict[str, torch.Tensor], list[str], dict[str, Any]]:
    spec = scenario.data
    assert spec.identities is not None
    if spec.source not in LISTINGS.names():
        raise DataError(f"data.identities needs a source listing identities ({', '.join(LISTINGS.names())}); got {spec.source!r}")
    private = LISTINGS.get(spec.source)(resolve_data_path(spec.path, f"data.path ({spec.source})"))
    if private.identities is None:
        raise DataError(f"{private.layout}: unlabelled data cannot be the private data")
    public = None
    if spec.public_source is not None:
        public = LISTINGS.get(spec.public_source)(resolve_data_path(spec.public_path, f"data.public_path ({spec.public_source})"))
    protocol = IdentityProtocol(spec.identities, spec.test_fraction, spec.split_seed, spec.public_images, spec.max_per_class)
    split = load_or_make_split(private, public, protocol, spec.source)
    cache = split_directory(private)
    r = scenario.resolution

    def decode(base, names: list[str], crop, what: str) -> np.ndarray:
        return decode_images([base / n for n in names], base, Decode(r, crop), cache, what=what)

    private_images = decode(private.base, split.train + split.test, spec.crop, f"{spec.source} private")
    n_train = len(split.train)
    pub_base = private.base if public is None else public.base
    pub_crop = spec.crop if public is None else spec.public_crop
    parts = {"private_train": private_images[:n_train], "private_test": private_images[n_train:],
             "public": decode(pub_base, split.public, pub_crop, f"{spec.public_source or spec.source} public")}
    if public is None:  # labelled public identities: numbered in sorted order, for defenses that pre-train (TL)
        ids = dict(zip((f.relative_to(private.base).as_posix() for f in private.files), private.identities or ()))
        names = sorted({ids[n] for n in split.public})
        index = {n: i for i, n in enumerate(names)}
        y_public = torch.tensor([index[ids[n]] for n in split.public], dtype=torch.long)
    else:
        y_public = torch.full((len(split.public),), -1, dtype=torch.long)
    ys = {"private_train": torch.tensor(split.train_labels, dtype=torch.long),
          "private_test": torch.tensor(split.test_labels, dtype=torch.long), "public": y_public}
    name_digest = lambda names: hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]  # noqa: E731
    info = {
        "private_listing": {"layout": private.layout, "fingerprint": private.fingerprint},
        "public_listing": None if public is None else {"layout": public.layout, "fingerprint": public.fingerprint},
        "split_file": split.file.name,
        "split_checksum": split.checksum,
        # the decoded pixels: the split names files, this says what was in them
        "pixels_sha256": hashlib.sha256("".join(_digest(np.asarray(v)) for v in parts.values()).encode()).hexdigest()[:32],
        "identities": spec.identities,
        "crop": spec.crop,
        "public_crop": pub_crop,
        "indices_sha256": {"private_train": name_digest(split.train), "private_test": name_digest(split.test),
                           "public": name_digest(split.public)},
        "indices": {"private_train": split.train, "private_test": split.test, "public": split.public},
    }
    return parts, ys, split.identities, info


def _cut_public(labels: np.ndarray, judge_fraction: float, holdout_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Positions of the public pool's attacker / judge / holdout parts: disjoint, of exactly the rounded
    sizes, and stratified by public label (one stratum when unlabelled). Each stratum is shuffled and its
    images ranked by their position in it, so every part takes the same share of every label; the
    attacker keeps at least one image."""
    rng = np.random.default_rng([seed, 0x9B11C])  # a stream of its own: the private split stays as it was
    order = np.empty(len(labels))
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        order[idx] = (np.arange(len(idx)) + 0.5) / len(idx)
    ranked = np.lexsort((rng.random(len(labels)), order))  # ties between strata broken at random
    n = len(labels)
    n_hold = min(int(round(n * holdout_fraction)), max(0, n - 1))
    n_judge = min(int(round(n * judge_fraction)), max(0, n - 1 - n_hold))
    return {"holdout": np.sort(ranked[:n_hold]), "judge": np.sort(ranked[n_hold:n_hold + n_judge]),
            "attacker": np.sort(ranked[n_hold + n_judge:])}


def make_splits(scenario: Scenario) -> SplitData:
    """Load the scenario's source and split it (class lists, or the identity protocol of the face datasets)."""
    spec = scenario.data
    if spec.identities is not None:
        parts, ys, class_names, info = _identity_split(scenario)
    else:
        _, parts, ys, class_names, info = _class_list_split(scenario)
    r = scenario.resolution
    x = {k: to_model_range(v, r) for k, v in parts.items()}
    judge_fraction = spec.judge_public_fraction or 0.0
    cut = None
    if judge_fraction or spec.public_holdout_fraction:
        cut = _cut_public(ys["public"].numpy(), judge_fraction, spec.public_holdout_fraction, spec.split_seed)
        pool, pool_y, names = x.pop("public"), ys["public"], info["indices"]["public"]
        for part, pos in cut.items():
            key = "public" if part == "attacker" else f"public_{part}"
            x[key], ys[key] = pool[torch.from_numpy(pos)], pool_y[torch.from_numpy(pos)]
            info["indices"][key] = [names[i] for i in pos.tolist()]
            info["indices_sha256"][key] = hashlib.sha256(json.dumps(info["indices"][key]).encode()).hexdigest()[:16]
    info = {"source": spec.source, "path": spec.path, "split_seed": spec.split_seed, **info,
            "sizes": {k: len(v) for k, v in x.items()}, "channels": int(x["private_train"].shape[1]), "resolution": r,
            "public_cut": None if cut is None else {"judge_fraction": judge_fraction,
                                                     "holdout_fraction": spec.public_holdout_fraction}}
    # `indices` last (long): summaries drop it
    info["indices"] = info.pop("indices")
    return SplitData(x_train=x["private_train"], y_train=ys["private_train"], x_test=x["private_test"], y_test=ys["private_test"],
                     x_public=x["public"], y_public=ys["public"], class_names=class_names, info=info,
                     x_public_judge=x.get("public_judge"), y_public_judge=ys.get("public_judge"),
                     x_public_holdout=x.get("public_holdout"))
