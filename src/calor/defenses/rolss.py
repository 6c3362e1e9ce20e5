"""RoLSS: remove (or scale down) the skip connections of the last residual stage(s).

Koh et al., "On the Vulnerability of Skip Connections to Model Inversion Attacks", ECCV 2024.
The paper finds that skip connections in the *last* stages of a ResNet carry most of the
information model-inversion attacks exploit, and proposes RoLSS (Removal of Last-Stage Skip
connections); a scaled variant keeps a small fraction of the skip path.

Here a residual block computes ``relu(F(x) + keep_ratio * shortcut(x))`` in the last `last_blocks`
residual blocks (``BasicBlock.residual_scale``); every other block is unchanged.

Deviations / choices, stated:
- Our ResNet has one basic block per stage, so the default ``last_blocks = 1`` is exactly "the last
  stage". Set it higher to reach earlier stages (one block per stage here).
- The paper's optional two-stage training scheme (train with skips, then remove them and fine-tune)
  is not implemented: the skip paths are scaled from the start of training, as in plain RoLSS.
- The shortcut's weights (the average-pool + 1x1 conv + BN of a stage's first block) stay in the module
  even when ``keep_ratio = 0`` so that artifacts keep the standard ResNet state-dict layout; they then
  receive no gradient and contribute nothing.
- ``residual_scale`` is a plain attribute, not part of the state dict: `prepare` sets it from the
  config every time a model is built, including when a saved target is rebuilt.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..errors import ConfigError, collect
from .base import DEFENSES, Defense


@dataclass(frozen=True)
class RoLSSConfig:
    """keep_ratio: the factor on the skip path of the affected blocks (0 = skip removed, RoLSS; the
    paper's scaled variant uses small values such as 0.01). last_blocks: how many residual blocks,
    counted from the back, are affected (1 = the last stage of our 1-block-per-stage ResNet)."""

    keep_ratio: float = 0.0
    last_blocks: int = 1

    def __post_init__(self) -> None:
        p = []
        if not 0.0 <= self.keep_ratio <= 1.0:
            p.append(f"keep_ratio={self.keep_ratio}: must be in [0, 1] (0 removes the skip path, 1 keeps it)")
        if self.last_blocks < 1:
            p.append(f"last_blocks={self.last_blocks}: must be >= 1 (how many of the last residual blocks to change)")
        collect(p, "rolss settings")


@DEFENSES.register("rolss")
class RoLSS(Defense):
    """Scale the skip connections of the last residual block(s) by `keep_ratio` (Koh et al., ECCV 2024)."""

    name = "rolss"
    paper = "Koh et al., On the Vulnerability of Skip Connections to Model Inversion Attacks, ECCV 2024"
    Config = RoLSSConfig
    architectures = ("resnet",)

    def prepare(self, model: nn.Module) -> nn.Module:
        blocks_of = getattr(model, "residual_blocks", None)
        if blocks_of is None:
            raise ConfigError(f"rolss: the model ({type(model).__name__}) has no residual blocks; use target.arch=resnet")
        blocks = blocks_of()
        if self.config.last_blocks > len(blocks):
            raise ConfigError(f"rolss: last_blocks={self.config.last_blocks} but the model has only {len(blocks)} residual blocks")
        for block in blocks[len(blocks) - self.config.last_blocks:]:
            block.residual_scale = float(self.config.keep_ratio)
        return model

    def summary(self) -> dict[str, float | int]:
        return {"keep_ratio": self.config.keep_ratio, "scaled_blocks": self.config.last_blocks}
