"""Results and the human-readable report: results.json, report.md, reconstruction grids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .artifacts import write_json_atomic
from .data.splits import SplitData
from .images import save_grid

TABLE_COLUMNS = ["defense", "attack", "natural_acc", "attack_acc@1", "attack_acc@5", "knn_dist", "eval_fid", "train_s", "attack_s"]


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def table_columns(rows: list[dict[str, Any]]) -> list[str]:
    return [c for c in TABLE_COLUMNS if any(c in r for r in rows)]


def text_table(rows: list[dict[str, Any]]) -> str:
    """Plain aligned table of the main columns (what the terminal and report.md show)."""
    cols = table_columns(rows)
    cells = [cols] + [[fmt(r.get(c, "-")) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    cols = table_columns(rows)
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(fmt(r.get(c, "-")) for c in cols) + " |" for r in rows]
    return "\n".join(out)


def reconstruction_grid(images: torch.Tensor, labels: torch.Tensor, nearest_index: list[int], data: SplitData, path: Path) -> Path:
    """Per attacked class: a row of reconstructions, then a row with each one's nearest private image."""
    rows = []
    idx = torch.tensor(nearest_index)
    for c in labels.unique().tolist():
        sel = torch.nonzero(labels == c).view(-1)
        rows.append(images[sel])
        rows.append(data.x_train[idx[sel]])
    return save_grid(rows, path)


def write_results(out: Path, rows: list[dict[str, Any]], protocol: dict[str, Any]) -> Path:
    return _write(out / "results.json", {"protocol": protocol, "rows": rows})


def _write(path: Path, obj: Any) -> Path:
    write_json_atomic(path, obj)
    return path


def write_report(out: Path, title: str, rows: list[dict[str, Any]], protocol: dict[str, Any], grids: dict[str, str]) -> Path:
    """report.md: the table, the confidence shift per defense, grids, and the exact protocol."""
    lines = [f"# {title}", "", markdown_table(rows), ""]
    lines += ["Attack accuracy is judged by the evaluation model "
              f"(`{protocol['evaluation_model']['arch']}`, natural accuracy {protocol['evaluation_model']['natural_acc']:.4f}); "
              "knn_dist is the squared L2 distance in its features to the nearest private training image of the attacked "
              "class (lower = more leakage); eval_fid is a Fréchet distance in the same features (not Inception FID).", ""]
    lines += ["## True-class confidence on the private training set", "",
              "| defense | stage | mean confidence |", "|---|---|---|"]
    for r in rows:
        for stage, mean in r["confidence_by_stage"].items():
            lines.append(f"| {r['defense']} | after `{stage}` | {mean:.4f} |")
    lines.append("")
    lines += ["## Reconstructions", "",
              "Each class: top row = reconstructions, bottom row = each one's nearest private training image (evaluation features).", ""]
    for name, file in grids.items():
        lines += [f"### {name}", "", f"![{name}]({file})", ""]
    lines += ["## Protocol", "", "```", _yaml_like(protocol), "```", "",
              "Every row's full config, artifact paths, versions and split are in `results.json`; "
              "the exact split indices are in `split.json`.", ""]
    path = out / "report.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(path)
    return path


def _yaml_like(obj: Any, indent: int = 0) -> str:
    pad = "  " * indent
    if isinstance(obj, dict):
        parts = []
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v and not (isinstance(v, list) and all(not isinstance(x, (dict, list)) for x in v)):
                parts.append(f"{pad}{k}:\n{_yaml_like(v, indent + 1)}")
            else:
                parts.append(f"{pad}{k}: {v}")
        return "\n".join(parts)
    if isinstance(obj, list):
        return "\n".join(f"{pad}- {_yaml_like(v, indent + 1).strip()}" for v in obj)
    return f"{pad}{obj}"
