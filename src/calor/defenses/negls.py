"""`negls`: negative label smoothing with the authors' warm-up schedule.

Struppek, Hintersdorf, Kersting, "Be Careful What You Smooth For: Label Smoothing Can Be a Privacy
Shield but Also a Catalyst for Model Inversion Attacks", ICLR 2024. Default alpha = -0.05 (the paper's;
CALoR's authors used -0.01). Loss: (1 - a) * CE + a * mean_c(-log p_c), i.e. cross-entropy against
the target (1 - a) * onehot + a / C; for a < 0 the true class's target exceeds 1 and the others are
negative, so training pushes confidence beyond one-hot and the loss is unbounded below (the logit gaps
keep growing), which flattens the attacker's loss landscape. Same schedule and logging as `ls`
(a = 0 for the first half, linear ramp over the next quarter, full alpha afterwards; `ls_alpha` per epoch).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import collect
from .base import DEFENSES
from .ls import LabelSmoothing, _schedule_problems


@dataclass(frozen=True)
class NegLSConfig:
    """Negative label smoothing: -1 < alpha <= 0 (alpha = 0 is plain cross-entropy)."""

    alpha: float = -0.05
    warmup: bool = True
    warmup_start: float = 0.5
    warmup_end: float = 0.75

    def __post_init__(self) -> None:
        p = _schedule_problems(self)
        if not -1 < self.alpha <= 0:
            p.append(f"alpha={self.alpha}: negative label smoothing needs -1 < alpha <= 0 (use `ls` for alpha > 0)")
        collect(p, "negls settings")


@DEFENSES.register("negls")
class NegativeLabelSmoothing(LabelSmoothing):
    """Cross-entropy with a scheduled negative smoothing factor (defends against model inversion)."""

    name = "negls"
    paper = "Struppek et al., ICLR 2024 (arXiv 2310.06549)"
    Config = NegLSConfig
