"""From result rows to statements with their uncertainty, with the **seed** as the unit of replication.

A seed is one trained target (and one GAN prior, one set of latent initialisations): the reconstructions
of a seed share all of that, so they are correlated and are not independent evidence about a defense.
Every interval and test here treats the seed as the unit:

- per-reconstruction rates (hits): the mean of the seeds' rates, with a Wilson interval at the
  clustered effective sample size and a t quantile of seeds - 1 df (`stats.seed_level_proportion`):
  it widens with the between-seed spread and never collapses at 0 or 1;
- per-reconstruction values (confidences, distances): a t interval over the seed means;
- set-level metrics (KID, diversity, coverage, eval-FID): a t interval over the seeds' values;
- paired comparisons a - b under the same attack (same prior, classes and latent initialisations): one
  mean difference per seed, a paired t-test over seeds (`stats.seed_level_paired`), the sign-flip test
  over seeds beside it as a check. One seed says nothing about a defense (only about two trained
  models): its comparisons are listed, within-seed, and never marked.

Multiplicity: a **primary family** of comparisons is declared before a run (the scenario's `primary:`
block); Holm applies inside it and only its survivors get "*" marks. Every other comparison is
exploratory (unadjusted p, marked "°"). Comparisons of an A/A replicate with its original (`none~aa1`
vs `none`: the same defense trained twice) form a family of their own whose marks are the instrument's
empirical false-positive rate.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any

import numpy as np

from .errors import ConfigError
from .records import ResultRow
from .stats import holm, paired_difference, seed_level_mean, seed_level_paired, seed_level_proportion

# metric -> (per-sample key or None for set-level metrics, direction): True if a larger value means LESS
# leakage, False if MORE, None if the metric has no direction of its own (diversity and coverage: the
# floors, prior samples and public images, are the most diverse sets; read them against floor and ceiling)
METRICS: dict[str, tuple[str | None, bool | None]] = {
    "attack_acc@1": ("hit", False),
    "attack_acc@1_open": ("hit_open", False),
    "attack_acc@1_real": ("hit_real", False),
    "judge_confidence": ("confidence", False),
    "knn_dist": ("knn_dist", True),
    "pixel_mse": ("pixel_mse", True),
    "ssim": ("ssim", False),
    "degenerate_rate": ("degenerate", True),
    "kid": (None, True),
    "diversity": (None, None),
    "coverage": (None, None),
    "eval_fid": (None, True),
}
BINARY = {"hit", "hit_open", "hit_real", "degenerate"}
BOUNDS = {"confidence": (0.0, 1.0), "ssim": (-1.0, 1.0)}  # a t interval of a bounded value is clipped to its range
# metrics of the paired-comparison table
COMPARED = ("attack_acc@1", "attack_acc@1_open", "attack_acc@1_real", "judge_confidence", "knn_dist")
# metrics of the worst-case table, the first of every report
WORST_CASE = ("attack_acc@1_open", "attack_acc@1_real", "attack_acc@1", "knn_dist")
ALPHA = 0.05
REPLICA = "~aa"  # an A/A replicate's label: the original's label + "~aa" + its number
N_BOOT = 2000


def replica_of(label: str) -> str | None:
    """The label an A/A replicate copies (`none~aa1` -> `none`), None for an ordinary label."""
    base, sep, number = label.rpartition(REPLICA)
    return base if sep and number.isdigit() else None


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


def _by_seed(rows: list[ResultRow], key: str) -> dict[int, np.ndarray]:
    return {r["seed"]: np.asarray(r["per_sample"][key], dtype=float) for r in rows}


def estimate(rows: list[ResultRow], metric: str) -> dict[str, Any] | None:
    """Point estimate and 95 % interval of `metric` over `rows` (the seeds of one cell), the seed as the
    unit (see the module docstring); None if no row has the metric."""
    key, _ = METRICS[metric]
    if key is not None and rows and all(key in r.get("per_sample", {}) for r in rows):
        by_seed = _by_seed(rows, key)
        if key in BINARY:
            return seed_level_proportion(by_seed)
        e = seed_level_mean(by_seed)
        if key in BOUNDS and not math.isnan(e["low"]):
            lo, hi = BOUNDS[key]
            e |= {"low": max(lo, e["low"]), "high": min(hi, e["high"])}
        return e
    values = [float(r[metric]) for r in rows if r.get(metric) is not None]
    if not values:
        return None
    n = sum(r.get("n", 0) for r in rows)
    if len(values) < 2:
        return {"estimate": values[0], "low": math.nan, "high": math.nan, "n": n, "n_seeds": 1, "method": "one seed: no interval"}
    return seed_level_mean([np.array([v]) for v in values]) | {"n": n}


def paired(rows_a: list[ResultRow], rows_b: list[ResultRow], metric: str) -> dict[str, Any] | None:
    """Paired difference a - b of a per-sample metric over the seeds both cells share (None if not pairable).

    Two or more seeds: the seed-level test (`seed_level`: True). One seed: the within-seed paired
    bootstrap and sign-flip test over its reconstructions (`seed_level`: False) — about those two trained
    models only, never marked."""
    key, _ = METRICS[metric]
    if key is None:
        return None
    a = {r["seed"]: r for r in rows_a if key in r.get("per_sample", {})}
    b = {r["seed"]: r for r in rows_b if key in r.get("per_sample", {})}
    seeds = sorted(set(a) & set(b))
    seeds = [s for s in seeds if a[s]["classes"] == b[s]["classes"] and a[s]["per_class"] == b[s]["per_class"]]
    if not seeds:
        return None
    va, vb = _by_seed([a[s] for s in seeds], key), _by_seed([b[s] for s in seeds], key)
    if len(seeds) >= 2:
        return seed_level_paired(va, vb) | {"seeds": seeds, "seed_level": True}
    res = paired_difference(va, vb, n_boot=N_BOOT)
    return res | {"seeds": seeds, "seed_level": False, "method": "one seed: within-seed paired test (not about the defense)"}


def comparison_pairs(labels: list[str], baseline: str = "none") -> list[tuple[str, str]]:
    """Which defenses to compare under each attack: every defense against the `baseline` (the undefended
    target), CALoR against its ablations (what CA adds over LoR alone, what LoR adds over CA alone), and
    every A/A replicate against the label it copies (the instrument's false-positive check)."""
    plain = [lab for lab in labels if replica_of(lab) is None]
    pairs = [(lab, baseline) for lab in plain if lab != baseline and baseline in labels]
    pairs += [("calor", other) for other in ("lor", "ca", "ls-ft") if "calor" in labels and other in labels]
    pairs += [(lab, replica_of(lab)) for lab in labels if replica_of(lab) in labels]  # type: ignore[misc]
    return pairs


def parse_pair(text: str) -> tuple[str, str]:
    """'calor vs none' -> ('calor', 'none')."""
    a, sep, b = text.partition(" vs ")
    if not sep or not a.strip() or not b.strip():
        raise ConfigError(f"primary pair {text!r}: expected 'A vs B' (e.g. 'calor vs none')")
    return a.strip(), b.strip()


def _family_spec(primary: Any) -> tuple[set[tuple[str, str]], set[str], set[str]] | None:
    """(pairs, attacks, metrics) of a primary family given as a scenario's PrimaryFamily, its dict or None."""
    if primary is None:
        return None
    spec = primary if isinstance(primary, dict) else {"pairs": primary.pairs, "attacks": primary.attacks, "metrics": primary.metrics}
    pairs = {parse_pair(p) for p in spec.get("pairs") or ()}
    if not pairs:
        return None
    return pairs, set(spec.get("attacks") or ()), set(spec.get("metrics") or ())


def family_of(c: dict[str, Any], spec: tuple[set[tuple[str, str]], set[str], set[str]] | None) -> str:
    """'a/a', 'primary' or 'exploratory' for a comparison {attack, a, b, metric}."""
    if replica_of(c["a"]) == c["b"]:
        return "a/a"
    if spec is None:
        return "exploratory"
    pairs, attacks, metrics = spec
    attack_ok = not attacks or c["attack"] in attacks
    return "primary" if (c["a"], c["b"]) in pairs and attack_ok and (not metrics or c["metric"] in metrics) else "exploratory"


def comparisons(rows: list[ResultRow], metrics: tuple[str, ...] = COMPARED, baseline: str = "none",
                primary: Any = None) -> list[dict[str, Any]]:
    """Every paired comparison of the report: one dict per (attack, pair, metric) with its `family`.

    `significant_holm`: a primary comparison that the Holm correction inside the primary family keeps (at
    least two seeds, p < 0.05 after Holm); `significant_unadjusted`: p < 0.05 with at least two seeds, no
    correction — what an exploratory "°" mark and the A/A false-positive rate count."""
    spec = _family_spec(primary)
    cells = group([r for r in rows if not r.get("calibration")])
    attacks = list(dict.fromkeys(a for a, _ in cells))
    out = []
    for attack in attacks:
        labels = [lab for a, lab in cells if a == attack]
        for a_lab, b_lab in comparison_pairs(labels, baseline):
            for metric in metrics:
                res = paired(cells[(attack, a_lab)], cells[(attack, b_lab)], metric)
                if res is not None:
                    c = {"attack": attack, "a": a_lab, "b": b_lab, "metric": metric, **res}
                    c["family"] = family_of(c, spec)
                    c["significant_unadjusted"] = bool(c["seed_level"] and c["p_value"] < ALPHA)
                    c["significant_holm"] = False
                    out.append(c)
    for family in ("primary", "a/a"):
        members = [c for c in out if c["family"] == family and c["seed_level"]]
        if members:
            for c, reject in zip(members, holm([c["p_value"] for c in members], ALPHA)):
                c["significant_holm"] = bool(reject)
    return out


def significance_marks(rows: list[ResultRow], baseline: str = "none", primary: Any = None,
                       comps: list[dict[str, Any]] | None = None) -> dict[tuple[str, str, str], str]:
    """(attack, defense, metric) -> the mark of its comparison with the `baseline`: "↓*"/"↑*" (primary family,
    Holm-corrected), "↓°"/"↑°" (exploratory or A/A, unadjusted p < 0.05), "" otherwise (or one seed).
    `comps`: the report's comparisons when already computed (`comparisons(rows, ...)`)."""
    marks = {}
    for c in comparisons(rows, baseline=baseline, primary=primary) if comps is None else comps:
        if c["b"] != baseline and replica_of(c["a"]) != c["b"]:
            continue
        arrow = "↓" if c["difference"] < 0 else "↑"
        if c["family"] == "primary":
            mark = f"{arrow}*" if c["significant_holm"] else ""
        else:
            mark = f"{arrow}°" if c["significant_unadjusted"] else ""
        marks[(c["attack"], c["a"], c["metric"])] = mark
    return marks


def _judge_rows(rows: list[ResultRow], judge: str) -> list[dict[str, Any]]:
    """The rows with `judge`'s per-sample verdicts in place of the primary judge's (rows without them left out)."""
    out = []
    for r in rows:
        mine = (r.get("judges") or {}).get(judge, {}).get("per_sample")
        if mine:
            out.append({**r, "per_sample": {**r.get("per_sample", {}), **mine}})
    return out


def by_judge(rows: list[ResultRow], comps: list[dict[str, Any]], family: str = "primary") -> list[dict[str, Any]]:
    """Each seed-level comparison of `family` recomputed with every judge's per-sample verdicts (rows store them
    for every judge): {attack, a, b, metric, judges: {name: comparison}, holds: the same direction under every
    judge and, where the primary judge's test is significant (Holm for the primary family), p < 0.05 under each}."""
    cells = group([r for r in rows if not r.get("calibration")])
    judges = list(dict.fromkeys(j for r in rows for j in (r.get("judges") or {}) if (r["judges"][j] or {}).get("per_sample")))
    out = []
    for c in comps:
        if c["family"] != family or not c["seed_level"] or METRICS[c["metric"]][0] not in BINARY | {"confidence"}:
            continue
        results = {}
        for j in judges:
            res = paired(_judge_rows(cells[(c["attack"], c["a"])], j), _judge_rows(cells[(c["attack"], c["b"])], j), c["metric"])
            if res is not None and res["seed_level"]:
                results[j] = res
        if len(results) < 2:
            continue
        significant = c["significant_holm"] if family == "primary" else c["significant_unadjusted"]
        same_sign = len({np.sign(r["difference"]) for r in results.values()}) == 1
        holds = same_sign and (not significant or all(r["p_value"] < ALPHA for r in results.values()))
        out.append({"attack": c["attack"], "a": c["a"], "b": c["b"], "metric": c["metric"], "judges": results,
                    "significant": significant, "holds": bool(holds)})
    return out


def aa_calibration(comps: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The A/A family's empirical false-positive rates: the share of its seed-level comparisons that an
    exploratory mark would fire on (unadjusted p < 0.05), and that survive Holm inside the family.
    None when the report has no A/A replicate."""
    aa = [c for c in comps if c["family"] == "a/a" and c["seed_level"]]
    if not aa:
        return None
    fired = sum(c["significant_unadjusted"] for c in aa)
    naive = sum(c.get("p_naive", 1.0) < ALPHA for c in aa)
    return {"comparisons": len(aa), "unadjusted": fired, "rate_unadjusted": fired / len(aa),
            "holm": sum(c["significant_holm"] for c in aa), "naive": naive, "rate_naive": naive / len(aa),
            "pairs": sorted({(c["a"], c["b"]) for c in aa}), "attacks": sorted({c["attack"] for c in aa})}


def _leakiest(metric: str, estimates: dict[str, dict[str, Any]]) -> str:
    """The attack whose estimate of `metric` means the most leakage (the first one on a tie)."""
    larger_is_safer = METRICS[metric][1]
    best = next(iter(estimates))
    for attack, e in estimates.items():
        x, y = e["estimate"], estimates[best]["estimate"]
        if (x < y) if larger_is_safer else (x > y):
            best = attack
    return best


def worst_case(rows: list[ResultRow], metrics: tuple[str, ...] = WORST_CASE, baseline: str = "none",
               threat_models: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """A defense is as strong as the strongest attack run against it: per (defense, metric), the attack whose
    estimate leaks most (over the published seeds), with its interval and every attack's estimate, and the
    seed-level difference from the baseline's worst case over the same attacks (per seed: the defense under
    its worst attack minus the baseline under its worst attack among those; paired t over the shared seeds).

    Only attacks with an estimate on the metric count; `threat_models` restricts them (e.g. white-box).
    Rows flagged `conclusive: False` (an attack that did not clear its floor) are left out."""
    keep = [r for r in rows if not r.get("calibration") and r.get("conclusive", True) is not False
            and (threat_models is None or r.get("threat_model") in threat_models)]
    cells = group(keep)
    labels = list(dict.fromkeys(lab for _, lab in cells))
    out: list[dict[str, Any]] = []
    for metric in metrics:
        for label in labels:
            ests = {a: e for (a, lab), cell in cells.items() if lab == label and (e := estimate(cell, metric)) is not None}
            if not ests:
                continue
            attack = _leakiest(metric, ests)
            out.append({"label": label, "metric": metric, "attack": attack, **ests[attack],
                        "attacks": {a: e["estimate"] for a, e in ests.items()}})
    for entry in out:
        per_sample = METRICS[entry["metric"]][0]
        if entry["label"] == baseline or per_sample is None:
            continue
        # the baseline's worst case over the attacks this defense also faced: the same chances to leak
        theirs_ests = {a: e for (a, lab), cell in cells.items() if lab == baseline and a in entry["attacks"]
                       and (e := estimate(cell, entry["metric"])) is not None}
        if not theirs_ests:
            continue
        worst_theirs = _leakiest(entry["metric"], theirs_ests)
        mine, theirs = cells[(entry["attack"], entry["label"])], cells[(worst_theirs, baseline)]
        a_ = {r["seed"]: np.mean(r["per_sample"][per_sample]) for r in mine if per_sample in r.get("per_sample", {})}
        b_ = {r["seed"]: np.mean(r["per_sample"][per_sample]) for r in theirs if per_sample in r.get("per_sample", {})}
        seeds = sorted(set(a_) & set(b_))
        if len(seeds) >= 2:
            entry["vs_baseline"] = seed_level_paired({s: np.array([a_[s]]) for s in seeds}, {s: np.array([b_[s]]) for s in seeds}) | {
                "baseline_attack": worst_theirs}
    return out


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
