"""Seed-level inference: the marks are calibrated under the null and have the power the computation promises.

Synthetic per-sample data with the structure of a bench: k seeds, m paired reconstructions per seed, a
random effect per seed shared by both arms (same prior and latents: pairing), a random defense effect per
seed (target-to-target variation) and per-reconstruction noise. The unit of replication is the seed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from calor.errors import MetricError
from calor.stats import (intraclass_correlation, paired_t_power, seed_level_mean, seed_level_paired,
                         seed_level_proportion, seeds_needed)
from calor.summary import aa_calibration, comparisons, replica_of

REPS = 300


def _normal_grid(rng: np.random.Generator, k: int, m: int, delta: float, sd_seed: float, sd_effect: float,
                 sd_noise: float) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    a, b = {}, {}
    for s in range(k):
        shared = rng.normal(0, sd_seed)  # the seed's prior and latents, common to both arms
        effect = delta + rng.normal(0, sd_effect)  # this seed's defense effect
        a[s] = shared + effect + rng.normal(0, sd_noise, m)
        b[s] = shared + rng.normal(0, sd_noise, m)
    return a, b


def _binary_grid(rng: np.random.Generator, k: int, m: int, base: float, sd_logit: float) -> tuple[dict, dict]:
    """Clustered 0/1 hits: a logit per seed and arm around `base` (both arms the same under the null)."""
    logit = math.log(base / (1 - base))
    a, b = {}, {}
    for s in range(k):
        shared = rng.normal(0, sd_logit)
        pa, pb = (1 / (1 + math.exp(-(logit + shared + rng.normal(0, sd_logit)))) for _ in range(2))
        a[s] = (rng.random(m) < pa).astype(float)
        b[s] = (rng.random(m) < pb).astype(float)
    return a, b


@pytest.mark.timeout(120)
def test_seed_level_marks_hold_their_level_where_pair_level_marks_do_not() -> None:
    rng = np.random.default_rng(20261203)
    fired, naive = 0, 0
    for _ in range(REPS):
        a, b = _binary_grid(rng, k=10, m=40, base=0.7, sd_logit=0.8)
        res = seed_level_paired(a, b, n_perm=2000)
        fired += res["p_value"] < 0.05
        naive += res["p_naive"] < 0.05
    # 300 null replications: the 95 % binomial range of a 5 % test is about 0.027-0.080
    assert fired / REPS <= 0.08
    # the test that took 400 clustered pairs as independent fires several times too often
    assert naive / REPS >= 0.2


@pytest.mark.timeout(120)
def test_seed_level_test_detects_the_effect_the_power_computation_promises() -> None:
    rng = np.random.default_rng(7)
    m, sd_effect, sd_noise, delta = 40, 0.06, 0.3, -0.1
    sd = math.sqrt(sd_effect**2 + 2 * sd_noise**2 / m)  # sd of a seed's mean difference
    k = seeds_needed(delta, sd, power=0.8)
    assert 2 <= k <= 20
    hits = sum(seed_level_paired(*_normal_grid(rng, k, m, delta, 0.5, sd_effect, sd_noise), n_perm=200)["p_value"] < 0.05
               for _ in range(REPS))
    assert hits / REPS >= 0.72  # >= 0.8 promised; 300 replications leave about +-0.05 of Monte Carlo error
    nulls = sum(seed_level_paired(*_normal_grid(rng, k, m, 0.0, 0.5, sd_effect, sd_noise), n_perm=200)["p_value"] < 0.05
                for _ in range(REPS))
    assert nulls / REPS <= 0.08


def test_paired_t_power_matches_known_values() -> None:
    # delta / sd = 1 with 10 seeds: the paired t-test's power is 0.803 (noncentral t, 9 df)
    assert paired_t_power(10, 1.0, 1.0) == pytest.approx(0.8031, abs=2e-3)
    assert seeds_needed(1.0, 1.0) == 10
    assert seeds_needed(-1.0, 1.0) == 10  # direction does not matter for a two-sided test
    with pytest.raises(MetricError):
        seeds_needed(0.0, 1.0)


def test_seed_level_paired_by_hand() -> None:
    a = {1: np.array([1.0, 1.0]), 2: np.array([0.0, 1.0]), 3: np.array([1.0, 0.0])}
    b = {1: np.array([0.0, 0.0]), 2: np.array([0.0, 0.0]), 3: np.array([0.0, 0.0])}
    res = seed_level_paired(a, b)
    d = np.array([1.0, 0.5, 0.5])
    se = d.std(ddof=1) / math.sqrt(3)
    assert res["difference"] == pytest.approx(d.mean())
    assert res["t"] == pytest.approx(d.mean() / se)
    half = 4.302652729911275 * se  # t(0.975, 2)
    assert (res["low"], res["high"]) == pytest.approx((d.mean() - half, d.mean() + half))
    assert res["p_sign_flip"] == pytest.approx(2 / 8)  # every seed positive: 2 of 8 sign patterns as extreme
    assert res["per_seed"] == {"1": 1.0, "2": 0.5, "3": 0.5} and res["n_seeds"] == 3 and res["n_pairs"] == 6
    with pytest.raises(MetricError, match="two seeds"):
        seed_level_paired({1: np.ones(3)}, {1: np.zeros(3)})


def test_identical_seed_differences_fall_back_to_the_sign_flip() -> None:
    a = {s: np.ones(10) for s in range(4)}
    b = {s: np.zeros(10) for s in range(4)}
    res = seed_level_paired(a, b)
    assert res["p_value"] == res["p_sign_flip"] == pytest.approx(2 / 16)
    same = seed_level_paired(a, a)
    assert same["p_value"] == 1.0 and same["difference"] == 0.0


def test_proportion_interval_never_collapses_and_widens_with_seed_spread() -> None:
    full = seed_level_proportion({s: np.ones(40) for s in range(5)})
    assert full["estimate"] == 1.0 and full["high"] == 1.0 and 0.9 < full["low"] < 1.0
    empty = seed_level_proportion({s: np.zeros(40) for s in range(5)})
    assert empty["low"] == 0.0 and 0.0 < empty["high"] < 0.1
    homogeneous = seed_level_proportion({s: np.array([1.0] * 20 + [0.0] * 20) for s in range(5)})
    spread = seed_level_proportion({s: np.array([1.0] * (4 + 8 * s) + [0.0] * (36 - 8 * s)) for s in range(5)})
    assert homogeneous["estimate"] == spread["estimate"] == 0.5
    assert spread["high"] - spread["low"] > 2 * (homogeneous["high"] - homogeneous["low"])
    assert spread["design_effect"] > 5 and homogeneous["design_effect"] == 1.0
    one = seed_level_proportion({0: np.ones(40)})
    assert one["method"].startswith("one seed") and one["low"] == pytest.approx(0.9124, abs=1e-4)


def test_seed_level_mean_uses_seed_means() -> None:
    res = seed_level_mean({0: np.array([1.0, 3.0]), 1: np.array([4.0, 6.0]), 2: np.array([7.0, 9.0])})
    assert res["estimate"] == pytest.approx(5.0)
    half = 4.302652729911275 * 3.0 / math.sqrt(3)
    assert (res["low"], res["high"]) == pytest.approx((5 - half, 5 + half))


def test_intraclass_correlation() -> None:
    assert intraclass_correlation({0: np.zeros(5), 1: np.ones(5)}) == 1.0  # all variance between seeds
    rng = np.random.default_rng(0)
    assert intraclass_correlation({s: rng.normal(size=200) for s in range(20)}) < 0.05
    assert intraclass_correlation({0: np.ones(3), 1: np.ones(3)}) == 0.0


def _row(label: str, seed: int, hits: list[int]) -> dict:
    return {"label": label, "defense": label.split("~")[0], "attack": "gmi", "seed": seed, "classes": [0], "per_class": len(hits),
            "n": len(hits), "per_sample": {"hit": hits}}


@pytest.mark.timeout(60)
def test_aa_replicates_form_their_own_family_and_report_a_false_positive_rate() -> None:
    rng = np.random.default_rng(3)
    rows = []
    for s in range(8):
        p = 0.5 + 0.1 * rng.normal()
        rows += [_row("none", s, (rng.random(30) < p).astype(int).tolist()),
                 _row("none~aa1", s, (rng.random(30) < p).astype(int).tolist())]
    assert replica_of("none~aa1") == "none" and replica_of("none") is None and replica_of("calor[rank=2]") is None
    comps = comparisons(rows, ("attack_acc@1",), primary={"pairs": ["none~aa1 vs none"]})
    assert [c["family"] for c in comps] == ["a/a"]  # an A/A pair is never the primary family, whatever is declared
    aa = aa_calibration(comps)
    assert aa["comparisons"] == 1 and aa["pairs"] == [("none~aa1", "none")] and aa["unadjusted"] in (0, 1)
    assert aa_calibration(comparisons([r for r in rows if r["label"] == "none"])) is None


def test_primary_conclusions_are_recomputed_under_every_judge() -> None:
    from calor.summary import by_judge

    rng = np.random.default_rng(11)
    rows = []
    for s in range(6):
        for label, p_a, p_b in (("none", 0.9, 0.9), ("calor", 0.4, 0.85)):  # judge A sees a drop, judge B barely
            a = (rng.random(40) < p_a).astype(int).tolist()
            b = (rng.random(40) < p_b).astype(int).tolist()
            rows.append({**_row(label, s, a), "judges": {"A": {"per_sample": {"hit": a}}, "B": {"per_sample": {"hit": b}}}})
    comps = comparisons(rows, ("attack_acc@1",), primary={"pairs": ["calor vs none"], "metrics": ["attack_acc@1"]})
    (entry,) = by_judge(rows, comps)
    assert set(entry["judges"]) == {"A", "B"} and entry["significant"]
    assert entry["judges"]["A"]["difference"] == pytest.approx(comps[0]["difference"])  # A is the primary judge here
    assert entry["judges"]["A"]["p_value"] < 0.05 and entry["judges"]["B"]["p_value"] >= 0.05
    assert entry["holds"] is False  # significant for the primary judge, not under B: the conclusion does not hold
