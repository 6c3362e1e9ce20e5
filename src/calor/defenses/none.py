"""`none`: plain cross-entropy training, the undefended reference."""

from __future__ import annotations

from .base import DEFENSES, Defense


@DEFENSES.register("none")
class NoDefense(Defense):
    """Undefended target: the scenario's architecture trained with cross-entropy."""

    name = "none"
    paper = "-"
