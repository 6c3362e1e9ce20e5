"""KNN distance: how close each reconstruction is to its class's nearest private training image."""

from __future__ import annotations

import torch

from ..errors import MetricError


def nearest_private(rec_feats: torch.Tensor, rec_labels: torch.Tensor, priv_feats: torch.Tensor, priv_labels: torch.Tensor,
                    *, exact: bool = False, what: str = "KNN distance") -> tuple[torch.Tensor, torch.Tensor]:
    """For each reconstruction: squared L2 distance to, and index of, the nearest private sample of its class.
    `exact` skips the matrix-product shortcut, so an exact copy gives exactly 0 (no cancellation residue)."""
    if len(rec_feats) == 0:
        raise MetricError(f"{what}: no reconstructions")
    if rec_feats.shape[1:] != priv_feats.shape[1:]:
        raise MetricError(f"{what}: feature shapes differ {tuple(rec_feats.shape)} vs {tuple(priv_feats.shape)}")
    dists = torch.empty(len(rec_feats), dtype=torch.float64)
    index = torch.empty(len(rec_feats), dtype=torch.long)
    for c in rec_labels.unique().tolist():
        members = torch.nonzero(priv_labels == c).view(-1)
        if len(members) == 0:
            raise MetricError(f"{what}: class {c} has no private images")
        rows = torch.nonzero(rec_labels == c).view(-1)
        mode = "donot_use_mm_for_euclid_dist" if exact else "use_mm_for_euclid_dist_if_necessary"
        d = torch.cdist(rec_feats[rows].double(), priv_feats[members].double(), compute_mode=mode).pow(2)
        best, arg = d.min(dim=1)
        dists[rows], index[rows] = best, members[arg]
    return dists, index


def knn_distance(rec_feats: torch.Tensor, rec_labels: torch.Tensor, priv_feats: torch.Tensor, priv_labels: torch.Tensor) -> float:
    """Mean over reconstructions of the squared L2 feature distance to the nearest private image of the
    attacked class (lower = more leakage)."""
    dists, _ = nearest_private(rec_feats, rec_labels, priv_feats, priv_labels)
    return dists.mean().item()
