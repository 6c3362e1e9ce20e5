"""The face protocols' split: the N identities with most images are private (each split into train and
test), and public images come from the other identities or from another dataset.

The split is a function of the listing and the protocol's parameters alone, and it is written once to a
split file (JSON, with a checksum of its own content and the fingerprint of the listing it was made from).
Later loads read the file; a listing whose fingerprint differs (another copy of CelebA, images added or
missing) is reported and never silently re-split: delete the split file to make a new one on purpose.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import DataError
from .listings import Listing

SPLIT_DIR_ENV = "CALOR_SPLIT_DIR"
FORMAT = 1


@dataclass(frozen=True)
class IdentityProtocol:
    identities: int  # private identities (those with most images)
    test_fraction: float
    split_seed: int
    public_images: Optional[int]  # None = every public image
    max_per_class: Optional[int] = None


@dataclass(frozen=True)
class IdentitySplit:
    """Relative file names (to each listing's base) of every part, and the private identities in class order."""

    identities: list[str]
    train: list[str]
    train_labels: list[int]
    test: list[str]
    test_labels: list[int]
    public: list[str]
    file: Path
    checksum: str


def _checksum(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def make_identity_split(private: Listing, public: Optional[Listing], p: IdentityProtocol) -> dict[str, Any]:
    """The split as a JSON-able body (deterministic in the listing order and `p.split_seed`)."""
    assert private.identities is not None
    counts = Counter(private.identities)
    ranked = sorted(counts, key=lambda i: (-counts[i], i))
    if len(ranked) < p.identities:
        raise DataError(f"{private.layout}: the protocol takes the {p.identities} identities with most images, "
                        f"but the data has {len(ranked)} identities")
    chosen = ranked[: p.identities]
    label = {ident: k for k, ident in enumerate(chosen)}
    rel = lambda f: f.relative_to(private.base).as_posix()  # noqa: E731
    by_id: dict[str, list[str]] = {i: [] for i in chosen}
    for f, ident in zip(private.files, private.identities):
        if ident in by_id:
            by_id[ident].append(rel(f))
    rng = np.random.default_rng(p.split_seed)
    train, test = [], []
    for ident in chosen:
        names = sorted(by_id[ident])
        names = [names[i] for i in rng.permutation(len(names))]
        if p.max_per_class:
            names = names[: p.max_per_class]
        n_test = max(1, int(round(len(names) * p.test_fraction)))
        if len(names) - n_test < 1:
            raise DataError(f"{private.layout}: identity {ident} has {len(names)} image(s), too few for a train/test split")
        test += [(n, label[ident]) for n in names[:n_test]]
        train += [(n, label[ident]) for n in names[n_test:]]
    if public is None:  # the other identities of the same data
        pool = sorted(rel(f) for f, ident in zip(private.files, private.identities) if ident not in label)
    else:
        pool = [f.relative_to(public.base).as_posix() for f in public.files]
    if not pool:
        raise DataError(f"{private.layout}: no public images left once the {p.identities} private identities are taken")
    if p.public_images is not None:
        if p.public_images > len(pool):
            raise DataError(f"the protocol asks for {p.public_images} public images but only {len(pool)} are available")
        pool = sorted(pool[i] for i in rng.choice(len(pool), p.public_images, replace=False))
    train.sort()
    test.sort()
    return {
        "format": FORMAT,
        "protocol": {"identities": p.identities, "test_fraction": p.test_fraction, "split_seed": p.split_seed,
                     "public_images": p.public_images, "max_per_class": p.max_per_class},
        "private_listing": {"layout": private.kind, "fingerprint": private.fingerprint},
        "public_listing": None if public is None else {"layout": public.kind, "fingerprint": public.fingerprint},
        "identities": chosen,
        "train": [n for n, _ in train], "train_labels": [k for _, k in train],
        "test": [n for n, _ in test], "test_labels": [k for _, k in test],
        "public": pool,
    }


def split_directory(private: Listing) -> Path:
    """Where split files and decoded caches go: ``CALOR_SPLIT_DIR`` if set, else beside the private data."""
    raw = os.environ.get(SPLIT_DIR_ENV, "").strip()
    return Path(raw).expanduser() if raw else private.base


def load_or_make_split(private: Listing, public: Optional[Listing], p: IdentityProtocol, name: str) -> IdentitySplit:
    """Read the split file for this protocol, checking it against the listings, or make and write it."""
    tag = _checksum({"name": name, "protocol": p.__dict__, "public": None if public is None else public.kind})[:12]
    path = split_directory(private) / f"calor-split-{name}-{tag}.json"
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
            body, recorded = {k: v for k, v in saved.items() if k != "checksum"}, saved["checksum"]
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise DataError(f"split file {path} is unreadable ({exc}); delete it to make the split again") from None
        if _checksum(body) != recorded:
            raise DataError(f"split file {path} was modified or is corrupt (its checksum does not match its content); "
                            "delete it to make the split again")
        for part, listing in (("private", private), ("public", public)):
            want = body.get(f"{part}_listing")
            if listing is not None and want is not None and want["fingerprint"] != listing.fingerprint:
                raise DataError(
                    f"the {part} data at {listing.base} differs from the copy the split file {path} was made from "
                    f"(listing fingerprint {listing.fingerprint[:16]} vs {want['fingerprint'][:16]}): results would not be "
                    "comparable. Point --data-root at the original copy, or delete the split file to re-split this one")
    else:
        body = make_identity_split(private, public, p)
        recorded = _checksum(body)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(body | {"checksum": recorded}) + "\n")
            os.replace(tmp, path)
        except OSError as exc:
            raise DataError(f"cannot write the split file {path} ({exc.strerror or exc}); make the directory writable "
                            f"or set {SPLIT_DIR_ENV} to a writable one") from None
    return IdentitySplit(body["identities"], body["train"], body["train_labels"], body["test"], body["test_labels"],
                         body["public"], path, recorded)
