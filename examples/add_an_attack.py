"""Add an attack: register it with its threat model, and calor hands it only what that threat model allows.

    python examples/add_an_attack.py [--tiny]

The attack here is a black-box baseline: draw many samples from the public GAN prior, ask the target for
its confidences, and keep, for each attacked class, the samples it is most confident about. It needs no
gradients, so it declares BLACK_BOX and receives an oracle that answers `probs` and `label` only.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import torch

import calor
from calor.attacks.base import ATTACKS, Attack, PriorStore, Reconstructions, initial_latents
from calor.attacks.oracle import BlackBoxOracle, ThreatModel
from calor.errors import ConfigError


@dataclass(frozen=True)
class PriorSearchConfig:
    """samples: prior samples scored per attacked class (the query budget is classes x samples)."""

    samples: int = 512

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ConfigError(f"samples={self.samples}: must be >= 1")


class PriorSearch(Attack):
    name = "prior-search"
    threat_model = ThreatModel.BLACK_BOX
    paper = "a black-box baseline (calor example)"
    Config = PriorSearchConfig

    def prepare(self, oracle: BlackBoxOracle, priors: PriorStore) -> Any:
        return priors.gan()  # the shared GAN prior, trained on public images only

    def _run(self, oracle: BlackBoxOracle, prior: Any, classes: list[int], per_class: int, gen: torch.Generator) -> Reconstructions:
        G = prior.generator
        device = next(G.parameters()).device
        images, labels = [], []
        for c in classes:
            # latents drawn like every calor latent attack's (seeded by run seed, class and index): paired runs
            z = initial_latents(gen.initial_seed(), [c], self.config.samples, G.z_dim).to(device)
            with torch.no_grad():
                x = G(z)
                p = oracle.probs(x)[:, c]  # counted queries; no gradient reaches the attack
            best = p.topk(min(per_class, len(p))).indices
            images.append(x[best].cpu())
            labels += [c] * len(best)
        return Reconstructions(images=torch.cat(images), labels=torch.tensor(labels))


if PriorSearch.name not in ATTACKS:  # registering twice in one process is an error
    ATTACKS.register(PriorSearch.name)(PriorSearch)


def main(tiny: bool = False) -> calor.AttackRun:
    scenario = calor.load_scenario("mnist")
    if tiny:
        scenario = scenario.with_overrides({"resolution": "16", "data.max_per_class": "40", "target.epochs": "2",
                                            "target.width": "8", "evaluation.epochs": "2", "evaluation.width": "4", "extra_judges": "",
                                            "prior.steps": "10", "prior.kind": "dcgan", "attack.per_class": "2"})
    ws = calor.Workspace(cache="runs/examples-cache")
    target = calor.train_target(scenario, "none", seed=2, ws=ws)
    run = calor.attack_target(scenario, target, "prior-search", seed=2, settings={"samples": 64 if tiny else 512}, ws=ws)
    m = run.metrics
    print(f"prior-search on none: acc@1 {m['attack_acc@1']:.3f}, knn {m['knn_dist']:.2f}, {run.reconstructions.queries} queries "
          f"({run.meta['threat_model']})")
    return run


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="16x16 images and tiny budgets (seconds)")
    main(parser.parse_args().tiny)
