"""`calor demo`: train an undefended and a CALoR target on a scenario, attack both with GMI, report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .artifacts import write_json_atomic
from .pipeline import Workspace, attack_target, load_data, result_row, train_evaluation_model, train_target
from .report import reconstruction_grid, text_table, write_report, write_results
from .runtime import versions
from .scenario import Scenario

DEMO_DEFENSES = ("none", "calor")


def run_demo(scenario: Scenario, *, out: Path, seed: int = 0, ws: Workspace | None = None,
             defenses: tuple[str, ...] = DEMO_DEFENSES, attack: str = "gmi") -> list[dict[str, Any]]:
    """Run the demo grid and write results.json, report.md, split.json and grids into `out`."""
    ws = ws or Workspace()
    out = Path(out)
    t0 = time.perf_counter()
    data = load_data(scenario)
    evaluation = train_evaluation_model(scenario, ws)
    rows, grids = [], {}
    for name in defenses:
        target = train_target(scenario, name, seed=seed, ws=ws)
        run = attack_target(scenario, target, attack, seed=seed, ws=ws, eval_model=evaluation)
        rows.append(result_row(scenario, target, run, evaluation))
        file = f"grid_{name}_{attack}.png"
        reconstruction_grid(run.reconstructions.images, run.reconstructions.labels,
                            run.metrics["nearest_private_index"], data, out / file)
        grids[f"{name} × {attack}"] = file
    protocol = {
        "scenario": scenario.name, "seed": seed, "device": str(ws.device),
        "data_split": {k: v for k, v in data.info.items() if k != "indices"},
        "classes_attacked": scenario.attacked_classes(), "reconstructions_per_class": scenario.attack.per_class,
        "attack_iterations": scenario.attack.iterations,
        "evaluation_model": {"arch": scenario.evaluation.arch, "natural_acc": evaluation.meta["metrics"]["natural_acc"],
                             "artifact": str(evaluation.path)},
        "versions": versions(), "wall_seconds": time.perf_counter() - t0,
    }
    write_json_atomic(out / "split.json", data.info)
    write_results(out, rows, protocol)
    write_report(out, f"calor demo — scenario `{scenario.name}`", rows, protocol, grids)
    return rows


__all__ = ["DEMO_DEFENSES", "run_demo", "text_table"]
