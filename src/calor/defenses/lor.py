"""`lor`: CALoR's low-rank head alone, trained with cross-entropy (no confidence-adaptation stage).

Yu et al., "CALoR: Towards Comprehensive Model Inversion Defense", arXiv 2410.05814 (2024) — the
"LoR" ablation (later versions call it LoFt). Same head and first stage as `calor`
(BN -> Linear(d, r) -> activation -> Linear(r, C), trained end to end with CE); it takes the `CALoR`
class's head and first stage and only drops the CA fine-tune, so `calor` and `lor` with the same rank differ by that stage alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import collect
from ..scenario import ClassifierSpec
from torch import nn

from .base import DEFENSES, Defense, Stage
from .calor import LowRankSettings, cross_entropy_stage, low_rank_head


@dataclass(frozen=True)
class LoRConfig(LowRankSettings):
    """The low-rank head's settings, defaults as `calor` (r = 50 as in the authors' scripts, tanh).
    Set `rank` to the value the scenario uses for `calor` to get a matched ablation."""

    def __post_init__(self) -> None:
        collect(self.low_rank_problems(), "lor settings")


@DEFENSES.register("lor")
class LoR(Defense):
    """Low-rank (tanh) head trained with cross-entropy only: CALoR without its CA stage."""

    name = "lor"
    paper = "Yu et al. 2024, arXiv 2410.05814 (LoR ablation of CALoR)"
    Config = LoRConfig

    def prepare(self, model: nn.Module) -> nn.Module:
        return low_rank_head(model, self.config, self.name)

    def stages(self, budget: ClassifierSpec) -> list[Stage]:
        return [cross_entropy_stage("lor", budget)]
