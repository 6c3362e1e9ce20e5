"""calor.stats: intervals, paired tests, Holm and sample sizes against hand-computed references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest, norm

from calor.errors import MetricError
from calor.stats import (
    design_effect, detectable_difference, hierarchical_bootstrap, holm, paired_difference,
    paired_reconstructions_needed, reconstructions_needed, summarize_binary, wilson_interval,
)

# ----------------------------------------------------------------------------- Wilson


@pytest.mark.parametrize("k, n, expected", [
    (0, 10, (0.0, 0.2775)),       # well-known 95 % Wilson bounds for n = 10
    (10, 10, (0.7225, 1.0)),
    (5, 10, (0.2366, 0.7634)),
])
def test_wilson_known_values(k, n, expected):
    low, high = wilson_interval(k, n)
    assert low == pytest.approx(expected[0], abs=1e-4)
    assert high == pytest.approx(expected[1], abs=1e-4)


@pytest.mark.parametrize("k, n, conf", [(1, 10, 0.95), (37, 50, 0.9), (3, 200, 0.99)])
def test_wilson_bounds_solve_score_equation_and_match_scipy(k, n, conf):
    low, high = wilson_interval(k, n, conf)
    z = norm.ppf(0.5 + conf / 2)
    # Independent definition: the bounds are the p at which the score statistic equals z.
    for p in (low, high):
        assert (k / n - p) ** 2 == pytest.approx(z * z * p * (1 - p) / n, rel=1e-9)
    ref = binomtest(k, n).proportion_ci(confidence_level=conf, method="wilson")
    assert (low, high) == pytest.approx((ref.low, ref.high), abs=1e-10)
    assert low < k / n < high


@pytest.mark.parametrize("k, n, conf", [(-1, 10, 0.95), (11, 10, 0.95), (1, 0, 0.95), (1, 10, 1.0), (1.5, 10, 0.95)])
def test_wilson_rejects_bad_input(k, n, conf):
    with pytest.raises(MetricError):
        wilson_interval(k, n, conf)


def test_summarize_binary():
    out = summarize_binary(np.array([1, 0, 1, 1, 0, 0, 0, 0, 0, 1], dtype=bool))
    assert (out["k"], out["n"], out["rate"]) == (4, 10, 0.4)
    assert (out["low"], out["high"]) == wilson_interval(4, 10)
    with pytest.raises(MetricError):
        summarize_binary(np.array([]))
    with pytest.raises(MetricError):
        summarize_binary(np.array([0, 2, 1]))

# ----------------------------------------------------------------------------- hierarchical bootstrap


def test_bootstrap_contains_estimate_and_reports_sizes():
    rng = np.random.default_rng(0)
    data = {s: rng.normal(1.0, 1.0, size=20 + s) for s in range(4)}
    out = hierarchical_bootstrap(data, n_boot=300)
    pooled = np.concatenate(list(data.values()))
    assert out["estimate"] == pytest.approx(pooled.mean())
    assert out["low"] < out["estimate"] < out["high"]
    assert (out["n_seeds"], out["n"]) == (4, pooled.size)


def test_bootstrap_narrows_with_more_data():
    rng = np.random.default_rng(1)
    small = hierarchical_bootstrap([rng.normal(size=10) for _ in range(3)], n_boot=300)
    large = hierarchical_bootstrap([rng.normal(size=100) for _ in range(30)], n_boot=300)
    assert large["high"] - large["low"] < 0.5 * (small["high"] - small["low"])


def test_bootstrap_resamples_seeds_not_just_observations():
    # Two seeds, each constant: observation-level resampling alone would give a zero-width interval.
    out = hierarchical_bootstrap([np.zeros(10), np.ones(10)], n_boot=300)
    assert out["low"] == 0.0 and out["high"] == 1.0
    single = hierarchical_bootstrap({7: np.array([0.0, 1.0, 0.0, 1.0])}, n_boot=300)
    assert single["n_seeds"] == 1 and single["low"] < 0.5 < single["high"]


def test_bootstrap_custom_statistic_and_determinism():
    rng = np.random.default_rng(2)
    data = [rng.exponential(size=30) for _ in range(3)]
    a = hierarchical_bootstrap(data, statistic=np.median, n_boot=200, rng_seed=5)
    b = hierarchical_bootstrap(data, statistic=np.median, n_boot=200, rng_seed=5)
    c = hierarchical_bootstrap(data, statistic=np.median, n_boot=200, rng_seed=6)
    assert a == b and (a["low"], a["high"]) != (c["low"], c["high"])
    assert a["estimate"] == pytest.approx(np.median(np.concatenate(data)))


@pytest.mark.parametrize("bad", [[], {}, [np.array([])], [np.array([1.0, np.nan])], np.zeros(3)])
def test_bootstrap_rejects_bad_input(bad):
    with pytest.raises(MetricError):
        hierarchical_bootstrap(bad, n_boot=10)

# ----------------------------------------------------------------------------- paired difference


def _hits(rng, rate, shape=(3, 30)):
    return [(rng.random(shape[1]) < rate).astype(float) for _ in range(shape[0])]


def test_paired_detects_clear_difference():
    rng = np.random.default_rng(3)
    a, b = _hits(rng, 0.9), _hits(rng, 0.2)
    out = paired_difference(a, b, n_boot=300, n_perm=1000)
    assert out["difference"] == pytest.approx(np.concatenate(a).mean() - np.concatenate(b).mean())
    assert out["low"] <= out["difference"] <= out["high"] and out["low"] > 0
    assert out["p_value"] == pytest.approx(1 / 1001)  # nothing as extreme among 1000 random flips
    assert out["significant"] is True
    assert (out["n_pairs"], out["n_seeds"]) == (90, 3)


def test_paired_null_identical_arrays():
    rng = np.random.default_rng(4)
    a = _hits(rng, 0.5)
    out = paired_difference(a, [x.copy() for x in a], n_boot=100, n_perm=500)
    assert out["difference"] == 0.0 and out["p_value"] == 1.0 and out["significant"] is False
    assert out["low"] == out["high"] == 0.0


def test_paired_exact_enumeration_for_few_pairs():
    # 3 pairs all +1: only all-plus and all-minus flips reach |sum| = 3, so p = 2/8 exactly.
    out = paired_difference([np.ones(3)], [np.zeros(3)], n_boot=50)
    assert out["p_value"] == 0.25 and out["significant"] is False
    # 4 pairs with differences (1, 1, 1, -1): |sum| >= 2 for patterns with at most one
    # disagreeing sign, 5 of 16, and their mirror images: 10/16.
    out = paired_difference([np.array([1.0, 1, 1, 0])], [np.array([0.0, 0, 0, 1])], n_boot=50)
    assert out["p_value"] == pytest.approx(10 / 16)


def test_paired_is_paired_not_unpaired():
    # b = a - 0.1 plus tiny noise: the large spread of a cancels in the pairs, so the
    # difference is clear even though the two samples overlap heavily.
    rng = np.random.default_rng(5)
    a = {s: rng.normal(0, 5, size=25) for s in (0, 1, 2)}
    b = {s: v - 0.1 + rng.normal(0, 0.01, size=v.size) for s, v in a.items()}
    out = paired_difference(a, b, n_boot=200, n_perm=500)
    assert out["difference"] == pytest.approx(0.1, abs=0.01)
    assert out["significant"] is True


def test_paired_deterministic_under_seed():
    rng = np.random.default_rng(6)
    a, b = _hits(rng, 0.6, (4, 20)), _hits(rng, 0.5, (4, 20))
    first = paired_difference(a, b, n_boot=200, n_perm=300, rng_seed=11)
    assert first == paired_difference(a, b, n_boot=200, n_perm=300, rng_seed=11)
    assert first != paired_difference(a, b, n_boot=200, n_perm=300, rng_seed=12)


def test_paired_shape_mismatch_names_seed():
    with pytest.raises(MetricError, match="seed 3"):
        paired_difference({1: np.ones(4), 3: np.ones(5)}, {1: np.zeros(4), 3: np.zeros(4)}, n_boot=10)
    with pytest.raises(MetricError):
        paired_difference({1: np.ones(4)}, {2: np.ones(4)}, n_boot=10)
    with pytest.raises(MetricError):
        paired_difference([np.ones(4)], [np.ones(4), np.ones(4)], n_boot=10)
    with pytest.raises(MetricError):
        paired_difference([np.ones(4)], [np.ones(4)], confidence=0.0, n_boot=10)

# ----------------------------------------------------------------------------- Holm


def test_holm_known_examples():
    # Sorted: 0.005 <= .05/4, 0.01 <= .05/3, 0.03 > .05/2 -> stop.
    assert holm([0.01, 0.04, 0.03, 0.005]) == [True, False, False, True]
    # Holm rejects all three where Bonferroni (0.05/3) would reject only the first.
    assert holm([0.04, 0.01, 0.02]) == [True, True, True]
    # Step-down stops at the first failure even though 0.045 <= 0.05 on its own.
    assert holm([0.001, 0.03, 0.04, 0.045]) == [True, False, False, False]
    assert holm([0.2], alpha=0.1) == [False]


@pytest.mark.parametrize("bad", [[], [0.1, 1.2], [-0.01], [float("nan")]])
def test_holm_rejects_bad_input(bad):
    with pytest.raises(MetricError):
        holm(bad)

# ----------------------------------------------------------------------------- power / sample size


def test_reconstructions_needed_textbook_value():
    # Pooled-variance (Fleiss, no continuity correction) formula: 198.97 -> 199 per arm.
    assert reconstructions_needed(0.9, 0.8) == 199
    assert reconstructions_needed(0.8, 0.9) == 199
    assert reconstructions_needed(0.9, 0.8, power=0.9) > 199
    assert reconstructions_needed(0.5, 0.2) < reconstructions_needed(0.5, 0.4)
    with pytest.raises(MetricError):
        reconstructions_needed(0.5, 0.5)
    with pytest.raises(MetricError):
        reconstructions_needed(1.2, 0.5)


def test_paired_reconstructions_needed_connor():
    # psi = .9*.2 + .8*.1 = .26: [1.96 sqrt(.26) + .8416 sqrt(.25)]^2 / .01 = 201.7 -> 202.
    assert paired_reconstructions_needed(0.9, 0.8) == 202
    # Correlated pairs (psi = .12) need far fewer: [1.96 sqrt(.12) + .8416 sqrt(.11)]^2 / .01 -> 92.
    assert paired_reconstructions_needed(0.9, 0.8, discordant=0.12) == 92
    with pytest.raises(MetricError):
        paired_reconstructions_needed(0.9, 0.8, discordant=0.05)  # below |p1 - p2|


def test_design_effect():
    assert design_effect(10, 0.1) == pytest.approx(1.9)
    assert design_effect(1, 0.7) == 1.0
    with pytest.raises(MetricError):
        design_effect(10, 1.5)


def test_detectable_difference_round_trip():
    n = reconstructions_needed(0.9, 0.8)
    d = detectable_difference(n, 0.9)
    assert d == pytest.approx(0.1, abs=0.002) and d <= 0.1
    # d is the boundary: a slightly smaller difference needs more than n, a slightly larger one n or fewer.
    assert reconstructions_needed(0.9, 0.9 - d * 0.99) > n
    assert reconstructions_needed(0.9, 0.9 - d * 1.01) <= n
    assert detectable_difference(4 * n, 0.9) < d
    with pytest.raises(MetricError):
        detectable_difference(2, 0.3)  # too few to detect even 0.3 -> 0
    assert math.isfinite(detectable_difference(50, 0.5))
