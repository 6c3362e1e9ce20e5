"""Agreement between judges: where two evaluation models give different verdicts on the same images, an
attack accuracy measured by one of them is a statement about that judge as much as about the attack."""

from __future__ import annotations

from itertools import combinations
from typing import Any, Sequence

import torch

from ..errors import MetricError


def _as_tensor(v: Sequence[int] | torch.Tensor) -> torch.Tensor:
    return (v if isinstance(v, torch.Tensor) else torch.as_tensor(list(v))).detach().cpu().long().view(-1)


def cohen_kappa(a: Sequence[int] | torch.Tensor, b: Sequence[int] | torch.Tensor) -> float | None:
    """Cohen's kappa of two raters' verdicts on the same items (any categories): (p_o - p_e) / (1 - p_e),
    p_o the observed agreement, p_e the agreement expected from each rater's own category rates. None where
    it is undefined: both raters gave every item the same single category (p_e = 1)."""
    x, y = _as_tensor(a), _as_tensor(b)
    if len(x) != len(y) or len(x) == 0:
        raise MetricError(f"Cohen's kappa: {len(x)} and {len(y)} verdicts")
    observed = (x == y).double().mean().item()
    cats = torch.cat([x, y]).unique()
    expected = sum((x == c).double().mean().item() * (y == c).double().mean().item() for c in cats.tolist())
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def judge_agreement(verdicts: dict[str, Sequence[int] | torch.Tensor]) -> dict[str, dict[str, Any]]:
    """For every pair of judges (in the given order), the share of images on which their verdicts agree and
    Cohen's kappa: {"<a> | <b>": {"agreement": ..., "kappa": ..., "n": ...}}. One judge: no pairs."""
    out = {}
    for (na, va), (nb, vb) in combinations(verdicts.items(), 2):
        x, y = _as_tensor(va), _as_tensor(vb)
        if len(x) != len(y) or len(x) == 0:
            raise MetricError(f"judge agreement: {na} has {len(x)} verdicts, {nb} {len(y)}")
        out[f"{na} | {nb}"] = {"agreement": (x == y).double().mean().item(), "kappa": cohen_kappa(x, y), "n": len(x)}
    return out
