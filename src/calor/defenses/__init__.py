"""Defenses: one file each, registered in DEFENSES, run by calor.training.train_classifier."""

from . import calor, none  # noqa: F401  (registration)
from . import bido, ca, lor, ls, ls_ft, mid, negls  # noqa: F401  (registration)
from . import dpsgd, rolss, tl, trapmid  # noqa: F401  (registration)
from .base import DEFENSES, Defense, Stage, build_defense, describe
from .calor import CALoR, CALoRConfig, ca_target_confidence, confidence_adaptation_loss

__all__ = [
    "CALoR", "CALoRConfig", "DEFENSES", "Defense", "Stage", "build_defense", "ca_target_confidence",
    "confidence_adaptation_loss", "describe",
]
