"""Results into something a person reads: aggregated tables (mean ± std over seeds, best marked),
privacy–utility plots with the Pareto front, confidence histograms, sensitivity plots, reconstruction
grids, and the exact protocol — as report.md and a self-contained report.html."""

from __future__ import annotations

import base64
import html
import math
import shutil
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from .artifacts import write_file_atomic, write_json_atomic
from .data.splits import SplitData
from .images import save_grid

# metric -> True if larger is better *for the defender* (more privacy / more utility)
METRICS = {"attack_acc@1": False, "attack_acc@5": False, "knn_dist": True, "eval_fid": True}


def reconstruction_grid(images: torch.Tensor, labels: torch.Tensor, nearest_index: list[int], data: SplitData, path: Path) -> Path:
    """Per attacked class: a row of reconstructions, then a row with each one's nearest private image."""
    rows = []
    idx = torch.tensor(nearest_index)
    for c in labels.unique().tolist():
        sel = torch.nonzero(labels == c).view(-1)
        rows.append(images[sel])
        rows.append(data.x_train[idx[sel]])
    return save_grid(rows, path)


def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt_ms(m: float, s: float) -> str:
    digits = 1 if abs(m) >= 10 else 3
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
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


def _best(agg: dict[str, Any], attack: str | None, metric: str, higher: bool) -> float | None:
    vals = []
    for label in agg["labels"]:
        e = agg["cells"][label]
        v = e[metric][0] if attack is None else e.get(attack, {}).get(metric, (math.nan,))[0]
        if not math.isnan(v):
            vals.append(v)
    if not vals:
        return None
    return max(vals) if higher else min(vals)


def main_table(rows: list[dict[str, Any]], markdown: bool = True) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the main table; the best value per column is marked (bold in markdown, * in text)."""
    agg = aggregate(rows)
    header = ["defense", "natural_acc"]
    cols: list[tuple[str | None, str, bool]] = [(None, "natural_acc", True)]
    for attack in agg["attacks"]:
        for m, higher in METRICS.items():
            if any(m in agg["cells"][lab].get(attack, {}) for lab in agg["labels"]):
                header.append(f"{attack} {m}")
                cols.append((attack, m, higher))
    body = []
    for label in agg["labels"]:
        e = agg["cells"][label]
        line = [label]
        for attack, m, higher in cols:
            mean, std, n = e[m] if attack is None else e[attack][m]
            text = fmt_ms(mean, std) if n > 1 else fmt_ms(mean, std).split(" ± ")[0]  # one seed: no spread to show
            if len(agg["labels"]) > 1 and mean == _best(agg, attack, m, higher):
                text = f"**{text}**" if markdown else f"{text} *"
            line.append(text)
        body.append(line)
    return header, body


WIDE_TABLE_MAX_ATTACKS = 3  # beyond this, report.md/html lay the main table out one line per (attack, defense)


def long_table(rows: list[dict[str, Any]], markdown: bool = True) -> tuple[list[str], list[list[str]]]:
    """The main table's numbers with one line per (attack, defense) and one column per metric: it stays
    readable with many attacks. The best defense per attack and metric is marked as in `main_table`."""
    agg = aggregate(rows)
    metrics = [m for m in METRICS if any(m in agg["cells"][lab].get(a, {}) for lab in agg["labels"] for a in agg["attacks"])]
    header = ["attack", "defense", "natural_acc", *metrics]
    body = []
    for attack in agg["attacks"]:
        for label in agg["labels"]:
            e = agg["cells"][label]
            line = [attack, label]
            for metric, higher in [("natural_acc", True), *[(m, METRICS[m]) for m in metrics]]:
                mean, std, n = e[metric] if metric == "natural_acc" else e[attack].get(metric, (math.nan, 0.0, 0))
                text = "-" if math.isnan(mean) else fmt_ms(mean, std) if n > 1 else fmt_ms(mean, std).split(" ± ")[0]
                if len(agg["labels"]) > 1 and mean == _best(agg, None if metric == "natural_acc" else attack, metric, higher):
                    text = f"**{text}**" if markdown else f"{text} *"
                line.append(text)
            body.append(line)
    return header, body


def text_table(rows: list[dict[str, Any]], width: int | None = None) -> str:
    """Aligned plain-text main table for the terminal (mean ± std over seeds, best marked *); when it is
    wider than `width` (default: the terminal's), the same numbers one line per (attack, defense)."""
    wide = plain_table(*main_table(rows, markdown=False))
    width = width or shutil.get_terminal_size((120, 24)).columns
    if max(len(line) for line in wide.splitlines()) <= width:
        return wide
    return plain_table(*long_table(rows, markdown=False))


CELL_COLUMNS = ["label", "attack", "threat_model", "seed", "natural_acc", "attack_acc@1", "knn_dist", "eval_fid", "queries",
                "prior_queries", "attack_s", "prior_s"]


def cells_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """One line per cell (no aggregation): the raw numbers with queries and wall time."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.1f}" if abs(v) >= 10 else f"{v:.3f}"
        return str(v)

    header = ["defense" if c == "label" else c for c in CELL_COLUMNS]
    return header, [[fmt(r.get(c, "-")) for c in CELL_COLUMNS] for r in rows]


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


def privacy_utility_plot(rows: list[dict[str, Any]], attack: str, path: Path) -> Path:
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


def confidence_histograms(rows: list[dict[str, Any]], path: Path) -> Path:
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


def sensitivity_plot(rows: list[dict[str, Any]], setting_key: str, path: Path) -> Path:
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


def write_report(out: Path, rows: list[dict[str, Any]], protocol: dict[str, Any], title: str) -> dict[str, Path]:
    """Write results.json, figures, report.md and report.html into `out`; return their paths."""
    out = Path(out)
    write_json_atomic(out / "results.json", {"protocol": protocol, "rows": rows})
    figs: list[tuple[str, str, str]] = []  # (section, caption, relative path)
    for attack in dict.fromkeys(r["attack"] for r in rows):
        p = privacy_utility_plot(rows, attack, out / "figures" / f"privacy_utility_{_file_name(attack)}.png")
        figs.append(("Privacy–utility", f"{attack}: natural accuracy vs attack accuracy (mean ± std over seeds)", str(p.relative_to(out))))
    p = confidence_histograms(rows, out / "figures" / "confidence_histograms.png")
    figs.append(("True-class confidence", "private training set, per defense (what Confidence Adaptation moves)", str(p.relative_to(out))))
    for key in protocol.get("sweeps") or {}:
        p = sensitivity_plot(rows, key, out / "figures" / f"sensitivity_{key.replace('.', '_')}.png")
        figs.append(("CALoR sensitivity", f"{key} sweep", str(p.relative_to(out))))
    first_seed = min(r["seed"] for r in rows)
    grids = [(f"{r['label']} × {r['attack']} (seed {r['seed']})", r["grid"]) for r in rows if r["seed"] == first_seed and r.get("grid")]
    many_attacks = len(set(r["attack"] for r in rows)) > WIDE_TABLE_MAX_ATTACKS
    header, body = long_table(rows) if many_attacks else main_table(rows)
    md = [f"# {title}", "", "## Main table", "", markdown_table(header, body), "",
          f"Mean ± std over seeds {protocol.get('seeds')}; **bold** = best {'defense per attack and metric' if many_attacks else 'per column'} (highest natural accuracy, "
          "lowest attack accuracy, largest knn_dist / eval_fid). Attack accuracy is judged by the evaluation model "
          f"({protocol['evaluation_model']['arch']}, natural accuracy {protocol['evaluation_model']['natural_acc']:.4f}); "
          "knn_dist = squared L2 distance in its features to the nearest private training image of the attacked class "
          "(lower = more leakage); eval_fid = Fréchet distance in the same features (not Inception FID).", ""]
    conf = aggregate(rows)
    md += ["| defense | mean true-class confidence (train) |", "|---|---|"]
    md += [f"| {lab} | {fmt_ms(*conf['cells'][lab]['mean_train_confidence'][:2])} |" for lab in conf["labels"]]
    md.append("")
    section = None
    for sec, caption, rel in figs:
        if sec != section:
            md += [f"## {sec}", ""]
            section = sec
        md += [f"![{caption}]({rel})", "", f"*{caption}*", ""]
    md += ["## Reconstructions", "", "Each class: top row = reconstructions, bottom row = each one's nearest private training image.", ""]
    for caption, rel in grids:
        md += [f"### {caption}", "", f"![{caption}]({rel})", ""]
    md += ["## All cells", "", markdown_table(*cells_table(rows)), "",
           "queries = images sent to the target during the attack; prior_queries = images sent while building "
           "target-dependent priors (surrogates, pseudo-labels), one count per pass over the public images; attack_s = attack "
           "wall time in seconds; prior_s = seconds it took to build the priors the attack used (GANs, surrogates), "
           "paid once and shared by every cell that uses the same prior.", ""]
    md += ["## Protocol", "", "```", *_protocol_lines(protocol), "```", "",
           "Every row's full config, artifact paths, versions and split summary are in `results.json`; the exact split "
           "indices are in `split.json`.", ""]
    md_path = out / "report.md"
    _write_text(md_path, "\n".join(md))
    html_path = out / "report.html"
    _write_text(html_path, _html(title, header, body, conf, figs, grids, protocol, out, rows))
    return {"results": out / "results.json", "markdown": md_path, "html": html_path}


def _img(out: Path, rel: str, alt: str) -> str:
    data = base64.b64encode((out / rel).read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _html(title: str, header: list[str], body: list[list[str]], conf: dict[str, Any], figs: list[tuple[str, str, str]],
          grids: list[tuple[str, str]], protocol: dict[str, Any], out: Path, rows: list[dict[str, Any]]) -> str:
    def cell(text: str) -> str:
        if text.startswith("**"):
            return f"<td class=best>{html.escape(text.strip('*'))}</td>"
        return f"<td>{html.escape(text)}</td>"

    table = "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
    table += "".join("<tr>" + "".join(cell(c) for c in r) + "</tr>" for r in body) + "</table>"
    conf_rows = "".join(f"<tr><td>{html.escape(lab)}</td><td>{fmt_ms(*conf['cells'][lab]['mean_train_confidence'][:2])}</td></tr>" for lab in conf["labels"])
    parts = [f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title><style>",
             "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}",
             "table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}",
             "th{background:#f3f3f3}td:first-child{text-align:left}.best{font-weight:bold;background:#e6f4ea}",
             "img{max-width:100%;border:1px solid #ddd;margin:4px}figure{display:inline-block;margin:0 1em 1em 0;vertical-align:top}",
             "figcaption{font-size:12px;color:#555}pre{background:#f7f7f7;padding:1em;font-size:12px;overflow:auto}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>", "<h2 id=main-table>Main table</h2>", table,
             f"<p>Mean ± std over seeds {html.escape(str(protocol.get('seeds')))}; highlighted = best per column. Attack accuracy is judged by "
             f"the evaluation model ({html.escape(str(protocol['evaluation_model']['arch']))}); knn_dist lower = more leakage; eval_fid is not Inception FID.</p>",
             "<h3>Mean true-class confidence (private train)</h3><table><tr><th>defense</th><th>confidence</th></tr>" + conf_rows + "</table>"]
    section = None
    ids = {"Privacy–utility": "privacy-utility", "True-class confidence": "confidence", "CALoR sensitivity": "sensitivity"}
    for sec, caption, rel in figs:
        if sec != section:
            parts.append(f"<h2 id={ids.get(sec, 'figures')}>{html.escape(sec)}</h2>")
            section = sec
        parts.append(f"<figure>{_img(out, rel, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("<h2 id=reconstructions>Reconstructions</h2><p>Each class: top row = reconstructions, bottom row = nearest private training image.</p>")
    for caption, rel in grids:
        parts.append(f"<figure>{_img(out, rel, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>")
    ch, cb = cells_table(rows)
    parts.append("<h2 id=cells>All cells</h2><table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in ch) + "</tr>"
                 + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in cb) + "</table>")
    parts += ["<h2 id=protocol>Protocol</h2><pre>", html.escape("\n".join(_protocol_lines(protocol))), "</pre></body></html>"]
    return "\n".join(parts)


def _write_text(path: Path, text: str) -> None:
    write_file_atomic(path, lambda tmp: tmp.write_text(text))
