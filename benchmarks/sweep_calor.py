"""Small CALoR sweep on a scenario: rank x (gamma, CA optimiser, CA lr), one seed, GMI attack.

Prints natural accuracy, mean true-class confidence after each stage, GMI attack accuracy and KNN
distance per setting; used to choose the `calor` defaults of the built-in `mnist` scenario. This is a
TUNING run: use only the scenario's `tuning_seeds` (the script refuses others), so that published
results (`calor bench` on the scenario's `seeds`) stay an independent test of what it chooses.

    .venv/bin/python benchmarks/sweep_calor.py [--scenario mnist] [--seed 0] [--ranks 2,4,16]
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

from calor import ConfigError, Workspace, attack_target, load_scenario, train_target
from calor.targets import train_judges
from calor.progress import set_enabled

CA_SETTINGS = [
    {"gamma": 8.0, "ca_optimizer": "sgd", "ca_lr": 2e-5},  # the authors' fine-tune recipe
    {"gamma": 8.0, "ca_optimizer": "adam", "ca_lr": 1e-3},
    {"gamma": 2.0, "ca_optimizer": "adam", "ca_lr": 1e-3},  # p* = 0.61
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scenario", default="mnist")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ranks", default="2,4,16")
    ap.add_argument("--cache", default="runs/cache")
    args = ap.parse_args()
    set_enabled(False)
    sc = load_scenario(args.scenario)
    if sc.tuning_seeds and args.seed not in sc.tuning_seeds:
        raise ConfigError(f"seed {args.seed} is not one of the scenario's tuning seeds {list(sc.tuning_seeds)}")
    ws = Workspace(cache=Path(args.cache))
    ev = train_judges(sc, ws)
    base = train_target(sc, "none", seed=args.seed, ws=ws)
    run = attack_target(sc, base, "gmi", seed=args.seed, ws=ws, judges=ev)
    print(f"{'setting':<40} {'nat_acc':>8} {'conf_lor':>9} {'conf_ca':>8} {'atk@1':>6} {'knn':>7} {'sec':>5}")
    print(f"{'none':<40} {base.meta['metrics']['natural_acc']:>8.4f} {'-':>9} {'-':>8} {run.metrics['attack_acc@1']:>6.3f} {run.metrics['knn_dist']:>7.2f}")
    for rank, ca in itertools.product([int(r) for r in args.ranks.split(",")], CA_SETTINGS):
        t0 = time.perf_counter()
        settings = {"rank": rank, **ca}
        t = train_target(sc, "calor", seed=args.seed, settings=settings, ws=ws)
        r = attack_target(sc, t, "gmi", seed=args.seed, ws=ws, judges=ev)
        by_stage = t.meta["metrics"]["confidence_by_stage"]
        label = f"r={rank} g={ca['gamma']:g} {ca['ca_optimizer']} {ca['ca_lr']:g}"
        print(f"{label:<40} {t.meta['metrics']['natural_acc']:>8.4f} {by_stage['lor']['mean']:>9.4f} {by_stage['ca']['mean']:>8.4f} "
              f"{r.metrics['attack_acc@1']:>6.3f} {r.metrics['knn_dist']:>7.2f} {time.perf_counter() - t0:>5.0f}", flush=True)


if __name__ == "__main__":
    main()
