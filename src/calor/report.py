"""Results into something a person reads: aggregated tables (mean ± std over seeds, best marked),
privacy–utility plots with the Pareto front, confidence histograms, sensitivity plots, reconstruction
grids, and the exact protocol — as report.md and a self-contained report.html."""

from __future__ import annotations

import base64
import html
import math
import statistics
from pathlib import Path
from typing import Any

import torch

from .artifacts import write_file_atomic, write_json_atomic
from .conclusive import flag_rows
from .data.splits import SplitData
from .images import save_annotated_grid
from .summary import METRICS as METRIC_SPECS
from .summary import (aa_calibration, by_judge, comparisons, diagnostics_summary, estimate, fmt_interval, group, published,
                      significance_marks, worst_case)
from .records import ResultRow


# metric -> True if larger is better *for the defender* (plots' aggregate)
METRICS = {"attack_acc@1": False, "attack_acc@1_open": False, "attack_acc@5": False, "knn_dist": True, "kid": True}


OPEN_SET_MISS = "#e69500"  # orange: a closed-set hit that the open-set judge calls a public class


def reconstruction_grid(images: torch.Tensor, labels: torch.Tensor, nearest_index: list[int], data: SplitData, path: Path,
                        hits: list[int] | None = None, confidence: list[float] | None = None,
                        hits_open: list[int] | None = None) -> Path:
    """Per attacked class: a row of reconstructions, then a row with each one's nearest private image (in the
    judge's features). With `hits`/`confidence` (the judge's closed-set verdicts), every reconstruction is
    framed green (counted as a hit) or red (a miss) and captioned with the judge's true-class confidence;
    with `hits_open` too, a closed-set hit that the open-set verdict rejects (the judge sees a public
    class) is framed orange and captioned "pub"."""
    rows, names, marks = [], [], []
    idx = torch.tensor(nearest_index)
    for c in labels.unique().tolist():
        sel = torch.nonzero(labels == c).view(-1)
        rows += [images[sel], data.x_train[idx[sel]]]
        names += [f"class {data.class_names[c]}", "nearest private"]
        if hits is not None and confidence is not None:
            def mark(i: int) -> tuple[bool | str, str]:
                if hits_open is not None and hits[i] and not hits_open[i]:
                    return OPEN_SET_MISS, f"{confidence[i]:.2f} pub"
                return bool(hits[i]), f"{confidence[i]:.2f}"

            marks += [[mark(i) for i in sel.tolist()], None]
        else:
            marks += [None, None]
    return save_annotated_grid(rows, path, names, marks)


def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt_ms(m: float, s: float) -> str:
    digits = 1 if abs(m) >= 10 else 3
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def aggregate(rows: list[ResultRow]) -> dict[str, Any]:
    """Group rows into {label: {"natural_acc": (m, s, n), attack: {metric: (m, s, n)}}} in first-seen order."""
    labels = list(dict.fromkeys(r["label"] for r in rows))
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    out: dict[str, Any] = {"labels": labels, "attacks": attacks, "cells": {}}
    for label in labels:
        mine = [r for r in rows if r["label"] == label]
        per_seed_acc = {r["seed"]: r["natural_acc"] for r in mine}  # one target per (label, seed)
        entry: dict[str, Any] = {"natural_acc": (*mean_std(list(per_seed_acc.values())), len(per_seed_acc))}
        per_seed_conf = {r["seed"]: r["mean_train_confidence"] for r in mine}
        entry["mean_train_confidence"] = (*mean_std(list(per_seed_conf.values())), len(per_seed_conf))
        for attack in attacks:
            cell = [r for r in mine if r["attack"] == attack]
            entry[attack] = {m: (*mean_std([r[m] for r in cell if m in r]), len(cell)) for m in METRICS if any(m in r for r in cell)}
            entry[attack]["queries"] = (*mean_std([r["queries"] for r in cell]), len(cell))
        out["cells"][label] = entry
    return out


# columns of the results table: (row key, header)
COLUMNS = [("attack_acc@1", "acc@1 [95% CI]"), ("attack_acc@1_open", "open-set acc@1"), ("attack_acc@1_real", "realistic acc@1"),
           ("judge_confidence", "judge conf."),
           ("knn_dist", "knn dist"), ("pixel_mse", "pixel MSE"), ("ssim", "SSIM"), ("kid", "KID"), ("diversity", "diversity"),
           ("coverage", "coverage"), ("degenerate_rate", "blank")]
TERMINAL_COLUMNS = ["attack_acc@1", "attack_acc@1_open", "attack_acc@1_real", "judge_confidence", "knn_dist", "kid"]


def _natural(cell: list[ResultRow]) -> str:
    per_seed = {r["seed"]: r["natural_acc"] for r in cell if "natural_acc" in r}
    if not per_seed:
        return "-"
    m, s = mean_std(list(per_seed.values()))
    return fmt_ms(m, s) if len(per_seed) > 1 else f"{m:.3f}"


def results_table(rows: list[ResultRow], columns: list[str] | None = None, markdown: bool = True,
                  baseline: str = "none", primary: Any = None, comps: list[dict[str, Any]] | None = None) -> tuple[list[str], list[list[str]]]:
    """One line per (attack, defense) over the published seeds, each metric as estimate [95 % interval]
    (`calor.summary.estimate`, the seed as the unit); "↓*"/"↑*" = significantly below/above `none` under
    the same attack in the primary family (paired t over seeds, Holm inside the family), "↓°"/"↑°" = an
    exploratory comparison with unadjusted p < 0.05. The floor and ceiling rows follow under attack
    "calibration"."""
    keep, _ = published(rows)
    cols = [c for c in (columns or [k for k, _ in COLUMNS]) if any(r.get(c) is not None or c in METRIC_SPECS and
                                                                   METRIC_SPECS[c][0] in r.get("per_sample", {}) for r in keep)]
    names = dict(COLUMNS)
    marks = significance_marks(keep, baseline, primary, comps)
    header = ["attack", "defense", "natural acc", *[names.get(c, c) for c in cols]]
    body = []
    cells = group(keep)
    for (attack, label), cell in sorted(cells.items(), key=lambda kv: kv[0][0] == "calibration"):  # calibration last
        line = [attack, label, _natural(cell) if attack != "calibration" else "-"]
        for c in cols:
            text = fmt_interval(estimate(cell, c))
            mark = marks.get((attack, label, c), "")
            line.append(f"{text} {mark}".rstrip())
        body.append(line)
    return header, body


def text_table(rows: list[ResultRow], width: int | None = None, primary: Any = None,
               comps: list[dict[str, Any]] | None = None) -> str:
    """The results table for the terminal (the main metrics; report.md has every column)."""
    return plain_table(*results_table(rows, TERMINAL_COLUMNS, markdown=False, primary=primary, comps=comps))


def terminal_report(rows: list[ResultRow], primary: Any = None) -> str:
    """What `calor bench` and `calor report` print: the worst case over attacks first (when more than one attack
    ran), the results table, and the A/A calibration line when the grid has a replicate."""
    parts = []
    verdicts = flag_rows(rows, judged=published(rows)[0])
    failed = {a: v.to_dict() for a, v in verdicts.items() if not v.conclusive}
    if failed:
        parts.append("INCONCLUSIVE attacks (no more than their floor on none; left out of the worst case)\n"
                     + plain_table(*conclusive_table(failed)) + "\n")
    if len({r["attack"] for r in rows if not r.get("calibration")}) > 1:
        parts.append("worst case over attacks\n" + plain_table(*worst_case_table(rows)) + "\n")
    comps = comparisons(published(rows)[0], primary=primary)
    parts.append(text_table(rows, primary=primary, comps=comps))
    aa = aa_line(rows, comps=comps)
    if aa:
        parts.append("\n" + aa)
    return "\n".join(parts)


WORST_NAMES = {"attack_acc@1_open": "open-set acc@1", "attack_acc@1_real": "realistic acc@1", "attack_acc@1": "acc@1",
               "knn_dist": "knn dist"}


def conclusive_table(verdicts: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Per attack, its result on the baseline against its floor and whether it is conclusive, with the reason
    when not (`calor.conclusive`)."""
    header = ["attack", "baseline acc@1 [95% CI]", "floor", "verdict", "why not"]
    body = [[a, f"{v['estimate']:.3f} [{v['low']:.3f}, {v['high']:.3f}]", f"{v['floor']:.3f} ({v['floor_set']}) + {v['margin']:.2f}",
             "conclusive" if v["conclusive"] else "INCONCLUSIVE", v["reason"] or "-"] for a, v in verdicts.items()]
    return header, body


def worst_case_table(rows: list[ResultRow], baseline: str = "none") -> tuple[list[str], list[list[str]]]:
    """Per defense, the worst case over the attacks run against it, for each leakage metric: the estimate
    with its seed-level interval, the attack that achieved it, and the difference from the baseline's worst
    case over the same attacks (per seed, paired t over seeds). The first table of every report."""
    keep = published(rows)[0]
    entries = worst_case(keep, baseline=baseline)
    metrics = list(dict.fromkeys(e["metric"] for e in entries))
    labels = list(dict.fromkeys(e["label"] for e in entries))
    by = {(e["label"], e["metric"]): e for e in entries}
    # with more than one threat model, the strongest attack of each as its own column (first metric)
    models = sorted({r.get("threat_model") for r in keep if not r.get("calibration") and r.get("threat_model")})
    per_model = {tm: {e["label"]: e for e in worst_case(keep, metrics[:1], baseline, (tm,))} for tm in models} if len(models) > 1 else {}
    header = ["defense", "natural acc", "attacks", *[f"worst {WORST_NAMES.get(m, m)} (attack)" for m in metrics],
              *[f"strongest {tm} ({WORST_NAMES.get(metrics[0], metrics[0])})" for tm in per_model],
              *[f"{WORST_NAMES.get(m, m)}: - {baseline}'s worst over the same attacks [95% CI], p" for m in metrics[:1]]]
    body = []
    for label in labels:
        cell = [r for r in keep if r["label"] == label and not r.get("calibration")]
        counted = {r["attack"] for r in cell if r.get("conclusive", True) is not False}  # as worst_case: conclusive only
        line = [label, _natural(cell), str(len(counted))]
        for m in metrics:
            e = by.get((label, m))
            line.append("-" if e is None else f"{fmt_interval(e)} ({e['attack']}, {e['n_seeds']} seeds)")
        for tm, entries in per_model.items():
            e = entries.get(label)
            line.append("-" if e is None else f"{fmt_interval(e)} ({e['attack']})")
        for m in metrics[:1]:
            vs = (by.get((label, m)) or {}).get("vs_baseline")
            d = 1 if vs and abs(vs["difference"]) >= 10 else 3
            line.append("-" if not vs else f"{vs['difference']:+.{d}f} [{vs['low']:+.{d}f}, {vs['high']:+.{d}f}], p {vs['p_value']:.3f} "
                                            f"(vs {vs['baseline_attack']}, {vs['n_seeds']} seeds)")
        body.append(line)
    return header, body


def comparisons_table(rows: list[ResultRow], baseline: str = "none", primary: Any = None, family: str | None = None,
                      comps: list[dict[str, Any]] | None = None) -> tuple[list[str], list[list[str]]]:
    """Paired differences a - b under the same attack, seeds and latent initialisations, the seed as the unit;
    `family` keeps one family (primary / exploratory / a/a)."""
    header = ["family", "attack", "a", "b", "metric", "a - b [95% CI]", "p (t, seeds)", "p (sign flip, seeds)",
              "p if pairs were independent", "design effect", "pairs (seeds)", "significant"]
    body = []
    for c in comparisons(published(rows)[0], baseline=baseline, primary=primary) if comps is None else comps:
        if family is not None and c["family"] != family:
            continue
        d = 1 if abs(c["difference"]) >= 10 else 3
        if not c["seed_level"]:
            verdict = "one seed: not tested"
        elif c["family"] == "exploratory":
            verdict = "p < 0.05 (unadjusted)" if c["significant_unadjusted"] else "no"
        else:
            verdict = "yes (Holm)" if c["significant_holm"] else ("p < 0.05, not after Holm" if c["significant_unadjusted"] else "no")
        body.append([c["family"], c["attack"], c["a"], c["b"], c["metric"],
                     f"{c['difference']:+.{d}f} [{c['low']:+.{d}f}, {c['high']:+.{d}f}]",
                     f"{c['p_value']:.4f}" if c["seed_level"] else "-", f"{c['p_sign_flip']:.4f}" if c["seed_level"] else "-",
                     f"{c.get('p_naive', c['p_value']):.4f}", f"{c['design_effect']:.2f}" if c["seed_level"] else "-",
                     f"{c['n_pairs']} ({c['n_seeds']})", verdict])
    return header, body


def judges_agreement_table(rows: list[ResultRow], primary: Any = None,
                           comps: list[dict[str, Any]] | None = None) -> tuple[list[str], list[list[str]]]:
    """Every primary comparison under each judge's own per-sample verdicts, and whether the conclusion holds
    under all of them (same direction; significant under each where the primary judge's test is)."""
    keep = published(rows)[0]
    entries = by_judge(keep, comparisons(keep, primary=primary) if comps is None else comps)
    if not entries:
        return [], []
    judges = list(dict.fromkeys(j for e in entries for j in e["judges"]))
    header = ["attack", "a", "b", "metric", *[f"{j}: a - b [95% CI], p" for j in judges], "holds under every judge"]
    body = []
    for e in entries:
        line = [e["attack"], e["a"], e["b"], e["metric"]]
        for j in judges:
            r = e["judges"].get(j)
            line.append("-" if r is None else f"{r['difference']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}], p {r['p_value']:.3f}")
        line.append(("yes" if e["holds"] else "NO") + (" (significant)" if e["significant"] else ""))
        body.append(line)
    return header, body


def aa_line(rows: list[ResultRow], baseline: str = "none", comps: list[dict[str, Any]] | None = None) -> str | None:
    """The A/A calibration sentence of a report (None without a replicate)."""
    aa = aa_calibration(comparisons(published(rows)[0], baseline=baseline) if comps is None else comps)
    if aa is None:
        return None
    pairs = ", ".join(f"{a} vs {b}" for a, b in aa["pairs"])
    return (f"A/A calibration ({pairs}; the same defense trained twice, everything else shared): of {aa['comparisons']} seed-level "
            f"comparisons over {len(aa['attacks'])} attacks, {aa['unadjusted']} have p < 0.05 unadjusted (empirical false-positive "
            f"rate {aa['rate_unadjusted']:.3f}; nominal 0.05), {aa['holm']} survive Holm inside the A/A family, and {aa['naive']} "
            f"({aa['rate_naive']:.3f}) would have been called significant by a test that took the reconstructions as independent.")


def floor_ceiling_table(rows: list[ResultRow]) -> tuple[list[str], list[list[str]]]:
    """Set-level metrics read against their floor (prior samples) and ceiling (held-out private images): each
    value with its position between the two, 0 = the floor, 1 = the ceiling (towards 1 = more like the
    private data). Coverage is shown only where floor and ceiling differ by more than 0.1 (else it has no range)."""
    keep = published(rows)[0]
    cells = group(keep)
    metrics = []
    bounds: dict[str, tuple[float, float]] = {}
    for m in ("kid", "diversity", "coverage"):
        lo_e, hi_e = (estimate(cells.get(("calibration", n), []), m) for n in ("floor: prior", "ceiling: private test"))
        if lo_e is None or hi_e is None or lo_e["estimate"] == hi_e["estimate"]:
            continue
        if m == "coverage" and abs(hi_e["estimate"] - lo_e["estimate"]) <= 0.1:
            continue
        metrics.append(m)
        bounds[m] = (lo_e["estimate"], hi_e["estimate"])
    if not metrics:
        return [], []
    header = ["attack", "defense", *[f"{m} (floor {bounds[m][0]:.3g} → ceiling {bounds[m][1]:.3g}): value, position" for m in metrics]]
    body = []
    for (attack, label), cell in cells.items():
        line = [attack, label]
        for m in metrics:
            e = estimate(cell, m)
            if e is None:
                line.append("-")
                continue
            lo, hi = bounds[m]
            line.append(f"{e['estimate']:.3g}, {(e['estimate'] - lo) / (hi - lo):.2f}")
        body.append(line)
    return header, body


def judges_table(rows: list[ResultRow]) -> tuple[list[str], list[list[str]]]:
    """acc@1 (closed / open set / realistic) by every judge, mean over seeds, and how far the judges agree on the
    open-set verdicts (Cohen's kappa, mean over seeds); the judges' own private-test accuracy in the header."""
    keep = published(rows)[0]
    judges = list(dict.fromkeys(j for r in keep for j in r.get("judges", {})))
    if not judges:
        return [], []
    acc = {j: next(r["judges"][j]["natural_acc"] for r in keep if j in r.get("judges", {})) for j in judges}
    header = ["attack", "defense", *[f"{j} ({acc[j]:.4f}) closed / open / realistic" for j in judges]]
    agreement = any(r.get("judge_agreement") for r in keep)
    if agreement:
        header.append("open-set agreement (kappa)")
    body = []
    for (attack, label), cell in group(keep).items():
        line = [attack, label]
        for j in judges:
            vals = [r["judges"][j] for r in cell if j in r.get("judges", {})]
            if not vals:
                line.append("-")
                continue
            real = [v["acc@1_real"] for v in vals if "acc@1_real" in v]
            line.append(f"{statistics.fmean(v['acc@1'] for v in vals):.3f} / {statistics.fmean(v['acc@1_open'] for v in vals):.3f}"
                        + (f" / {statistics.fmean(real):.3f}" if real else ""))
        if agreement:
            pairs = [p for r in cell for p in (r.get("judge_agreement") or {}).get("hit_open", {}).values()]
            agree = [p["agreement"] for p in pairs if p.get("agreement") is not None]
            kappas = [p["kappa"] for p in pairs if p.get("kappa") is not None]
            line.append((f"{statistics.fmean(agree):.3f}" if agree else "-") + (f" ({statistics.fmean(kappas):.2f})" if kappas else ""))
        body.append(line)
    return header, body


def diagnostics_table(rows: list[ResultRow]) -> tuple[list[str], list[list[str]]]:
    """Saturated bottleneck units and latent-gradient norm relative to the undefended target along the path."""
    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    header = ["attack", "defense", "saturated units: start / mid / end", "grad norm ÷ none's: start / mid / end", "grad norm: start / end", "seeds"]
    body = []
    for (attack, label), d in diagnostics_summary(published(rows)[0]).items():
        body.append([attack, label, " / ".join(map(f, d["saturated"])), " / ".join(map(f, d["grad_ratio"])),
                     " / ".join(map(f, d["grad_norm"])), str(d["seeds"])])
    return header, body


CELL_COLUMNS = ["label", "attack", "threat_model", "seed", "natural_acc", "attack_acc@1", "attack_acc@1_open", "knn_dist", "kid",
                "queries", "prior_queries", "attack_s", "prior_s"]


def cells_table(rows: list[ResultRow]) -> tuple[list[str], list[list[str]]]:
    """One line per cell (no aggregation): the raw numbers with queries and wall time; tuning seeds marked."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.1f}" if abs(v) >= 10 else f"{v:.3f}"
        return str(v)

    header = ["defense" if c == "label" else c for c in CELL_COLUMNS]
    body = []
    for r in rows:
        line = [fmt(r.get(c, "-")) for c in CELL_COLUMNS]
        if r.get("tuning_seed"):
            line[3] += " (tuning)"
        body.append(line)
    return header, body


def plain_table(header: list[str], body: list[list[str]]) -> str:
    cells = [header] + body
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells)


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])


# ----------------------------------------------------------------------------------------------- plots

def _file_name(label: str) -> str:
    """A label such as `adaptive-bpda[base=lomma-kedmi]` as a plain file-name part."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label).strip("_")


def _save_figure(plt: Any, fig: Any, path: Path) -> Path:
    try:
        fig.tight_layout()
        return write_file_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points (attack_acc, natural_acc) not dominated by another (lower attack acc and higher natural acc)."""
    front = [p for p in points if not any(q != p and q[0] <= p[0] and q[1] >= p[1] for q in points)]
    return sorted(set(front))


def privacy_utility_plot(rows: list[ResultRow], attack: str, path: Path) -> Path:
    plt = _pyplot()
    agg = aggregate(rows)
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    pts = []
    for label in agg["labels"]:
        e = agg["cells"][label]
        if attack not in e or "attack_acc@1" not in e[attack]:
            continue
        (am, as_, _), (nm, ns, _) = e[attack]["attack_acc@1"], e["natural_acc"]
        ax.errorbar(am, nm, xerr=as_, yerr=ns, fmt="o", capsize=3, label=label)
        pts.append((am, nm))
    front = pareto_front(pts)
    if len(front) > 1:
        ax.plot([p[0] for p in front], [p[1] for p in front], "--", color="grey", lw=1, label="Pareto front")
    ax.set_xlabel(f"attack accuracy @1 ({attack}) — lower is more private")
    ax.set_ylabel("natural accuracy — higher is more useful")
    ax.set_title(f"privacy–utility: {attack}")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return _save_figure(plt, fig, path)


def confidence_histograms(rows: list[ResultRow], path: Path) -> Path:
    """True-class confidence on the private training set per defense (first seed's target)."""
    plt = _pyplot()
    seen: dict[str, list[int]] = {}
    for r in rows:
        if r["label"] not in seen and r.get("train_confidence_histogram"):
            seen[r["label"]] = r["train_confidence_histogram"]
    n = max(len(seen), 1)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.6), sharey=True, squeeze=False)
    for ax, (label, hist) in zip(axes[0], seen.items()):
        total = max(sum(hist), 1)
        edges = [i / len(hist) for i in range(len(hist))]
        ax.bar(edges, [h / total for h in hist], width=1 / len(hist), align="edge", color="#4477aa")
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("true-class confidence", fontsize=7)
        ax.set_xlim(0, 1)
    axes[0][0].set_ylabel("fraction of training images", fontsize=7)
    return _save_figure(plt, fig, path)


def sensitivity_plot(rows: list[ResultRow], setting_key: str, path: Path) -> Path:
    """`defense.setting` sweep: natural accuracy and each attack's accuracy against the setting's value."""
    plt = _pyplot()
    defense, setting = setting_key.split(".", 1)
    mine = [r for r in rows if r["defense"] == defense and (not r["variant"] or set(r["variant"]) == {setting})]
    def value(r: dict[str, Any]) -> float:
        return float(r["variant"].get(setting, r["defense_config"][setting]))
    xs = sorted({value(r) for r in mine})
    fig, ax = plt.subplots(figsize=(5, 3.6))
    nat = [mean_std(list({r["seed"]: r["natural_acc"] for r in mine if value(r) == x}.values())) for x in xs]
    ax.errorbar(xs, [m for m, _ in nat], yerr=[s for _, s in nat], marker="o", capsize=3, label="natural acc")
    for attack in dict.fromkeys(r["attack"] for r in mine):
        acc = [mean_std([r["attack_acc@1"] for r in mine if value(r) == x and r["attack"] == attack]) for x in xs]
        ax.errorbar(xs, [m for m, _ in acc], yerr=[s for _, s in acc], marker="s", capsize=3, label=f"{attack} acc@1")
    ax.set_xlabel(f"{defense} {setting}")
    ax.set_ylabel("accuracy")
    ax.set_title(f"sensitivity: {setting_key}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save_figure(plt, fig, path)


# ---------------------------------------------------------------------------------------------- writers

def _protocol_lines(protocol: dict[str, Any], indent: int = 0) -> list[str]:
    pad = "  " * indent
    lines = []
    for k, v in protocol.items():
        if isinstance(v, dict) and v:
            lines.append(f"{pad}{k}:")
            lines += _protocol_lines(v, indent + 1)
        else:
            lines.append(f"{pad}{k}: {v}")
    return lines


def _warnings(rows: list[ResultRow], protocol: dict[str, Any]) -> list[str]:
    """What a reader must know before reading a number: a weak judge, tuning seeds, too little data."""
    out = []
    weak = sorted({f"{r['label']} (seed {r['seed']}): judge {r['judge']['natural_acc']:.4f} vs target {r['judge']['target_natural_acc']:.4f}"
                   for r in rows if r.get("judge", {}).get("stronger_than_target") is False})
    if weak:
        out.append("**The judge is NOT stronger than these targets; their attack accuracies are not evidence:** " + "; ".join(weak))
    _, tuning_only = published(rows)
    if tuning_only:
        out.append(f"**Every row is on a tuning seed** (the scenario's defaults were chosen on seeds {protocol.get('tuning_seeds')}): "
                   "these numbers are not an independent test of those defaults.")
    elif any(r.get("tuning_seed") for r in rows):
        out.append(f"Rows on tuning seeds {protocol.get('tuning_seeds')} are left out of the tables (they are in `results.json` and "
                   "the cell list).")
    seeds = {r["seed"] for r in published(rows)[0] if not r.get("calibration")}
    if len(seeds) == 1:
        out.append("One seed: intervals cover the reconstructions of one trained target, not the variation between trainings.")
    stale = stale_cells(rows)
    if stale:
        mods = sorted({m for ms in stale.values() for m in ms})
        out.append(f"**{len(stale)} cells were computed by older code** (changed since: {', '.join(mods[:6])}"
                   f"{'...' if len(mods) > 6 else ''}): their numbers are not what this calor computes; `calor bench` on the "
                   "same directory recomputes them.")
    return out


def stale_cells(rows: list[ResultRow]) -> dict[str, list[str]]:
    """Cells whose recorded code versions (their attack's and their target's) differ from this calor's: cell
    id -> the modules that changed. Rows without recorded versions (floors, audits) are not judged."""
    from .versioning import version

    out: dict[str, list[str]] = {}
    for r in rows:
        changed = []
        for field in ("code", "target_code"):
            recorded = r.get(field)
            if isinstance(recorded, dict):
                changed += [f"{m} v{v} -> v{version(m)}" for m, v in recorded.items() if version(m) != v]
        if changed:
            out[str(r.get("cell") or f"{r['label']}/{r['attack']}/s{r['seed']}")] = changed
    return out



SECTION_IDS = {"Privacy–utility": "privacy-utility", "True-class confidence": "confidence", "CALoR sensitivity": "sensitivity"}

READING = ("acc@1: share of reconstructions the primary judge assigns to the attacked class among the private classes "
           "(closed set, the field's metric). Every interval counts the seed (one trained target, one prior) as the unit: rates are the "
           "mean of the seeds' rates with a Wilson interval at the clustered effective sample size and a t quantile of seeds - 1 "
           "degrees of freedom (plain Wilson for one seed); values are means of seed means with a t interval over seeds. "
           "open-set acc@1: the same judge also knows the public classes; a public-looking image is a miss. realistic acc@1: an "
           "open-set hit that is also not blank and lies, in the judge's features, as close to the private images of its class as "
           "natural images do. judge conf.: the judge's mean true-class probability (closed set). knn dist: squared L2 distance in "
           "the judge's features to the nearest private training image of the class; pixel MSE / SSIM: to the nearest private image "
           "of the class in pixel space (lower MSE / higher SSIM = closer). KID: unbiased kernel distance to the private images of "
           "the attacked classes in the judge's features; being unbiased it can be below 0, and the ceiling row (held-out private "
           "images) is the value of the same distribution, not 0. diversity (mean pairwise feature distance within a class) and "
           "coverage (share of private images with a reconstruction in their 5-NN ball, PRDC) have no direction of their own: "
           "the floors are the most diverse sets; read them in the floor-and-ceiling table. blank: share of near-constant images. "
           "↓* / ↑*: below / above `none` under the same attack in the primary family (declared in the scenario before the run; "
           "paired t over seeds, Holm inside the family); ↓° / ↑°: an exploratory comparison with unadjusted p < 0.05 (no "
           "marks from one seed). The calibration rows are the same metrics on images no attack made: GAN samples at the attacks' "
           "starting latents (floor: prior), public images (floor: public) and held-out private images (ceiling: private test).")


def write_report(out: Path, rows: list[ResultRow], protocol: dict[str, Any], title: str) -> dict[str, Path]:
    """Write results.json, figures, report.md and report.html into `out`; return their paths."""
    out = Path(out)
    keep, _ = published(rows)
    verdicts = flag_rows(rows, judged=keep)  # an attack that learnt nothing from `none` is left out of the worst case
    write_json_atomic(out / "results.json", {"protocol": protocol, "rows": rows})
    attacked = [r for r in keep if not r.get("calibration")]
    figs: list[tuple[str, str, str]] = []  # (section, caption, relative path)
    for attack in dict.fromkeys(r["attack"] for r in attacked):
        p = privacy_utility_plot(attacked, attack, out / "figures" / f"privacy_utility_{_file_name(attack)}.png")
        figs.append(("Privacy–utility", f"{attack}: natural accuracy vs attack accuracy (mean ± std over seeds)", str(p.relative_to(out))))
    if attacked:
        p = confidence_histograms(attacked, out / "figures" / "confidence_histograms.png")
        figs.append(("True-class confidence", "private training set, per defense (what Confidence Adaptation moves)", str(p.relative_to(out))))
    for key in protocol.get("sweeps") or {}:
        p = sensitivity_plot(attacked, key, out / "figures" / f"sensitivity_{key.replace('.', '_')}.png")
        figs.append(("CALoR sensitivity", f"{key} sweep", str(p.relative_to(out))))
    first_seed = min((r["seed"] for r in keep), default=None)
    grids = [(f"{r['label']} × {r['attack']} (seed {r['seed']})", r["grid"]) for r in keep if r["seed"] == first_seed and r.get("grid")]
    blocks: list[tuple[Any, ...]] = [("h1", title)]
    blocks += [("warn", w) for w in _warnings(rows, protocol)]
    primary = protocol.get("primary")
    worst = worst_case_table(rows)
    if verdicts:
        blocks += [("h2", "Did each attack learn anything?", "conclusive"),
                   ("table", *conclusive_table({a: v.to_dict() for a, v in verdicts.items()})),
                   ("p", "On `none`, an attack is conclusive when its seed-level interval of acc@1 lies above its floor (the higher "
                         "of `floor: prior` and `floor: public`) and its estimate clears the floor by the margin; an inconclusive "
                         "attack measured nothing and is left out of the worst case (calor.conclusive).")]
    if verdicts and not any(v.conclusive for v in verdicts.values()):
        blocks += [("h2", "Worst case over attacks", "worst-case"),
                   ("warn", "No attack recovered more than its floor from `none`: there is no worst case to report, and the "
                            "low numbers below are no evidence of low leakage.")]
    elif worst[1]:
        blocks += [("h2", "Worst case over attacks", "worst-case"), ("table", *worst),
                   ("p", "A defense is as strong as the strongest attack run against it. Per defense and metric: the attack whose "
                         "estimate leaks most (its seed-level 95 % interval, the attack, the seeds it ran on); the last column is "
                         "the per-seed difference between this defense under its worst attack and `none` under its worst attack "
                         "among the same attacks (paired t over the shared seeds). Attacks differ in how many seeds and defenses they ran on: a "
                         "defense attacked by fewer attacks has had fewer chances to leak. The worst attack is chosen on the same "
                         "data it is reported on, so the estimate leans high.")]
    comps = comparisons(keep, primary=primary)  # once: every table below reads the same comparisons
    blocks += [("h2", "Results", "results"), ("table", *results_table(rows, primary=primary, comps=comps)), ("p", READING)]
    fc = floor_ceiling_table(rows)
    if fc[1]:
        blocks += [("h3", "Set-level metrics between floor and ceiling"), ("table", *fc),
                   ("p", "position = (value - floor) / (ceiling - floor) with floor = prior samples and ceiling = held-out private "
                         "images: 0 is what the attacker gets for free, 1 is what real private images score.")]
    aa = aa_line(rows, comps=comps)
    if aa:
        blocks += [("h2", "A/A calibration", "aa"), ("p", aa), ("table", *comparisons_table(rows, family="a/a", comps=comps))]
    for fam, title, text in (
            ("primary", "Primary comparisons", "The comparisons declared before the run (the scenario's `primary:` block). One mean "
             "difference per seed; p from the paired t-test over seeds (the sign-flip test over seeds beside it needs no normality "
             "but cannot go below 2/2^seeds); Holm over this family only. 'p if pairs were independent' is the pair-level test "
             "earlier versions used, and 'design effect' 1 + (m - 1) ICC says how much it overstates."),
            ("exploratory", "Exploratory comparisons", "Every other comparison: the same seed-level tests, unadjusted p, no "
             "correction — hypotheses for a later run, not conclusions.")):
        comp = comparisons_table(rows, primary=primary, family=fam, comps=comps)
        if comp[1]:
            blocks += [("h2", title, "comparisons" if fam == "primary" else "exploratory"), ("table", *comp), ("p", text)]
    ja = judges_agreement_table(rows, primary, comps)
    if ja[1]:
        blocks += [("h2", "Conclusions under each judge", "by-judge"), ("table", *ja),
                   ("p", "The primary comparisons recomputed with each judge's own per-reconstruction verdicts (every row stores "
                         "them). A conclusion holds when every judge sees the same direction and, where the primary judge's "
                         "test survives Holm, each judge's test has p < 0.05.")]
    jt = judges_table(rows)
    if jt[1]:
        blocks += [("h2", "Judges", "judges"), ("table", *jt),
                   ("p", "acc@1 by every judge (private-test accuracy in brackets), closed set / open set / realistic; the first is "
                         "the primary judge whose features give the other metrics. Agreement: share of reconstructions on which the "
                         "judges' open-set verdicts agree, Cohen's kappa in brackets.")]
    dt = diagnostics_table(rows)
    if dt[1]:
        blocks += [("h2", "Mechanism diagnostics", "diagnostics"), ("table", *dt),
                   ("p", "Replaying each white-box attack's latent path: the share of low-rank bottleneck units with |tanh| > 0.99, and "
                         "the median per-latent norm of d CE / dz for the target divided by the same for the undefended target of the "
                         "seed on the same latents (medians over seeds, at the start, middle and end of the optimisation).")]
    confs = aggregate(attacked) if attacked else {"labels": []}
    if confs["labels"]:
        blocks += [("h3", "Mean true-class confidence (private train)"),
                   ("table", ["defense", "confidence"], [[lab, fmt_ms(*confs["cells"][lab]["mean_train_confidence"][:2])] for lab in confs["labels"]])]
    section = None
    for sec, caption, rel in figs:
        if sec != section:
            blocks.append(("h2", sec, SECTION_IDS.get(sec, _file_name(sec).lower())))
            section = sec
        blocks.append(("figure", caption, rel))
    blocks += [("h2", "Reconstructions", "reconstructions"),
               ("p", "Each class: a row of reconstructions, framed green when the primary judge counts it as a hit, orange when it is a hit only in the closed set (the open-set verdict is a public class) and red when it is a miss, "
                     "captioned with the judge's true-class confidence; under it, each one's nearest private training image (judge features).")]
    blocks += [("figure", caption, rel) for caption, rel in grids]
    blocks += [("h2", "All cells", "cells"), ("table", *cells_table(rows)),
               ("p", "queries = images sent to the target during the attack; prior_queries = images sent while building "
                     "target-dependent priors; attack_s = attack wall time in seconds; prior_s = seconds it took to build the priors the "
                     "attack used, paid once and shared by every cell that uses the same prior."),
               ("h2", "Protocol", "protocol"), ("pre", "\n".join(_protocol_lines(protocol))),
               ("p", "Every row's full config, artifact paths, versions (CPU, kernels, threads) and split summary are in `results.json`; "
                     "the exact split indices are in `split.json`.")]
    md_path = out / "report.md"
    _write_text(md_path, _markdown(blocks))
    html_path = out / "report.html"
    _write_text(html_path, _html(blocks, out))
    return {"results": out / "results.json", "markdown": md_path, "html": html_path}


def _markdown(blocks: list[tuple[Any, ...]]) -> str:
    md: list[str] = []
    for kind, *args in blocks:
        if kind in ("h1", "h2", "h3"):
            md += ["#" * int(kind[1]) + " " + args[0], ""]
        elif kind == "warn":
            md += [f"> ⚠ {args[0]}", ""]
        elif kind == "p":
            md += [args[0], ""]
        elif kind == "table":
            md += [markdown_table(args[0], args[1]), ""]
        elif kind == "figure":
            md += [f"![{args[0]}]({args[1]})", "", f"*{args[0]}*", ""]
        elif kind == "pre":
            md += ["```", args[0], "```", ""]
    return "\n".join(md)


def _img(out: Path, rel: str, alt: str) -> str:
    data = base64.b64encode((out / rel).read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _html(blocks: list[tuple[Any, ...]], out: Path) -> str:
    title = next(b[1] for b in blocks if b[0] == "h1")
    parts = [f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title><style>",
             "body{font-family:system-ui,sans-serif;max-width:1300px;margin:2em auto;padding:0 1em;color:#222}",
             "table{border-collapse:collapse;font-size:12px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}",
             "th{background:#f3f3f3}td:first-child,td:nth-child(2){text-align:left}.warn{background:#fdecea;padding:.6em 1em;border-left:4px solid #c62828}",
             "img{max-width:100%;border:1px solid #ddd;margin:4px}figure{display:inline-block;margin:0 1em 1em 0;vertical-align:top}",
             "figcaption{font-size:12px;color:#555}p{font-size:13px}pre{background:#f7f7f7;padding:1em;font-size:12px;overflow:auto}</style></head><body>"]
    for kind, *args in blocks:
        if kind == "h1":
            parts.append(f"<h1>{html.escape(args[0])}</h1>")
        elif kind in ("h2", "h3"):
            anchor = f" id={args[1]}" if len(args) > 1 else ""
            parts.append(f"<{kind}{anchor}>{html.escape(args[0])}</{kind}>")
        elif kind == "warn":
            parts.append(f"<p class=warn>{html.escape(args[0].replace('**', ''))}</p>")
        elif kind == "p":
            parts.append(f"<p>{html.escape(args[0])}</p>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in args[0])
            body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in args[1])
            parts.append(f"<table><tr>{head}</tr>{body}</table>")
        elif kind == "figure":
            parts.append(f"<figure>{_img(out, args[1], args[0])}<figcaption>{html.escape(args[0])}</figcaption></figure>")
        elif kind == "pre":
            parts.append(f"<pre>{html.escape(args[0])}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _write_text(path: Path, text: str) -> None:
    write_file_atomic(path, lambda tmp: tmp.write_text(text))
