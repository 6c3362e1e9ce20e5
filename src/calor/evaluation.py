"""Judging reconstructions: every metric calor reports for one set of images, computed by one function,
for attack runs and for the floor and ceiling sets alike.

The judges are evaluation classifiers the attacker never sees. By default they are trained on the
private *and* the public classes (the judge is not the attacker): a reconstruction that looks like a
public image, or like nothing, can then be called "none of the private classes" instead of being
forced onto one of them. Two verdicts come out of every judge:

- **closed-set** (the field's acc@1): argmax over the private classes' logits only;
- **open-set**: argmax over every class the judge knows; a public class is a miss.

A judge still puts inputs that are no image at all (a black square, sparse dots, a tiled texture) on a
private class, with confidence near 1. So a hit is counted as **real** (`hit_real`, `attack_acc@1_real`)
only when it is an open-set hit, the image is not blank (`metrics.diversity.degenerate_mask`), and its
features lie within the range of natural images: its Mahalanobis distance to its claimed class
(`metrics.realism`) is at most the `REALISM_QUANTILE` quantile of the same distance on natural held-out
images (private test images to their own class, public images to the private class the judge would
call them). The threshold is computed once per judge and split, and recorded in the metrics.

Per-sample values (hits, confidences, distances) are kept so that `calor.stats` can build intervals
and paired comparisons; aggregate metrics sit next to them.
"""

from __future__ import annotations

import weakref
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
from .metrics.agreement import judge_agreement
from .metrics.diversity import coverage, degenerate_mask, within_class_diversity
from .metrics.fid import eval_fid, fid_min_samples
from .metrics.kid import kernel_inception_distance
from .metrics.knn import nearest_private
from .metrics.pixel import nearest_private_pixels
from .metrics.realism import SHRINKAGE, ClassGaussians, fit_class_gaussians, quantile

COVERAGE_K = 5  # PRDC's k (Naeem et al. 2020)
# The realism threshold: this quantile of natural held-out images' Mahalanobis distance to their class. On the
# shipped mnist judges it keeps >= 99.6 % of the private test images and passes at most 1.5 % of any probe set
# (benchmarks/judge_probe.py); it keeps every hit of a GMI run on the undefended target.
REALISM_QUANTILE = 0.99
REFERENCE_PUBLIC_MAX = 5000  # public images in the realism reference at most (evenly spaced over the split)


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


@dataclass(frozen=True)
class Realism:
    """A judge's realism test: the class Gaussians of its features and the threshold set by natural images."""

    gaussians: ClassGaussians
    reference: torch.Tensor  # the natural held-out images' scores the threshold is the quantile of
    n_test: int  # of which the first n_test are private test images (to their own class), the rest public images
    threshold: float
    quantile: float

    def score(self, feats: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Squared Mahalanobis distance (N,) of each feature row to its claimed class."""
        return self.gaussians.distance(feats, classes)

    def record(self) -> dict[str, Any]:
        """What a row records about the test: the threshold and how it was computed."""
        test = self.reference[: self.n_test]
        return {"score": "mahalanobis", "threshold": self.threshold, "quantile": self.quantile,
                "reference": f"private test images to their own class ({self.n_test}) and public images to the private class "
                             f"the judge's closed-set verdict names ({len(self.reference) - self.n_test})",
                "n_reference": len(self.reference),
                "fit": "class means and one shared covariance of the judge's features of the private training images and, for an "
                       "open-set judge, of the public images in the non-private class it names",
                "shrinkage": SHRINKAGE,
                "private_test_accepted": (test <= self.threshold).double().mean().item() if len(test) else None}


_REALISM: dict[tuple[str, ...], Realism] = {}
# judges built in memory (calor.audit's): memoised on the model object while its weights are unchanged (every
# in-place update bumps a tensor's version counter), so that an audit fits each judge's test once
_REALISM_IN_MEMORY: "weakref.WeakKeyDictionary[nn.Module, dict[tuple[Any, ...], Realism]]" = weakref.WeakKeyDictionary()


def _weights_version(model: nn.Module) -> tuple[int, ...]:
    return tuple(t._version for t in (*model.parameters(), *model.buffers()))


def realism(judge: Judge, data: SplitData, q: float = REALISM_QUANTILE) -> Realism:
    """The realism test of `judge` on `data`, computed once per process for a judge artifact (keyed like its
    private features; a judge built in memory is memoised on its model object while its weights are unchanged).

    Fit: the judge's features of every private training image (its class) and, for a judge that knows classes
    beyond the private ones (the public classes), of its public training images (`SplitData.judge_public`),
    each in the non-private class the judge names for it (public labels are not needed, nor trusted:
    `calor.audit` has none). Reference: private test images to their own class, and public images no model
    saw (`SplitData.public_reference`, at most `REFERENCE_PUBLIC_MAX`, evenly spaced) to the private class
    the judge's closed-set verdict names; the threshold is the `q` quantile of their scores."""
    stamp = _weights_stamp(judge.path) if judge.hash and judge.path else ""
    key = (judge.hash, stamp, str(data.info.get("indices_sha256")), repr(q))
    if stamp and key in _REALISM:
        return _REALISM[key]
    memo_key = (id(data), str(data.info.get("indices_sha256")), repr(q), _weights_version(judge.model))
    if not stamp:
        known = _REALISM_IN_MEMORY.get(judge.model, {})
        if memo_key in known:
            return known[memo_key]
    k, num_classes = judge.num_private, int(judge.model.num_classes)
    pub_x = data.public_reference()
    if len(pub_x) > REFERENCE_PUBLIC_MAX:
        pub_x = pub_x[torch.linspace(0, len(pub_x) - 1, REFERENCE_PUBLIC_MAX).round().long()]
    feats, labels = [predict(judge.model, data.x_train, features=True)], [data.y_train]
    reference = []
    if len(data.x_test):
        reference.append((predict(judge.model, data.x_test, features=True), data.y_test))
    if len(pub_x):
        pub_feats, pub_logits = predict(judge.model, pub_x, features=True), predict(judge.model, pub_x)
        reference.append((pub_feats, pub_logits[:, :k].argmax(1)))
    if judge.open_set:  # a judge that knows classes beyond the private ones: its public images, by its verdict among those
        fit_x = data.judge_public()[0]
        if len(fit_x):
            same = fit_x is pub_x  # a pool that was not cut: its reference images are the judge's own
            fit_feats = pub_feats if same else predict(judge.model, fit_x, features=True)
            fit_logits = pub_logits if same else predict(judge.model, fit_x)
            feats.append(fit_feats)
            labels.append(fit_logits[:, k:].argmax(1) + k)
    if not reference:
        raise MetricError("realism: no natural reference images (neither private test nor public images)")
    gaussians = fit_class_gaussians(torch.cat(feats), torch.cat(labels), num_classes)
    scores = torch.cat([gaussians.distance(f, c) for f, c in reference])
    n_test = len(data.x_test)
    out = Realism(gaussians, scores, n_test, quantile(scores, q), q)
    if stamp:
        _REALISM[key] = out
    else:
        _REALISM_IN_MEMORY[judge.model] = {memo_key: out}  # only the latest: an older version of the weights is gone
    return out


def judge_verdicts(judge: Judge, images: torch.Tensor, labels: torch.Tensor, data: SplitData, *,
                   blank: torch.Tensor | None = None, feats: torch.Tensor | None = None,
                   test: Realism | None = None) -> dict[str, torch.Tensor]:
    """`verdicts` plus the realism test (`realism(judge, data)` unless given): "mahalanobis" (the score),
    "realistic" (within the threshold) and "hit_real" (an open-set hit on an image that is not blank and is
    realistic)."""
    v = verdicts(judge, images, labels)
    feats = predict(judge.model, images, features=True) if feats is None else feats
    blank = degenerate_mask(images) if blank is None else blank
    test = realism(judge, data) if test is None else test
    v["mahalanobis"] = test.score(feats, labels)
    v["realistic"] = v["mahalanobis"] <= test.threshold
    v["hit_real"] = v["hit_open"] & ~blank & v["realistic"]
    return v


def judge_images(images: torch.Tensor, labels: torch.Tensor, data: SplitData, judges: list[Judge]) -> dict[str, Any]:
    """Every metric of a set of labelled images (reconstructions, or a floor/ceiling set) against the
    private training images of the classes they claim, in the first judge's eyes (accuracies and their
    per-sample values: every judge, with how far the judges agree).

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
    feats = predict(primary.model, images, features=True)
    blank = degenerate_mask(images)
    tests = [realism(j, data) for j in judges]
    v = judge_verdicts(primary, images, labels, data, blank=blank, feats=feats, test=tests[0])
    priv_feats = _private_features(primary, data, classes, priv_x)
    knn, nearest = nearest_private(feats, labels, priv_feats, priv_y)
    pixels = nearest_private_pixels(images, labels, priv_x, priv_y)
    m: dict[str, Any] = {
        "attack_acc@1": v["hit"].float().mean().item(),
        "attack_acc@1_open": v["hit_open"].float().mean().item(),
        "attack_acc@1_real": v["hit_real"].float().mean().item(),
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
    m["realism"] = {**tests[0].record(), "judge": primary.name, "accepted": v["realistic"].float().mean().item()}
    m["judges"] = {}
    for j, test in zip(judges, tests):
        vj = v if j is primary else judge_verdicts(j, images, labels, data, blank=blank, test=test)
        m["judges"][j.name] = {
            "acc@1": vj["hit"].float().mean().item(), "acc@1_open": vj["hit_open"].float().mean().item(),
            "acc@1_real": vj["hit_real"].float().mean().item(), "confidence": vj["confidence"].mean().item(),
            "natural_acc": j.natural_acc, "realism": {**test.record(), "accepted": vj["realistic"].float().mean().item()},
            "per_sample": {"hit": vj["hit"].int().tolist(), "hit_open": vj["hit_open"].int().tolist(),
                           "hit_real": vj["hit_real"].int().tolist(), "confidence": vj["confidence"].tolist(),
                           "mahalanobis": vj["mahalanobis"].tolist()}}
    m["judge_agreement"] = {key: judge_agreement({name: j["per_sample"][key] for name, j in m["judges"].items()})
                            for key in ("hit", "hit_open", "hit_real")}
    per_sample = {
        "hit": v["hit"].int().tolist(), "hit_open": v["hit_open"].int().tolist(), "hit_real": v["hit_real"].int().tolist(),
        "confidence": v["confidence"].tolist(), "confidence_open": v["confidence_open"].tolist(),
        "knn_dist": knn.tolist(), "mahalanobis": v["mahalanobis"].tolist(), "pixel_mse": pixels["mse"].tolist(),
        "ssim": pixels["ssim"].tolist(),
        "degenerate": blank.int().tolist(),
    }
    nearest_index = torch.nonzero(mask).view(-1)[nearest].tolist()  # into x_train
    return {"metrics": m, "per_sample": per_sample, "nearest_private_index": nearest_index}


def probe_judges(judges: list[Judge], data: SplitData, sets: dict[str, torch.Tensor]) -> dict[str, dict[str, dict[str, float]]]:
    """How often each judge calls each probe set (`metrics.probes.probe_images`) a private class. Every probe
    image is labelled with the private class the judge's closed-set verdict names (the most favourable claim
    an attack could make for it), so "closed" is always 1; "open": the open-set verdict is that private class;
    "realistic": within the realism threshold; "hit_real": counted as a hit under the realism rule."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for j in judges:
        out[j.name], test = {}, realism(j, data)
        for name, x in sets.items():
            claimed = predict(j.model, x)[:, : j.num_private].argmax(1)
            v = judge_verdicts(j, x, claimed, data, test=test)
            out[j.name][name] = {"n": len(x), "closed": v["hit"].float().mean().item(), "open": v["hit_open"].float().mean().item(),
                                 "degenerate": degenerate_mask(x).float().mean().item(),
                                 "realistic": v["realistic"].float().mean().item(), "hit_real": v["hit_real"].float().mean().item()}
    return out


# ---- floors and ceiling: the same metrics on images no attack produced ----

CALIBRATION_SETS = ("floor: prior", "floor: public", "ceiling: private test")


def _pick(pool_size: int, seed: int, label: int, restart: int) -> int:
    return sample_seed(seed, label, restart) % pool_size


def calibration_images(name: str, data: SplitData, classes: list[int], per_class: int, seed: int,
                       generator: nn.Module | None = None, clamp: float = 1.0) -> Reconstructions:
    """Images that bound what a metric can say, labelled like an attack's reconstructions:

    - `floor: prior`: the GAN prior's samples at the latents every latent attack of this seed starts from
      (an attack with zero iterations);
    - `floor: public`: public images that neither the judges nor the prior saw (the public pool's holdout),
      each labelled as a private class (what the attacker could start with);
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
    elif name == "floor: public":  # images no model saw (the pool's holdout, where the scenario cuts one)
        pool = data.public_reference()
        images = torch.stack([pool[_pick(len(pool), seed, c, j)] for c in classes for j in range(per_class)])
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
