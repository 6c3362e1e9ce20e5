"""Diversity of reconstructions: blank images, within-class spread, coverage of the private class, and
near-duplicates. Attack accuracy alone rewards an attack that returns one good image per class many times."""

from __future__ import annotations

import torch

from ..errors import MetricError

# Per-image pixel std in [-1, 1] units. A blank (constant) image has std 0. On the embedded MNIST digits
# (5,000 images, calor.data.transforms.to_model_range) the std is: at 32x32 mean 0.54, 1% quantile 0.34,
# min 0.26; at 16x16 mean 0.51, 1% quantile 0.30, min 0.20. 0.1 is half the smallest real digit's std
# and far above 0, so it flags only (nearly) empty images, never a thin digit.
BLANK_STD = 0.1


def degenerate_mask(images: torch.Tensor, std_threshold: float = BLANK_STD) -> torch.Tensor:
    """Boolean (N,) mask of near-constant images: per-image pixel std (in [-1, 1] units) < `std_threshold`."""
    if images.ndim != 4:
        raise MetricError(f"degenerate_mask: expected (N, C, H, W) images, got shape {tuple(images.shape)}")
    return images.detach().flatten(1).double().std(dim=1, correction=0) < std_threshold


def _check(feats: torch.Tensor, labels: torch.Tensor, what: str) -> None:
    if feats.ndim != 2 or len(feats) != len(labels):
        raise MetricError(f"{what}: expected (N, d) features with N labels, got {tuple(feats.shape)} and {len(labels)} labels")
    if len(feats) == 0:
        raise MetricError(f"{what}: no samples")


def within_class_diversity(feats: torch.Tensor, labels: torch.Tensor) -> dict[str, object]:
    """Mean pairwise L2 distance among each class's reconstructions (0 = all identical).

    Classes with a single reconstruction have no pairs and are skipped. Returns {"mean_pairwise": mean
    over classes (each class weighs the same), "per_class": {class: mean pairwise distance}}.
    """
    _check(feats, labels, "within-class diversity")
    x, labels = feats.detach().cpu().double(), labels.cpu()
    per_class = {}
    for c in labels.unique().tolist():
        members = x[labels == c]
        if len(members) >= 2:
            per_class[int(c)] = torch.pdist(members).mean().item()
    if not per_class:
        raise MetricError("within-class diversity: no class has 2 or more reconstructions")
    return {"mean_pairwise": sum(per_class.values()) / len(per_class), "per_class": per_class}


def coverage(fake_feats: torch.Tensor, fake_labels: torch.Tensor, real_feats: torch.Tensor,
             real_labels: torch.Tensor, k: int = 5) -> float:
    """PRDC coverage (Naeem et al. 2020) within each attacked class, averaged over those classes.

    Per class: the fraction of real samples whose k-NN ball (radius = distance to its k-th nearest real
    neighbour of the same class) contains at least one reconstruction of that class. 1 = the reconstructions
    reach every region of the private class; a mode-collapsed attack scores low even when accurate.
    """
    _check(fake_feats, fake_labels, "coverage (reconstructions)")
    _check(real_feats, real_labels, "coverage (private samples)")
    if fake_feats.shape[1] != real_feats.shape[1]:
        raise MetricError(f"coverage: feature dims differ ({fake_feats.shape[1]} vs {real_feats.shape[1]})")
    if k < 1:
        raise MetricError(f"coverage: k must be >= 1, got {k}")
    fake, real = fake_feats.detach().cpu().double(), real_feats.detach().cpu().double()
    fake_labels, real_labels = fake_labels.cpu(), real_labels.cpu()
    per_class = []
    for c in fake_labels.unique().tolist():
        r = real[real_labels == c]
        if len(r) <= k:
            raise MetricError(f"coverage: class {c} has {len(r)} private samples, needs more than k={k}")
        # Sorted row i starts with the self-distance 0, so position k is the k-th nearest *other* sample.
        radius = torch.cdist(r, r).sort(dim=1).values[:, k]
        nearest_fake = torch.cdist(r, fake[fake_labels == c]).min(dim=1).values
        per_class.append((nearest_fake < radius).double().mean().item())  # strict, as in the PRDC reference code
    return sum(per_class) / len(per_class)


def duplicate_rate(feats: torch.Tensor, labels: torch.Tensor, private_feats: torch.Tensor,
                   private_labels: torch.Tensor, rel_threshold: float = 0.05) -> float:
    """Fraction of reconstructions with another reconstruction of the same class closer than
    `rel_threshold` x that class's median pairwise private distance (the scale makes the threshold
    independent of the feature space). A class with one reconstruction contributes no duplicates."""
    _check(feats, labels, "duplicate rate (reconstructions)")
    _check(private_feats, private_labels, "duplicate rate (private samples)")
    if feats.shape[1] != private_feats.shape[1]:
        raise MetricError(f"duplicate rate: feature dims differ ({feats.shape[1]} vs {private_feats.shape[1]})")
    x, p = feats.detach().cpu().double(), private_feats.detach().cpu().double()
    labels, private_labels = labels.cpu(), private_labels.cpu()
    duplicated = torch.zeros(len(x), dtype=torch.bool)
    for c in labels.unique().tolist():
        priv = p[private_labels == c]
        if len(priv) < 2:
            raise MetricError(f"duplicate rate: class {c} has {len(priv)} private samples, needs at least 2 for a scale")
        rows = torch.nonzero(labels == c).view(-1)
        if len(rows) < 2:
            continue
        d = torch.cdist(x[rows], x[rows]).fill_diagonal_(float("inf"))
        duplicated[rows] = d.min(dim=1).values < rel_threshold * torch.pdist(priv).median()
    return duplicated.double().mean().item()
