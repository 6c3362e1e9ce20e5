"""Add a defense: register it, and every calor command and API call can train and attack it.

    python examples/add_a_defense.py [--tiny]

The defense here is the confidence penalty of Pereyra et al. (ICLR 2017 workshop, "Regularizing neural
networks by penalizing confident output distributions"): cross-entropy minus beta times the entropy of the
prediction, which, like CALoR's CA loss, lowers the confidence a model-inversion attack climbs.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

import calor
from calor.defenses.base import DEFENSES, Defense, Stage
from calor.errors import ConfigError


@dataclass(frozen=True)
class ConfidencePenaltyConfig:
    """beta: the entropy weight (the paper's 0.1-2.0)."""

    beta: float = 0.5

    def __post_init__(self) -> None:  # validated when the defense is built or a scenario names it
        if self.beta < 0:
            raise ConfigError(f"beta={self.beta}: the entropy weight must be >= 0")


class ConfidencePenalty(Defense):
    """One cross-entropy stage with the scenario's budget (Defense's default `stages`); only the loss changes."""

    name = "confidence-penalty"
    paper = "Pereyra et al., ICLR 2017 workshop"
    Config = ConfidencePenaltyConfig

    def loss(self, stage: Stage, logits: torch.Tensor, y: torch.Tensor, extras: dict[str, Any]) -> torch.Tensor:
        log_p = logits.log_softmax(1)
        entropy = -(log_p.exp() * log_p).sum(1).mean()
        return F.cross_entropy(logits, y) - self.config.beta * entropy


if ConfidencePenalty.name not in DEFENSES:  # registering twice in one process is an error
    DEFENSES.register(ConfidencePenalty.name)(ConfidencePenalty)


def main(tiny: bool = False) -> dict[str, calor.AttackRun]:
    scenario = calor.load_scenario("mnist")
    if tiny:
        scenario = scenario.with_overrides({"resolution": "16", "data.max_per_class": "40", "target.epochs": "2",
                                            "target.width": "8", "evaluation.epochs": "2", "evaluation.width": "4", "extra_judges": "",
                                            "prior.steps": "10", "prior.kind": "dcgan", "attack.iterations": "8",
                                            "attack.per_class": "2"})
    ws = calor.Workspace(cache="runs/examples-cache")
    runs = {}
    for defense, settings in (("none", None), ("confidence-penalty", {"beta": 1.0})):
        target = calor.train_target(scenario, defense, seed=2, settings=settings, ws=ws)
        runs[defense] = calor.attack_target(scenario, target, "gmi", seed=2, ws=ws)
        m = runs[defense].metrics
        print(f"{defense:<20} natural acc {target.meta['metrics']['natural_acc']:.3f}  mean train confidence "
              f"{target.meta['metrics']['train_confidence']['mean']:.3f}  GMI acc@1 {m['attack_acc@1']:.3f}  knn {m['knn_dist']:.2f}")
    return runs


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="16x16 images and tiny budgets (seconds)")
    main(parser.parse_args().tiny)
