"""`calor demo`: the smallest bench — an undefended and a CALoR target, attacked by GMI, one seed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .bench import bench_protocol, plan_bench, run_bench
from .locking import directory_lock
from .workspace import Workspace
from .report import write_report
from .scenario import Scenario

DEMO_DEFENSES = ("none", "calor")
DEMO_ATTACK = "gmi"


def run_demo(scenario: Scenario, *, out: Path, seed: int | None = None, ws: Workspace | None = None) -> list[dict[str, Any]]:
    """Run the demo grid and write results.json, report.md, report.html, split.json and grids into `out`.
    `seed` defaults to the scenario's first published seed; the floor and ceiling rows come with it."""
    seed = seed if seed is not None else int(scenario.seeds[0])
    plan = plan_bench(scenario, list(DEMO_DEFENSES), [DEMO_ATTACK], [seed])
    with directory_lock(Path(out), "calor demo"):
        rows = run_bench(plan, out=Path(out), ws=ws, show=False)
        write_report(Path(out), rows, bench_protocol(plan, rows), f"calor demo — scenario `{scenario.name}`, seed {seed}")
    return rows
