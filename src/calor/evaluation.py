"""Judging reconstructions: every metric calor reports for one set of images, computed by one function,
for attack runs and for the floor and ceiling sets alike.

The judges are evaluation classifiers the attacker never sees. By default they are trained on the
private *and* the public classes (the judge is not the attacker): a reconstruction that looks like a
public image, or like nothing, can then be called "none of the private classes" instead of being
forced onto one of them. Two verdicts come out of every judge:

- **closed-set** (the field's acc@1): argmax over the private classes' logits only;
- **open-set**: argmax over every class the judge knows; a public class is a miss.

Per-sample values (hits, confidences, distances) are kept so that `calor.stats` can build intervals
and paired comparisons; aggregate metrics sit next to them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .artifacts import WEIGHTS
from .attacks.base import Reconstructions, initial_latents, sample_seed
from .data.splits import SplitData
from .errors import MetricError
from .metrics.accuracy import predict
from .metrics.diversity import coverage, degenerate_mask, within_class_diversity
from .metrics.fid import eval_fid, fid_min_samples
from .metrics.kid import kernel_inception_distance
from .metrics.knn import nearest_private
from .metrics.pixel import nearest_private_pixels

COVERAGE_K = 5  # PRDC's k (Naeem et al. 2020)


@dataclass
class Judge:
    """An evaluation classifier and how to read it: its first `num_private` logits are the private classes."""

    name: str
    model: nn.Module
    num_private: int
    natural_acc: float  # closed-set accuracy on the private test split
    path: str = ""  # its artifact directory
    hash: str = ""  # its cache key hash

    @property
    def open_set(self) -> bool:
        return int(self.model.num_classes) > self.num_private


def verdicts(judge: Judge, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample closed- and open-set hits and true-class confidences of `judge` on `images`."""
    logits = predict(judge.model, images)
    y = labels.view(-1, 1).cpu()
    private = logits[:, : judge.num_private]
    closed_p = private.softmax(1)
    open_p = logits.softmax(1)
    out = {
        "hit": (private.argmax(1) == labels.cpu()),
        "confidence": closed_p.gather(1, y).squeeze(1),
        "hit_open": (logits.argmax(1) == labels.cpu()),
        "confidence_open": open_p.gather(1, y).squeeze(1),
        "public_verdict": logits.argmax(1) >= judge.num_private,  # the judge says: a public class
    }
    if judge.num_private > 5:
        out["hit@5"] = (private.topk(5, dim=1).indices == y).any(1)
    return out


_FEATURES: dict[tuple[str, ...], torch.Tensor] = {}


def _weights_stamp(path: str) -> str:
    """Where a judge's weights are and when they were written: two caches (or a rebuild) can hold judges of
    the same key hash trained apart (e.g. with other thread counts), whose features differ in the last bits."""
    try:
        weights = Path(path).resolve() / WEIGHTS
        return f"{weights}@{weights.stat().st_mtime_ns}"
    except OSError:
        return ""


def _private_features(judge: Judge, data: SplitData, classes: torch.Tensor, priv_x: torch.Tensor) -> torch.Tensor:
    """The judge's features of the attacked classes' private training images, computed once per process
    for a judge artifact (keyed by its hash, its weights file and the split's checksum): a bench judges every
    cell against the same images, and this forward pass was most of the metrics' time."""
    stamp = _weights_stamp(judge.path) if judge.hash and judge.path else ""
    if not stamp:  # a judge built in memory: nothing identifies it safely
        return predict(judge.model, priv_x, features=True)
    key = (judge.hash, stamp, str(data.info.get("indices_sha256")), *map(str, classes.tolist()))
    if key not in _FEATURES:
        _FEATURES[key] = predict(judge.model, priv_x, features=True)
    return _FEATURES[key]


def judge_images(images: torch.Tensor, labels: torch.Tensor, data: SplitData, judges: list[Judge]) -> dict[str, Any]:
    """Every metric of a set of labelled images (reconstructions, or a floor/ceiling set) against the
    private training images of the classes they claim, in the first judge's eyes (accuracies: every judge).

    Returns {"metrics": {...scalars...}, "per_sample": {name: list}, "nearest_private_index": [...]}.
    """
    if not judges:
        raise MetricError("no judge: at least one evaluation model is needed")
    if len(images) != len(labels) or len(images) == 0:
        raise MetricError(f"{len(images)} images for {len(labels)} labels")
    primary = judges[0]
    classes = labels.unique()
    mask = torch.isin(data.y_train, classes)
    priv_x, priv_y = data.x_train[mask], data.y_train[mask]
    v = verdicts(primary, images, labels)
    feats = predict(primary.model, images, features=True)
    priv_feats = _private_features(primary, data, classes, priv_x)
    knn, nearest = nearest_private(feats, labels, priv_feats, priv_y)
    pixels = nearest_private_pixels(images, labels, priv_x, priv_y)
    blank = degenerate_mask(images)
    m: dict[str, Any] = {
        "attack_acc@1": v["hit"].float().mean().item(),
        "attack_acc@1_open": v["hit_open"].float().mean().item(),
        "judge_confidence": v["confidence"].mean().item(),
        "judge_confidence_open": v["confidence_open"].mean().item(),
        "public_verdict_rate": v["public_verdict"].float().mean().item(),
        "knn_dist": knn.mean().item(),
        "pixel_mse": pixels["mse"].mean().item(),
        "ssim": pixels["ssim"].mean().item(),
        "kid": kernel_inception_distance(feats, priv_feats),
        "degenerate_rate": blank.float().mean().item(),
        "n": len(images),
    }
    if "hit@5" in v:
        m["attack_acc@5"] = v["hit@5"].float().mean().item()
    try:
        m["diversity"] = float(within_class_diversity(feats, labels)["mean_pairwise"])
    except MetricError:
        m["diversity"] = None  # one image per class: no pairs
    smallest = int(torch.bincount(priv_y)[classes].min())
    m["coverage"] = coverage(feats, labels, priv_feats, priv_y, k=COVERAGE_K) if smallest > COVERAGE_K else None
    d = int(primary.model.feature_dim)
    if len(images) >= fid_min_samples(d):
        m["eval_fid"] = eval_fid(primary.model, images, priv_x)
    else:  # a covariance from fewer samples than dimensions is rank-deficient: refuse rather than mislead
        m["eval_fid"] = None
    m["judges"] = {}
    for j in judges:
        vj = v if j is primary else verdicts(j, images, labels)
        m["judges"][j.name] = {"acc@1": vj["hit"].float().mean().item(), "acc@1_open": vj["hit_open"].float().mean().item(),
                               "confidence": vj["confidence"].mean().item(), "natural_acc": j.natural_acc}
    per_sample = {
        "hit": v["hit"].int().tolist(), "hit_open": v["hit_open"].int().tolist(),
        "confidence": v["confidence"].tolist(), "confidence_open": v["confidence_open"].tolist(),
        "knn_dist": knn.tolist(), "pixel_mse": pixels["mse"].tolist(), "ssim": pixels["ssim"].tolist(),
        "degenerate": blank.int().tolist(),
    }
    nearest_index = torch.nonzero(mask).view(-1)[nearest].tolist()  # into x_train
    return {"metrics": m, "per_sample": per_sample, "nearest_private_index": nearest_index}


# ---- floors and ceiling: the same metrics on images no attack produced ----

CALIBRATION_SETS = ("floor: prior", "floor: public", "ceiling: private test")


def _pick(pool_size: int, seed: int, label: int, restart: int) -> int:
    return sample_seed(seed, label, restart) % pool_size


def calibration_images(name: str, data: SplitData, classes: list[int], per_class: int, seed: int,
                       generator: nn.Module | None = None, clamp: float = 1.0) -> Reconstructions:
    """Images that bound what a metric can say, labelled like an attack's reconstructions:

    - `floor: prior`: the GAN prior's samples at the latents every latent attack of this seed starts from
      (an attack with zero iterations);
    - `floor: public`: public images, each labelled as a private class (what the attacker had to start with);
    - `ceiling: private test`: held-out private images of the class (a perfect reconstruction that is not a
      copy of a training image).
    """
    labels = torch.tensor(classes, dtype=torch.long).repeat_interleave(per_class)
    if name == "floor: prior":
        if generator is None:
            raise MetricError("floor: prior needs the GAN prior's generator")
        device = next(generator.parameters()).device
        z = initial_latents(seed, classes, per_class, generator.z_dim).clamp_(-clamp, clamp)
        with torch.no_grad():
            images = generator.eval()(z.to(device)).cpu()
    elif name == "floor: public":
        images = torch.stack([data.x_public[_pick(len(data.x_public), seed, c, j)] for c in classes for j in range(per_class)])
    elif name == "ceiling: private test":
        rows = []
        for c in classes:
            pool = data.x_test[data.y_test == c]
            if len(pool) == 0:
                raise MetricError(f"ceiling: class {c} has no private test images")
            rows += [pool[_pick(len(pool), seed, c, j)] for j in range(per_class)]
        images = torch.stack(rows)
    else:
        raise MetricError(f"unknown calibration set {name!r}; choose one of {', '.join(CALIBRATION_SETS)}")
    return Reconstructions(images=images, labels=labels)
