"""Statistics of model-inversion measurements: intervals, paired tests, multiplicity and power.

An attack's success rate is measured on a handful of trained targets (seeds), each attacked many
times. Reconstructions of one target are not independent (they share its weights), so intervals
resample seeds first and reconstructions second, and power calculations carry a design effect.
Bad input raises MetricError; nothing here returns a default in place of a number it cannot compute.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import optimize
from scipy.stats import nct, norm
from scipy.stats import t as t_dist

from .errors import MetricError

Groups = Mapping[int, Any] | Sequence[Any]

# Up to this many pairs the sign-flip null distribution (2**n sign patterns) is enumerated exactly.
EXACT_PAIRS = 16


# ----------------------------------------------------------------------------- validation helpers

def _check_level(value: float, name: str) -> float:
    """A probability strictly inside (0, 1): confidence, alpha, power."""
    value = float(value)
    if not 0.0 < value < 1.0:
        raise MetricError(f"{name} must lie strictly between 0 and 1, got {value}")
    return value


def _check_prob(value: float, name: str) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise MetricError(f"{name} must be a probability in [0, 1], got {value}")
    return value


def _check_count(value: int, name: str, minimum: int) -> int:
    try:
        value = operator.index(value)
    except TypeError:
        raise MetricError(f"{name} must be an integer, got {value!r}") from None
    if value < minimum:
        raise MetricError(f"{name} must be at least {minimum}, got {value}")
    return value


def _as_array(values: Any, where: str) -> np.ndarray:
    """A non-empty, finite float array, flattened (a classes x per_class array is a plain sample)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        raise MetricError(f"{where} is empty")
    if not np.all(np.isfinite(arr)):
        raise MetricError(f"{where} contains NaN or infinite values")
    return arr


def _groups(values_by_seed: Groups, name: str) -> tuple[list[Any], list[np.ndarray]]:
    """(seed labels, one array per seed) from a {seed: values} mapping or a list of arrays."""
    if isinstance(values_by_seed, Mapping):
        labels = list(values_by_seed)
        arrays = [values_by_seed[k] for k in labels]
    elif isinstance(values_by_seed, (list, tuple)):
        labels = list(range(len(values_by_seed)))
        arrays = list(values_by_seed)
    else:
        raise MetricError(f"{name} must be a dict {{seed: array}} or a list of arrays, got {type(values_by_seed).__name__}")
    if not arrays:
        raise MetricError(f"{name} has no seeds")
    return labels, [_as_array(a, f"{name}[{k!r}]") for k, a in zip(labels, arrays)]


# ----------------------------------------------------------------------------- proportions

def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion k/n.

    With p = k/n and z = Phi^-1(1 - (1 - confidence)/2)::

        centre = (p + z^2/(2n)) / (1 + z^2/n)
        half   = z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/(4n^2))

    Unlike the Wald interval it never collapses to a point at 0/n or n/n, which is exactly where
    attack success rates of a good defense (or a broken one) sit.
    """
    n = _check_count(n, "n", 1)
    k = _check_count(successes, "successes", 0)
    if k > n:
        raise MetricError(f"successes ({k}) cannot exceed n ({n})")
    z = norm.ppf(0.5 + _check_level(confidence, "confidence") / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # At k = 0 (or n) the bound equals 0 (or 1) analytically; pin it so rounding cannot leave it at 1e-17.
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return float(low), float(high)


def summarize_binary(hits: np.ndarray, confidence: float = 0.95) -> dict[str, float | int]:
    """Rate of a 0/1 (or bool) array with its Wilson interval: {"rate", "low", "high", "n", "k"}."""
    arr = _as_array(hits, "hits").ravel()
    if not np.all((arr == 0) | (arr == 1)):
        raise MetricError("hits must contain only 0/1 (or False/True) values")
    n, k = int(arr.size), int(arr.sum())
    low, high = wilson_interval(k, n, confidence)
    return {"rate": k / n, "low": low, "high": high, "n": n, "k": k}


# ----------------------------------------------------------------------------- bootstrap

def _bootstrap(arrays: list[np.ndarray], statistic: Callable[[np.ndarray], Any], n_boot: int,
               rng: np.random.Generator) -> np.ndarray:
    """n_boot two-level resamples (seeds, then observations within each drawn seed) of `statistic`."""
    flat = np.concatenate([a.ravel() for a in arrays])
    sizes = np.array([a.size for a in arrays])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    n_seeds = len(arrays)
    out = np.empty(n_boot)
    for b in range(n_boot):
        seeds = rng.integers(n_seeds, size=n_seeds)
        # One slot per observation of each drawn seed (a seed drawn twice contributes twice).
        seg = np.repeat(seeds, sizes[seeds])
        out[b] = statistic(flat[offsets[seg] + rng.integers(0, sizes[seg])])
    return out


def _percentile_interval(boot: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2
    low, high = np.quantile(boot, [tail, 1 - tail])
    return float(low), float(high)


def hierarchical_bootstrap(values_by_seed: dict[int, np.ndarray] | list[np.ndarray],
                           statistic: Callable[[np.ndarray], Any] = np.mean, n_boot: int = 2000,
                           confidence: float = 0.95, rng_seed: int = 0) -> dict[str, float | int]:
    """Two-level percentile bootstrap of `statistic` over seeds (clusters) and their observations.

    Each replicate draws len(seeds) seeds with replacement, then, for every drawn seed, as many of
    its observations with replacement as it has; `statistic` is applied to the pooled draw. Resampling
    seeds is what lets the interval reflect target-to-target variation; with a single seed that
    variation is invisible and only observations are resampled ("n_seeds": 1 flags this).

    Returns {"estimate": statistic of all pooled data, "low", "high", "n_seeds", "n"}.
    """
    _, arrays = _groups(values_by_seed, "values_by_seed")
    n_boot = _check_count(n_boot, "n_boot", 1)
    confidence = _check_level(confidence, "confidence")
    boot = _bootstrap(arrays, statistic, n_boot, np.random.default_rng(rng_seed))
    low, high = _percentile_interval(boot, confidence)
    pooled = np.concatenate([a.ravel() for a in arrays])
    return {"estimate": float(statistic(pooled)), "low": low, "high": high,
            "n_seeds": len(arrays), "n": int(pooled.size)}


# ----------------------------------------------------------------------------- paired comparison

def _sign_flip_p(d: np.ndarray, n_perm: int, rng: np.random.Generator) -> float:
    """Two-sided sign-flip permutation p-value of mean(d) (sums used: same ordering, n fixed)."""
    observed = abs(d.sum())
    # Tolerance so that flips which tie the observed statistic up to rounding count as "as extreme".
    tol = 1e-9 * max(1.0, float(np.abs(d).sum()))
    n = d.size
    if n <= EXACT_PAIRS:
        # Every sign pattern, the observed one included, so the exact p needs no +1 correction.
        signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)
        return float(np.mean(np.abs(signs @ d) >= observed - tol))
    count = 0
    chunk = max(1, min(n_perm, 1_000_000 // n))  # bound memory to ~1e6 signs per block
    for start in range(0, n_perm, chunk):
        rows = min(chunk, n_perm - start)
        signs = np.where(rng.random((rows, n)) < 0.5, -1.0, 1.0)
        count += int(np.sum(np.abs(signs @ d) >= observed - tol))
    # The +1 counts the observed labelling, keeping a Monte Carlo p-value valid (never 0).
    return (count + 1) / (n_perm + 1)


def paired_difference(a_by_seed: dict[int, np.ndarray] | list[np.ndarray],
                      b_by_seed: dict[int, np.ndarray] | list[np.ndarray], n_boot: int = 2000,
                      confidence: float = 0.95, rng_seed: int = 0, n_perm: int = 5000) -> dict[str, Any]:
    """mean(a) - mean(b) over element-wise matched pairs, with a bootstrap interval and a permutation p.

    a[s][i] and b[s][i] must come from the same seed s and the same reconstruction setup (class,
    latent init), so the per-pair difference cancels what the two conditions share.

    * interval: hierarchical paired bootstrap of the mean difference (seeds, then pairs in a seed);
    * p-value: two-sided sign-flip test on the pooled pair differences. Under H0 (no difference)
      each pair's difference is symmetric about 0, so its sign is exchangeable. Exact over all 2**n
      patterns when n <= 16, else Monte Carlo with n_perm flips and p = (count + 1) / (n_perm + 1).
      The flips are pair-level: they ignore seed clustering, which the interval accounts for.
    * significant: the interval excludes 0 AND p < 1 - confidence.

    Returns {"difference", "low", "high", "p_value", "n_pairs", "n_seeds", "significant"}.
    """
    labels_a, arrays_a = _groups(a_by_seed, "a_by_seed")
    labels_b, arrays_b = _groups(b_by_seed, "b_by_seed")
    if isinstance(a_by_seed, Mapping) != isinstance(b_by_seed, Mapping):
        raise MetricError("a_by_seed and b_by_seed must both be dicts or both be lists")
    if isinstance(a_by_seed, Mapping):
        if set(labels_a) != set(labels_b):
            raise MetricError(f"a and b have different seeds: only in a {sorted(set(labels_a) - set(labels_b))}, "
                              f"only in b {sorted(set(labels_b) - set(labels_a))}")
        arrays_b = [arrays_b[labels_b.index(k)] for k in labels_a]
    elif len(arrays_a) != len(arrays_b):
        raise MetricError(f"a has {len(arrays_a)} seeds but b has {len(arrays_b)}")
    for k, a, b in zip(labels_a, arrays_a, arrays_b):
        if a.shape != b.shape:
            raise MetricError(f"seed {k!r}: a has shape {a.shape} but b has shape {b.shape}; pairs must match")
    n_boot = _check_count(n_boot, "n_boot", 1)
    n_perm = _check_count(n_perm, "n_perm", 1)
    confidence = _check_level(confidence, "confidence")

    diffs = [(a - b).ravel() for a, b in zip(arrays_a, arrays_b)]
    pooled = np.concatenate(diffs)
    # Independent streams so changing n_boot does not change the permutation draws, and vice versa.
    boot_rng, perm_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(rng_seed).spawn(2))
    low, high = _percentile_interval(_bootstrap(diffs, np.mean, n_boot, boot_rng), confidence)
    p_value = _sign_flip_p(pooled, n_perm, perm_rng)
    return {"difference": float(pooled.mean()), "low": low, "high": high, "p_value": p_value,
            "n_pairs": int(pooled.size), "n_seeds": len(diffs),
            "significant": bool((low > 0 or high < 0) and p_value < 1 - confidence)}


# ----------------------------------------------------------------------------- multiplicity

def holm(p_values: list[float], alpha: float = 0.05) -> list[bool]:
    """Holm-Bonferroni step-down: which hypotheses are rejected, in the input order.

    Sort p ascending as p_(1) <= ... <= p_(m); reject H_(i) while p_(i) <= alpha / (m - i + 1) and
    stop at the first failure. Controls the family-wise error rate at alpha like Bonferroni, but
    never rejects less.
    """
    p = np.asarray(p_values, dtype=np.float64).ravel()
    if p.size == 0:
        raise MetricError("holm needs at least one p-value")
    if np.any(np.isnan(p)) or np.any((p < 0) | (p > 1)):
        raise MetricError(f"p-values must lie in [0, 1], got {p.tolist()}")
    alpha = _check_level(alpha, "alpha")
    m = p.size
    order = np.argsort(p, kind="stable")
    passes = p[order] <= alpha / (m - np.arange(m))
    # Step-down: everything after the first non-rejection is kept, whatever its p.
    n_rejected = m if passes.all() else int(np.argmin(passes))
    reject = np.zeros(m, dtype=bool)
    reject[order[:n_rejected]] = True
    return reject.tolist()


# ----------------------------------------------------------------------------- power and sample size

def _z(alpha: float, power: float) -> tuple[float, float]:
    """(z_{1-alpha/2}, z_{power}) for a two-sided test."""
    return float(norm.ppf(1 - _check_level(alpha, "alpha") / 2)), float(norm.ppf(_check_level(power, "power")))


def _n_two_proportions(p1: float, p2: float, z_a: float, z_b: float) -> float:
    """Unrounded per-arm n of the pooled two-proportion z-test (see reconstructions_needed)."""
    pbar = (p1 + p2) / 2
    num = z_a * math.sqrt(2 * pbar * (1 - pbar)) + z_b * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return num * num / (p1 - p2) ** 2


def reconstructions_needed(p1: float, p2: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Per-arm n for an unpaired two-sided two-proportion z-test (normal approximation).

    With pbar = (p1 + p2)/2, pooled variance under H0 and unpooled under H1 (Fleiss, no continuity
    correction)::

        n = [z_{1-alpha/2} sqrt(2 pbar (1-pbar)) + z_{power} sqrt(p1(1-p1) + p2(1-p2))]^2 / (p1-p2)^2

    rounded up. For p1 = 0.9, p2 = 0.8, alpha = 0.05, power = 0.8 this gives 199. Reconstructions
    of one target are correlated: multiply by design_effect(...) before dividing by seeds.
    """
    p1, p2 = _check_prob(p1, "p1"), _check_prob(p2, "p2")
    if p1 == p2:
        raise MetricError("p1 and p2 are equal: no sample size detects a zero difference")
    return math.ceil(_n_two_proportions(p1, p2, *_z(alpha, power)))


def paired_reconstructions_needed(p1: float, p2: float, discordant: float | None = None,
                                  alpha: float = 0.05, power: float = 0.8) -> int:
    """Pairs needed for McNemar's test (Connor 1987), two-sided.

    With delta = p1 - p2 (= p10 - p01) and psi = P(discordant pair) = p10 + p01::

        n = [z_{1-alpha/2} sqrt(psi) + z_{power} sqrt(psi - delta^2)]^2 / delta^2

    rounded up. Default psi = p1(1-p2) + p2(1-p1), the discordance if the two conditions succeed
    independently on a pair; matched pairs are normally positively correlated (same target, class
    and latent), which lowers psi and hence n, so the default is conservative. psi must lie in
    [|delta|, 1] since p10, p01 >= 0.
    """
    p1, p2 = _check_prob(p1, "p1"), _check_prob(p2, "p2")
    delta = p1 - p2
    if delta == 0:
        raise MetricError("p1 and p2 are equal: no sample size detects a zero difference")
    psi = p1 * (1 - p2) + p2 * (1 - p1) if discordant is None else _check_prob(discordant, "discordant")
    if psi < abs(delta):
        raise MetricError(f"discordant ({psi}) cannot be below |p1 - p2| ({abs(delta)}): p10 - p01 = p1 - p2")
    z_a, z_b = _z(alpha, power)
    num = z_a * math.sqrt(psi) + z_b * math.sqrt(max(psi - delta * delta, 0.0))
    return math.ceil(num * num / (delta * delta))


def design_effect(per_seed: int, icc: float) -> float:
    """Variance inflation of clustered reconstructions: DEFF = 1 + (per_seed - 1) * icc.

    per_seed reconstructions of one trained target share its weights; icc is the intra-target
    correlation of their outcomes. The effective sample size is n / DEFF.
    """
    per_seed = _check_count(per_seed, "per_seed", 1)
    icc = _check_prob(icc, "icc")
    return 1.0 + (per_seed - 1) * icc


def detectable_difference(n: int, p: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest d such that n per arm detects p1 = p vs p2 = p - d (the inverse of reconstructions_needed).

    Solves n_required(p, p - d) = n for d in (0, p], n_required being the unrounded formula of
    reconstructions_needed. Only downward differences are searched (a defense lowers the attack rate);
    if even p2 = 0 needs more than n per arm, MetricError says so rather than returning a clipped d.
    """
    n = _check_count(n, "n", 1)
    p = _check_prob(p, "p")
    if p == 0:
        raise MetricError("p = 0 leaves no room for a lower rate p - d")
    z_a, z_b = _z(alpha, power)

    def excess(d: float) -> float:
        return _n_two_proportions(p, p - d, z_a, z_b) - n

    if excess(p) > 0:
        raise MetricError(f"n = {n} per arm cannot detect even a drop from {p} to 0 at alpha={alpha}, power={power}")
    # n_required falls as d grows but is not guaranteed monotone near the boundary; scan for the first
    # sign change so brentq returns the smallest root, not any root.
    grid = np.linspace(0, p, 257)[1:]
    first = int(np.argmax([excess(d) <= 0 for d in grid]))
    lo = grid[first - 1] if first > 0 else min(1e-12, p / 2)
    return float(optimize.brentq(excess, lo, grid[first], xtol=1e-12))


# ----------------------------------------------------------------------------- the seed as the unit

def intraclass_correlation(values_by_seed: Groups) -> float:
    """One-way ANOVA estimate of the intra-seed correlation of per-reconstruction values, clipped to [0, 1].

    With k seeds of sizes m_i, N = sum m_i, MSB and MSW the between- and within-seed mean squares and
    m0 = (N - sum m_i^2 / N) / (k - 1)::

        ICC = (MSB - MSW) / (MSB + (m0 - 1) MSW)

    0 when every value is the same (no variance to share). Needs at least two seeds.
    """
    _, arrays = _groups(values_by_seed, "values_by_seed")
    arrays = [a.ravel() for a in arrays]
    k = len(arrays)
    if k < 2:
        raise MetricError("an intra-seed correlation needs at least two seeds")
    sizes = np.array([a.size for a in arrays], dtype=np.float64)
    n = sizes.sum()
    if n <= k:
        raise MetricError("an intra-seed correlation needs more than one value per seed")
    grand = np.concatenate(arrays).mean()
    means = np.array([a.mean() for a in arrays])
    msb = float(np.sum(sizes * (means - grand) ** 2) / (k - 1))
    msw = float(sum(np.sum((a - m) ** 2) for a, m in zip(arrays, means)) / (n - k))
    m0 = (n - np.sum(sizes**2) / n) / (k - 1)
    denom = msb + (m0 - 1) * msw
    if denom <= 0:
        return 0.0
    return float(min(1.0, max(0.0, (msb - msw) / denom)))


def _wilson(p: float, n: float, z: float) -> tuple[float, float]:
    """Wilson bounds for a rate p over an (effective, possibly fractional) sample size n and quantile z."""
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(max(p * (1 - p) / n + z * z / (4 * n * n), 0.0))
    return max(0.0, centre - half), min(1.0, centre + half)


def seed_level_proportion(values_by_seed: Groups, confidence: float = 0.95) -> dict[str, Any]:
    """A success rate over seeds with an interval that counts the seed as the unit and never collapses.

    The rate is the mean of the seeds' rates (each trained target weighs the same). Its variance under
    clustering, s^2 / k from the k seed rates, is compared with the binomial p(1-p)/n of n independent
    reconstructions: their ratio is the design effect (at least 1), and n / DEFF the effective sample size.
    The interval is Wilson's at that effective size with the t quantile of k - 1 degrees of freedom (after
    Korn & Graubard 1998), so it widens with the between-seed spread and, at a rate of 0 or 1, stays a
    proper interval ([0.981, 1] for 200 of 200 hits rather than [1, 1]). One seed: plain Wilson.

    Returns {"estimate", "low", "high", "n", "n_seeds", "design_effect", "effective_n", "method"}.
    """
    _, arrays = _groups(values_by_seed, "values_by_seed")
    confidence = _check_level(confidence, "confidence")
    for a in arrays:
        if not np.all((a == 0) | (a == 1)):
            raise MetricError("seed_level_proportion needs 0/1 values")
    k = len(arrays)
    n = int(sum(a.size for a in arrays))
    rates = np.array([a.mean() for a in arrays])
    p = float(rates.mean())
    if k == 1:
        low, high = wilson_interval(int(arrays[0].sum()), n, confidence)
        return {"estimate": p, "low": low, "high": high, "n": n, "n_seeds": 1, "design_effect": 1.0, "effective_n": float(n),
                "method": "one seed: Wilson over its reconstructions"}
    var_srs = p * (1 - p) / n
    var_cluster = float(rates.var(ddof=1)) / k
    deff = max(1.0, var_cluster / var_srs) if var_srs > 0 else 1.0
    n_eff = n / deff
    z = float(t_dist.ppf(0.5 + confidence / 2, k - 1))
    low, high = _wilson(p, n_eff, z)
    if p == 0.0:
        low = 0.0
    if p == 1.0:
        high = 1.0
    return {"estimate": p, "low": float(low), "high": float(high), "n": n, "n_seeds": k, "design_effect": float(deff),
            "effective_n": float(n_eff), "method": f"Wilson at the effective size, t with {k - 1} df (seed = unit)"}


def seed_level_mean(values_by_seed: Groups, confidence: float = 0.95) -> dict[str, Any]:
    """The mean of per-seed means of a continuous per-reconstruction value, with a t interval over seeds
    (k - 1 degrees of freedom). One seed: the t interval over its reconstructions, flagged as such.

    Returns {"estimate", "low", "high", "n", "n_seeds", "method"}."""
    _, arrays = _groups(values_by_seed, "values_by_seed")
    confidence = _check_level(confidence, "confidence")
    n = int(sum(a.size for a in arrays))
    if len(arrays) == 1:
        units, method = arrays[0].ravel(), "one seed: t over its reconstructions"
    else:
        units, method = np.array([a.mean() for a in arrays]), f"t over {len(arrays)} seed means"
    est = float(units.mean())
    if units.size < 2:
        return {"estimate": est, "low": math.nan, "high": math.nan, "n": n, "n_seeds": len(arrays), "method": "one value: no interval"}
    half = float(t_dist.ppf(0.5 + confidence / 2, units.size - 1)) * float(units.std(ddof=1)) / math.sqrt(units.size)
    return {"estimate": est, "low": est - half, "high": est + half, "n": n, "n_seeds": len(arrays), "method": method}


def _matched(a_by_seed: Groups, b_by_seed: Groups) -> tuple[list[Any], list[np.ndarray]]:
    """(seed labels, per-seed pair differences a - b), checking that seeds and shapes match."""
    labels_a, arrays_a = _groups(a_by_seed, "a_by_seed")
    labels_b, arrays_b = _groups(b_by_seed, "b_by_seed")
    if isinstance(a_by_seed, Mapping) != isinstance(b_by_seed, Mapping):
        raise MetricError("a_by_seed and b_by_seed must both be dicts or both be lists")
    if isinstance(a_by_seed, Mapping):
        if set(labels_a) != set(labels_b):
            raise MetricError(f"a and b have different seeds: only in a {sorted(set(labels_a) - set(labels_b))}, "
                              f"only in b {sorted(set(labels_b) - set(labels_a))}")
        arrays_b = [arrays_b[labels_b.index(k)] for k in labels_a]
    elif len(arrays_a) != len(arrays_b):
        raise MetricError(f"a has {len(arrays_a)} seeds but b has {len(arrays_b)}")
    for k, a, b in zip(labels_a, arrays_a, arrays_b):
        if a.shape != b.shape:
            raise MetricError(f"seed {k!r}: a has shape {a.shape} but b has shape {b.shape}; pairs must match")
    return labels_a, [(a - b).ravel() for a, b in zip(arrays_a, arrays_b)]


def seed_level_paired(a_by_seed: Groups, b_by_seed: Groups, confidence: float = 0.95, n_perm: int = 20000,
                      rng_seed: int = 0) -> dict[str, Any]:
    """a - b compared with the seed as the unit of replication.

    Each seed s contributes one number, d_s = mean over its pairs of (a - b): the pairs of a seed share its
    targets and its prior, so they are one observation of the defense effect, not many. Then:

    * estimate: the mean of the d_s; interval: mean ± t_{k-1} · sd(d_s) / sqrt(k);
    * p_value: the two-sided paired t-test on the d_s (k - 1 df) — what the marks use;
    * p_sign_flip: the two-sided sign-flip test over seeds (exact for k <= 16: its smallest possible
      value is 2 / 2^k, 0.0625 for 5 seeds), a check that needs no normality;
    * icc and design_effect of the pair differences (1 + (m - 1) ICC, m pairs per seed): how much a test
      that took the pairs as independent would overstate; p_naive is that test (pair-level sign flips).

    Needs at least two seeds (one seed says nothing about the defense, only about two trained models).
    When every seed has the same d_s the t statistic is undefined and the sign-flip p is used.
    Returns {"difference", "low", "high", "p_value", "p_sign_flip", "p_naive", "t", "n_seeds", "n_pairs",
    "per_seed", "icc", "design_effect", "significant", "method"}.
    """
    labels, diffs = _matched(a_by_seed, b_by_seed)
    confidence = _check_level(confidence, "confidence")
    n_perm = _check_count(n_perm, "n_perm", 1)
    k = len(diffs)
    if k < 2:
        raise MetricError("a seed-level comparison needs at least two seeds")
    d = np.array([x.mean() for x in diffs])
    est = float(d.mean())
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(k)
    q = float(t_dist.ppf(0.5 + confidence / 2, k - 1))
    flip_rng, naive_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(rng_seed).spawn(2))
    p_flip = _sign_flip_p(d, n_perm, flip_rng)
    tol = 1e-12 * max(1.0, abs(est))
    if se <= tol:
        t_stat, p_t = (0.0, 1.0) if abs(est) <= tol else (math.copysign(math.inf, est), p_flip)
    else:
        t_stat = est / se
        p_t = float(2 * t_dist.sf(abs(t_stat), k - 1))
    pooled = np.concatenate(diffs)
    try:
        icc = intraclass_correlation(diffs)
    except MetricError:
        icc = 0.0
    m = pooled.size / k
    return {"difference": est, "low": est - q * se, "high": est + q * se, "p_value": p_t, "p_sign_flip": p_flip,
            "p_naive": _sign_flip_p(pooled, min(n_perm, 5000), naive_rng), "t": float(t_stat), "n_seeds": k,
            "n_pairs": int(pooled.size), "per_seed": dict(zip(map(str, labels), d.tolist())), "icc": icc,
            "design_effect": 1.0 + (m - 1) * icc, "significant": bool(p_t < 1 - confidence),
            "method": f"paired t over {k} seed means"}


def paired_t_power(n_seeds: int, delta: float, sd: float, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test over `n_seeds` seeds to detect a mean seed-level difference
    `delta` when the seeds' differences have standard deviation `sd` (noncentral t, k - 1 df)."""
    k = _check_count(n_seeds, "n_seeds", 2)
    if sd <= 0:
        raise MetricError(f"sd must be > 0, got {sd}")
    alpha = _check_level(alpha, "alpha")
    df = k - 1
    crit = float(t_dist.ppf(1 - alpha / 2, df))
    nc = abs(float(delta)) / sd * math.sqrt(k)
    return float(nct.sf(crit, df, nc) + nct.cdf(-crit, df, nc))


def seeds_needed(delta: float, sd: float, alpha: float = 0.05, power: float = 0.8, max_seeds: int = 1000) -> int:
    """Smallest number of seeds for which the paired t-test over seeds reaches `power` against a true
    seed-level difference `delta`, the seeds' differences having standard deviation `sd`.

    sd is the spread of per-seed mean differences: between-seed variance plus within-seed noise / m,
    i.e. sd^2 = sigma_b^2 + sigma_w^2 / m — the design effect in seed units."""
    power = _check_level(power, "power")
    if delta == 0:
        raise MetricError("delta = 0: no number of seeds detects a zero difference")
    for k in range(2, _check_count(max_seeds, "max_seeds", 2) + 1):
        if paired_t_power(k, delta, sd, alpha) >= power:
            return k
    raise MetricError(f"even {max_seeds} seeds do not reach power {power} for delta={delta}, sd={sd}")
