"""How often calor's marks fire under the null, and how often they detect a planted effect, on synthetic
per-sample data with seed-level variance (the structure of a bench: k seeds x m paired reconstructions).

    python benchmarks/seed_inference_calibration.py [--reps 1000]

Prints the false-positive rate of the seed-level paired t-test (what the marks use), of the sign-flip
test over seeds, and of the pair-level test that treats reconstructions as independent, then the power
at the number of seeds `calor.stats.seeds_needed` asks for.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from calor.stats import seed_level_paired, seeds_needed


def binary_null(rng: np.random.Generator, k: int, m: int, base: float, sd_logit: float) -> tuple[dict, dict]:
    logit = math.log(base / (1 - base))
    a, b = {}, {}
    for s in range(k):
        shared = rng.normal(0, sd_logit)
        pa, pb = (1 / (1 + math.exp(-(logit + shared + rng.normal(0, sd_logit)))) for _ in range(2))
        a[s], b[s] = (rng.random(m) < pa).astype(float), (rng.random(m) < pb).astype(float)
    return a, b


def normal_grid(rng: np.random.Generator, k: int, m: int, delta: float, sd_effect: float, sd_noise: float) -> tuple[dict, dict]:
    a, b = {}, {}
    for s in range(k):
        shared = rng.normal(0, 0.5)
        a[s] = shared + delta + rng.normal(0, sd_effect) + rng.normal(0, sd_noise, m)
        b[s] = shared + rng.normal(0, sd_noise, m)
    return a, b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=1000)
    args = ap.parse_args()
    rng = np.random.default_rng(20261203)
    print(f"null, 0/1 hits (base rate 0.7, seed logit sd 0.8), {args.reps} replications")
    print(f"{'seeds':>5} {'per seed':>8} {'t over seeds':>13} {'sign flip over seeds':>21} {'pairs as independent':>21}")
    for k, m in ((5, 40), (10, 40), (10, 8)):
        t = flip = naive = 0
        for _ in range(args.reps):
            res = seed_level_paired(*binary_null(rng, k, m, 0.7, 0.8), n_perm=2000)
            t += res["p_value"] < 0.05
            flip += res["p_sign_flip"] < 0.05
            naive += res["p_naive"] < 0.05
        print(f"{k:>5} {m:>8} {t / args.reps:>13.3f} {flip / args.reps:>21.3f} {naive / args.reps:>21.3f}")
    m, sd_effect, sd_noise = 40, 0.06, 0.3
    sd = math.sqrt(sd_effect**2 + 2 * sd_noise**2 / m)
    print(f"\nplanted effect, continuous values (seed-level sd of the difference {sd:.3f})")
    print(f"{'delta':>6} {'seeds needed (80 %)':>20} {'observed power':>15}")
    for delta in (-0.05, -0.1, -0.2):
        k = seeds_needed(delta, sd)
        hits = sum(seed_level_paired(*normal_grid(rng, k, m, delta, sd_effect, sd_noise), n_perm=200)["p_value"] < 0.05
                   for _ in range(args.reps))
        print(f"{delta:>6} {k:>20} {hits / args.reps:>15.3f}")


if __name__ == "__main__":
    main()
