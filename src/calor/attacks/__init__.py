"""Attacks: one file each, registered in ATTACKS; the target is reached only through an oracle."""

from . import gmi, kedmi, lomma  # noqa: F401  (registration)
from . import brepmi, lokt, mirror_b  # noqa: F401  (registration)
from . import adaptive_bpda, adaptive_logit, adaptive_pstar, adaptive_surrogate, plgmi  # noqa: F401  (registration)
from .base import ATTACKS, Attack, Reconstructions, build_attack, describe
from .gmi import GMI, GMIConfig
from .oracle import BlackBoxOracle, LabelOnlyOracle, ThreatModel, WhiteBoxOracle, make_oracle
from .priors import GanPrior, train_gan

__all__ = [
    "ATTACKS", "Attack", "BlackBoxOracle", "GMI", "GMIConfig", "LabelOnlyOracle", "Reconstructions",
    "ThreatModel", "WhiteBoxOracle", "build_attack", "describe", "make_oracle", "train_gan", "GanPrior",
]
