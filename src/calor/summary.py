"""From result rows to statements with their uncertainty: per-cell estimates with 95 % intervals, and
paired comparisons between defenses under the same attack (same seeds, same classes, same latent
initialisations, so reconstruction i of one cell pairs with reconstruction i of the other).

Intervals:
- metrics with a value per reconstruction (hits, confidences, distances): a hierarchical bootstrap
  over seeds and then reconstructions within a seed (one trained target per seed makes the
  reconstructions of a seed correlated); with one seed, a Wilson interval for hit rates and a bootstrap
  over reconstructions otherwise;
- metrics of a whole set (KID, diversity, coverage, eval-FID): mean over seeds with a t interval (none
  from one seed).
Comparisons: `calor.stats.paired_difference` (paired bootstrap interval, sign-flip permutation p-value),
Holm-corrected over every comparison in a table.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any

import numpy as np
from scipy import stats as sps

from .stats import hierarchical_bootstrap, holm, paired_difference, wilson_interval
from .records import ResultRow


# metric -> (per-sample key or None for set-level metrics, True if a larger value means LESS leakage)
METRICS: dict[str, tuple[str | None, bool]] = {
    "attack_acc@1": ("hit", False),
    "attack_acc@1_open": ("hit_open", False),
    "judge_confidence": ("confidence", False),
    "knn_dist": ("knn_dist", True),
    "pixel_mse": ("pixel_mse", True),
    "ssim": ("ssim", False),
    "degenerate_rate": ("degenerate", True),
    "kid": (None, True),
    "diversity": (None, False),  # more diverse reconstructions = a stronger attack, all else equal
    "coverage": (None, False),
    "eval_fid": (None, True),
}
BINARY = {"hit", "hit_open", "degenerate"}
COMPARED = ("attack_acc@1", "attack_acc@1_open", "judge_confidence", "knn_dist")  # metrics of the paired-comparison table
N_BOOT = 2000


def published(rows: list[ResultRow]) -> tuple[list[dict[str, Any]], bool]:
    """The rows to report: those not on a tuning seed; all rows (flag True) when every row is on one."""
    clean = [r for r in rows if not r.get("tuning_seed")]
    return (clean, False) if clean else (rows, bool(rows))


def group(rows: list[ResultRow]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Rows by (attack, label), in first-seen order."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        out[(r["attack"], r["label"])].append(r)
    return dict(out)


def estimate(rows: list[ResultRow], metric: str) -> dict[str, Any] | None:
    """Point estimate and 95 % interval of `metric` over `rows` (the seeds of one cell); None if absent."""
    key, _ = METRICS[metric]
    if key is not None and all(key in r.get("per_sample", {}) for r in rows) and rows:
        by_seed = {r["seed"]: np.asarray(r["per_sample"][key], dtype=float) for r in rows}
        if len(by_seed) == 1 and key in BINARY:
            (values,) = by_seed.values()
            k, n = int(values.sum()), len(values)
            low, high = wilson_interval(k, n)
            return {"estimate": k / n, "low": low, "high": high, "n": n, "n_seeds": 1, "method": "wilson"}
        b = hierarchical_bootstrap(by_seed, n_boot=N_BOOT, rng_seed=0)
        return {"estimate": b["estimate"], "low": b["low"], "high": b["high"], "n": b["n"], "n_seeds": b["n_seeds"],
                "method": "bootstrap over seeds and reconstructions" if len(by_seed) > 1 else "bootstrap over reconstructions"}
    values = [float(r[metric]) for r in rows if r.get(metric) is not None]
    if not values:
        return None
    mean = statistics.fmean(values)
    if len(values) < 2:
        return {"estimate": mean, "low": math.nan, "high": math.nan, "n": sum(r.get("n", 0) for r in rows), "n_seeds": 1,
                "method": "one seed: no interval"}
    half = sps.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return {"estimate": mean, "low": mean - half, "high": mean + half, "n": sum(r.get("n", 0) for r in rows),
            "n_seeds": len(values), "method": "t interval over seeds"}


def paired(rows_a: list[ResultRow], rows_b: list[ResultRow], metric: str) -> dict[str, Any] | None:
    """Paired difference a - b of a per-sample metric over the seeds both cells share (None if not pairable)."""
    key, _ = METRICS[metric]
    if key is None:
        return None
    a = {r["seed"]: r for r in rows_a if key in r.get("per_sample", {})}
    b = {r["seed"]: r for r in rows_b if key in r.get("per_sample", {})}
    seeds = sorted(set(a) & set(b))
    seeds = [s for s in seeds if a[s]["classes"] == b[s]["classes"] and a[s]["per_class"] == b[s]["per_class"]]
    if not seeds:
        return None
    res = paired_difference({s: np.asarray(a[s]["per_sample"][key], dtype=float) for s in seeds},
                            {s: np.asarray(b[s]["per_sample"][key], dtype=float) for s in seeds}, n_boot=N_BOOT)
    return res | {"seeds": seeds}


def comparison_pairs(labels: list[str], baseline: str = "none") -> list[tuple[str, str]]:
    """Which defenses to compare under each attack: every defense against the `baseline` (the undefended
    target), and CALoR against its ablations (what CA adds over LoR alone, what LoR adds over CA alone)."""
    pairs = [(lab, baseline) for lab in labels if lab != baseline and baseline in labels]
    pairs += [("calor", other) for other in ("lor", "ca", "ls-ft") if "calor" in labels and other in labels]
    return pairs


def comparisons(rows: list[ResultRow], metrics: tuple[str, ...] = COMPARED, baseline: str = "none") -> list[dict[str, Any]]:
    """Every paired comparison of the report, Holm-corrected together: one dict per (attack, pair, metric)."""
    cells = group([r for r in rows if not r.get("calibration")])
    attacks = list(dict.fromkeys(a for a, _ in cells))
    out = []
    for attack in attacks:
        labels = [lab for a, lab in cells if a == attack]
        for a_lab, b_lab in comparison_pairs(labels, baseline):
            for metric in metrics:
                res = paired(cells[(attack, a_lab)], cells[(attack, b_lab)], metric)
                if res is not None:
                    out.append({"attack": attack, "a": a_lab, "b": b_lab, "metric": metric, **res})
    if out:
        for c, reject in zip(out, holm([c["p_value"] for c in out])):
            c["significant_holm"] = bool(reject and c["significant"])
    return out


def significance_marks(rows: list[ResultRow], baseline: str = "none") -> dict[tuple[str, str, str], str]:
    """(attack, defense, metric) -> "↓*", "↑*" (significantly below / above the `baseline`, Holm-corrected) or ""."""
    marks = {}
    for c in comparisons(rows, baseline=baseline):
        if c["b"] == baseline:
            arrow = "↓" if c["difference"] < 0 else "↑"
            marks[(c["attack"], c["a"], c["metric"])] = f"{arrow}*" if c["significant_holm"] else ""
    return marks


def fmt_interval(e: dict[str, Any] | None) -> str:
    if e is None:
        return "-"
    v, lo, hi = e["estimate"], e["low"], e["high"]
    digits = 1 if abs(v) >= 10 else 3
    if math.isnan(lo):
        return f"{v:.{digits}f}"
    return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def diagnostics_summary(rows: list[ResultRow]) -> dict[tuple[str, str], dict[str, Any]]:
    """(attack, label) -> saturated fraction and gradient ratio at the start, middle and end of the path
    (medians over seeds) for white-box cells that recorded diagnostics."""
    out = {}
    for (attack, label), cell in group([r for r in rows if r.get("diagnostics")]).items():
        diags = [r["diagnostics"] for r in cell]

        def at(name: str, pos: int) -> float | None:
            vals = [d[name][pos] for d in diags if d.get(name) and d[name][pos] is not None]
            return statistics.median(vals) if vals else None

        out[(attack, label)] = {
            "saturated": [at("saturated_fraction", p) for p in (0, len(diags[0]["progress"]) // 2, -1)],
            "grad_ratio": [at("grad_ratio", p) for p in (0, len(diags[0]["progress"]) // 2, -1)],
            "grad_norm": [at("grad_norm", p) for p in (0, -1)],
            "seeds": len(diags),
        }
    return out
