"""`ls`: label smoothing with a warm-up schedule (the positive side of Struppek et al.'s study).

Struppek, Hintersdorf, Kersting, "Be Careful What You Smooth For: Label Smoothing Can Be a Privacy
Shield but Also a Catalyst for Model Inversion Attacks", ICLR 2024. Positive smoothing lowers the
true-class confidence but, per the paper, *helps* model-inversion attacks; `negls` is the defense.

Loss (see `losses.smoothed_cross_entropy`): (1 - a) * CE + a * mean_c(-log p_c), a = the scheduled
smoothing factor. Schedule (authors' warm-up, the missing piece in many reproductions): a = 0 for the
first half of each stage's epochs, a linear ramp over the next quarter, the full `alpha` afterwards
(`losses.warmup_factor`; 8 epochs -> 0, 0, 0, 0, alpha/2, alpha, alpha, alpha). The value used in each
epoch is logged in the training history as `ls_alpha`.
Deviation: the authors' scheduler divides the ramp by (epochs - start), so with start = 50% it only
reaches alpha/2 at the end of the ramp and then jumps to alpha; we ramp linearly to alpha as described.
`alpha = 0.1` is a common positive choice, not one prescribed by the paper for this data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..errors import collect
from .base import DEFENSES, Defense, Stage
from .losses import smoothed_cross_entropy, warmup_factor


def _schedule_problems(cfg: Any) -> list[str]:
    p = []
    if not 0 <= cfg.warmup_start <= cfg.warmup_end <= 1:
        p.append(f"warmup_start={cfg.warmup_start}, warmup_end={cfg.warmup_end}: need 0 <= start <= end <= 1 "
                 "(fractions of the epochs)")
    return p


@dataclass(frozen=True)
class LSConfig:
    """Positive label smoothing: 0 <= alpha < 1. `warmup` off = full alpha from the first epoch."""

    alpha: float = 0.1
    warmup: bool = True
    warmup_start: float = 0.5
    warmup_end: float = 0.75

    def __post_init__(self) -> None:
        p = _schedule_problems(self)
        if not 0 <= self.alpha < 1:
            p.append(f"alpha={self.alpha}: positive label smoothing needs 0 <= alpha < 1 (use `negls` for alpha < 0)")
        collect(p, "ls settings")


@DEFENSES.register("ls")
class LabelSmoothing(Defense):
    """Cross-entropy with (scheduled) label smoothing factor alpha; subclass `negls` allows alpha < 0."""

    name = "ls"
    paper = "Struppek et al., ICLR 2024 (arXiv 2310.06549)"
    Config = LSConfig

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.current_alpha = 0.0

    def alpha_at(self, epoch: int, epochs: int) -> float:
        """The smoothing factor of `epoch` (0-based) in a stage of `epochs` epochs."""
        cfg = self.config
        factor = warmup_factor(epoch, epochs, cfg.warmup_start, cfg.warmup_end) if cfg.warmup else 1.0
        return cfg.alpha * factor if factor > 0 else 0.0  # not -0.0 in the logged history

    def on_epoch_start(self, stage: Stage, epoch: int) -> dict[str, float]:
        self.current_alpha = self.alpha_at(epoch, stage.epochs)
        return {"ls_alpha": self.current_alpha}

    def loss(self, stage: Stage, logits: torch.Tensor, y: torch.Tensor, extras: dict[str, Any]) -> torch.Tensor:
        return smoothed_cross_entropy(logits, y, self.current_alpha)
