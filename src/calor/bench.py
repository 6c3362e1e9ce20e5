"""`calor bench`: the defenses x attacks x seeds grid, planned, resumable, stored one cell at a time.

Each finished cell is one JSON file under `<out>/cells/`, written atomically, so killing a bench at
any moment loses at most the cell in progress; rerunning skips finished cells and redoes the rest.
Shared work is shared through the artifact cache: one evaluation model per scenario, one target per
(defense settings, seed), one prior per (attack prior config, seed[, target]).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .artifacts import config_hash, find_artifact, load_artifact, write_json_atomic
from .attacks import ATTACKS
from .attacks.base import build_attack
from .checkpoint import DEFAULT_EVERY_SECONDS
from .config import from_dict, to_dict
from .defenses import DEFENSES
from .errors import CalorError, ConfigError
from .attacks.oracle import ThreatModel
from .evaluation import CALIBRATION_SETS
from .workspace import Workspace, attack_code, classifier_code
from .attack_runs import attack_target
from .rows import calibration_row, result_row
from .scenario_data import data_key, load_data
from .targets import train_judges, train_target
from . import parallel
from .locking import directory_lock
from .progress import console, log
from .report import reconstruction_grid
from .runtime import configure_threads, resolve_device, set_precision, versions
from .versioning import stale_modules
from .scenario import Scenario, attack_settings
from .summary import REPLICA

# Rough 2-core CPU costs at 32x32 with the mnist budgets (benchmarks/ figures), for --dry-run estimates.
SECONDS_PER_TARGET_EPOCH_PER_1K_IMAGES = 0.6
SECONDS_PER_GAN_STEP = {"dcgan": 0.08, "wgan-gp": 0.4}
SECONDS_PER_ATTACK_ITERATION_PER_25_IMAGES = 0.027  # GMI
# Measured on the mnist attack battery (README, 2 CPU cores, seed 0): each attack's time relative to
# GMI's at the same iterations and images, and the priors it needs, in units of the shared GAN prior's
# training time. "gan" is shared by every attack of a seed; the other priors are built once per target.
# An attack missing here is estimated like GMI.
ATTACK_COST: dict[str, tuple[float, dict[str, float]]] = {
    "gmi": (1.0, {"gan": 1.0}),
    "kedmi": (0.5, {"kedmi-gan": 2.0}),
    "plgmi": (1.7, {"plgmi-cgan": 1.7}),
    "lomma-gmi": (2.9, {"gan": 1.0, "lomma-surrogates": 0.75}),
    "lomma-kedmi": (1.2, {"kedmi-gan": 2.0, "lomma-surrogates": 0.75}),
    "brepmi": (17.0, {"gan": 1.0}),
    "mirror-b": (7.0, {"gan": 1.0}),
    "lokt": (1.5, {"gan": 1.0, "lokt-surrogates": 1.3}),
    "adaptive-pstar": (1.05, {"gan": 1.0}),
    "adaptive-logit": (1.05, {"gan": 1.0}),
    "adaptive-bpda": (1.05, {"gan": 1.0}),
    "adaptive-surrogate": (1.05, {"gan": 1.0, "adaptive-surrogate": 0.45}),
}


@dataclass(frozen=True)
class Cell:
    """One (defense settings, attack, seed) point of the grid."""

    defense: str
    attack: str
    seed: int
    variant: tuple[tuple[str, str], ...] = ()  # defense settings overriding the scenario's (from --sweep)
    attack_variant: tuple[tuple[str, str], ...] = ()  # attack settings (from --attacks NAME[key=value])
    replicate: int = 0  # > 0: an independent copy of the defense's target (A/A calibration, --aa)

    @property
    def settings(self) -> dict[str, str]:
        return dict(self.variant)

    @property
    def attack_settings(self) -> dict[str, str]:
        return dict(self.attack_variant)

    @property
    def label(self) -> str:
        base = self.defense + "".join(f"[{k}={v}]" for k, v in self.variant)
        return f"{base}{REPLICA}{self.replicate}" if self.replicate else base

    @property
    def attack_label(self) -> str:
        """The attack as written on the command line (parse_attack_spec reads it back)."""
        settings = ",".join(f"{k}={v}" for k, v in self.attack_variant)
        return f"{self.attack}[{settings}]" if settings else self.attack

    def key(self, scenario: Scenario) -> dict[str, Any]:
        # `primary` is a reporting choice, and an empty `attacks:` block changes nothing: neither changes a cell's id
        scenario_key = {k: v for k, v in scenario.to_dict().items() if k != "primary" and not (k == "attacks" and not v)}
        key = {"scenario": scenario_key, "defense": self.defense, "variant": list(map(list, self.variant)),
               "attack": self.attack, "seed": self.seed}
        if self.attack_variant:  # only when set, so that cells stored before attack variants keep their ids
            key["attack_variant"] = list(map(list, self.attack_variant))
        if self.replicate:
            key["replicate"] = self.replicate
        return key

    def cell_id(self, scenario: Scenario) -> str:
        name = f"{self.label}-{self.attack_label}-s{self.seed}"
        return name.replace("[", "_").replace("]", "").replace("=", "") + "-" + config_hash(self.key(scenario))[:8]


@dataclass
class BenchPlan:
    scenario: Scenario
    cells: list[Cell]
    sweeps: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario.name, "cells": [c.cell_id(self.scenario) for c in self.cells], "sweeps": self.sweeps}


def parse_sweeps(specs: list[str]) -> dict[str, list[str]]:
    """['calor.rank=2,4', 'calor.gamma=4,8'] -> {'calor.rank': ['2', '4'], 'calor.gamma': ['4', '8']}."""
    out: dict[str, list[str]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        if not sep or "." not in key or not values.strip():
            raise ConfigError(f"--sweep {spec!r}: expected DEFENSE.SETTING=V1,V2,... (e.g. calor.rank=2,4,8)")
        out[key.strip()] = [v.strip() for v in values.split(",") if v.strip()]
    return out


def split_specs(text: str) -> list[str]:
    """'gmi,adaptive-bpda[base=kedmi,iterations=50]' -> ['gmi', 'adaptive-bpda[base=kedmi,iterations=50]']:
    commas split the list except inside brackets."""
    out, depth, current = [], 0, ""
    for ch in text:
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            out.append(current)
            current = ""
        else:
            current += ch
    return [spec.strip() for spec in [*out, current] if spec.strip()]


def parse_attack_spec(spec: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """'adaptive-bpda[base=lomma-kedmi]' -> ('adaptive-bpda', (('base', 'lomma-kedmi'),)); 'gmi' -> ('gmi', ())."""
    name, bracket, rest = spec.partition("[")
    if not bracket:
        return spec.strip(), ()
    if not rest.endswith("]"):
        raise ConfigError(f"attack {spec!r}: expected NAME or NAME[key=value,...]")
    pairs = []
    for item in split_specs(rest[:-1]):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"attack {spec!r}: {item!r} is not key=value")
        pairs.append((key.strip(), value.strip()))
    return name.strip(), tuple(pairs)


def plan_bench(scenario: Scenario, defenses: list[str], attacks: list[str], seeds: list[int], sweeps: dict[str, list[str]] | None = None,
               replicates: list[str] | None = None) -> BenchPlan:
    """All cells, validating every name and setting before anything runs.

    An attack may carry settings, `adaptive-bpda[base=lomma-kedmi]`: a column of its own. A sweep varies
    one defense setting at a time around the scenario's defaults (a sensitivity analysis, not a full
    product): `calor.rank=2,4` adds the cells calor[rank=2] and calor[rank=4]. `replicates` (A/A
    calibration) adds, for each named defense, an independently trained copy `DEFENSE~aa1` under every
    attack and seed, compared with the original like any defense."""
    sweeps = sweeps or {}
    replicates = replicates or []
    if [d for d in replicates if d not in defenses]:
        raise ConfigError(f"--aa {', '.join(d for d in replicates if d not in defenses)}: an A/A replicate copies a defense "
                          "of --defenses")
    parsed = [parse_attack_spec(a) for a in attacks]
    problems = [f"unknown defense {d!r}" for d in defenses if d not in DEFENSES]
    problems += [f"unknown attack {a!r}" for a, _ in parsed if a not in ATTACKS]
    if problems:
        raise ConfigError("; ".join(problems) + f". Defenses: {', '.join(DEFENSES.names())}. Attacks: {', '.join(ATTACKS.names())}")
    if not defenses or not attacks or not seeds:
        raise ConfigError("bench needs at least one defense, one attack and one seed")
    variants: dict[str, list[tuple[tuple[str, str], ...]]] = {d: [()] for d in defenses}
    for key, values in sweeps.items():
        defense, setting = key.split(".", 1)
        if defense not in defenses:
            raise ConfigError(f"--sweep {key}: defense {defense!r} is not in --defenses")
        for v in values:
            DEFENSES.get(defense).from_settings({**scenario.defenses.get(defense, {}), setting: v})  # validates
            variants[defense].append(((setting, v),))
    for a, settings in parsed:
        if settings:
            build_attack(a, attack_settings(scenario, a, dict(settings)))  # validates
    cells = [Cell(d, a, s, var, avar) for d in defenses for var in variants[d] for a, avar in parsed for s in seeds]
    cells += [Cell(d, a, s, (), avar, replicate=1) for d in dict.fromkeys(replicates) for a, avar in parsed for s in seeds]
    return BenchPlan(scenario, cells, sweeps)


def estimate_seconds(plan: BenchPlan) -> float:
    """Rough wall-time estimate of a cold run on 2 CPU cores (ignores the cache), from per-unit costs
    measured on the mnist scenario (`ATTACK_COST`), scaled by image count, resolution and budgets."""
    sc = plan.scenario
    data = load_data(sc)
    scale = (sc.resolution / 32) ** 2
    per_epoch = SECONDS_PER_TARGET_EPOCH_PER_1K_IMAGES * len(data.x_train) / 1000 * scale
    targets = {(c.defense, c.variant, c.replicate, c.seed) for c in plan.cells}
    gan_s = SECONDS_PER_GAN_STEP.get(sc.prior.kind, 0.1) * sc.prior.steps * scale
    gmi_s = SECONDS_PER_ATTACK_ITERATION_PER_25_IMAGES * sc.attack.iterations * len(sc.attacked_classes()) * sc.attack.per_class / 25 * scale
    priors: dict[tuple[Any, ...], float] = {}  # each prior once: the shared GAN per seed, the rest per target
    t = per_epoch * sc.evaluation.epochs * 2  # evaluation model (wider ResNet)
    t += len(targets) * per_epoch * (sc.target.epochs + 5)
    for c in plan.cells:
        priced = c.attack_settings.get("base", c.attack)  # an attack run on a base (adaptive-bpda) costs what its base costs
        relative, needs = ATTACK_COST.get(priced, ATTACK_COST["gmi"])
        t += relative * gmi_s
        for name, units in needs.items():
            priors[(name, c.seed) if name == "gan" else (name, c.defense, c.variant, c.replicate, c.seed)] = units * gan_s
    return t + sum(priors.values())


def _status_table(plan: BenchPlan, done: set[str], title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    for col in ("#", "defense", "attack", "seed", "status"):
        table.add_column(col)
    for i, c in enumerate(plan.cells, 1):
        status = "[green]done[/green]" if c.cell_id(plan.scenario) in done else "todo"
        table.add_row(str(i), c.label, c.attack_label, str(c.seed), status)
    console.print(table)


def _stored_rows(folder: Path) -> dict[str, dict[str, Any]]:
    """The JSON rows in `folder` by file stem (unreadable files are left out: redone, not trusted)."""
    rows = {}
    for f in sorted(Path(folder).glob("*.json")):
        try:
            rows[f.stem] = json.loads(f.read_text())
        except (ValueError, OSError):  # torn JSON, or bytes that are not UTF-8
            continue
    return rows


def finished_cells(out: Path) -> dict[str, dict[str, Any]]:
    """The result rows already stored under `<out>/cells/`."""
    return _stored_rows(Path(out) / "cells")


def stored_calibration(out: Path) -> list[dict[str, Any]]:
    """The floor and ceiling rows stored under `<out>/calibration/`."""
    return list(_stored_rows(Path(out) / "calibration").values())


def _calibrate(plan: BenchPlan, out: Path, seed: int, judges: list[Any], ws: Workspace) -> list[dict[str, Any]]:
    """The floor and ceiling rows of `seed` (stored under `<out>/calibration/`, computed once)."""
    sc = plan.scenario
    data = load_data(sc)
    stored = _stored_rows(out / "calibration")
    rows = []
    for name in CALIBRATION_SETS:
        fname = f"{name.replace(': ', '-').replace(' ', '-')}-s{seed}"
        if fname in stored:
            rows.append(stored[fname])
            continue
        f = out / "calibration" / f"{fname}.json"
        row, rec, nearest = calibration_row(sc, name, seed, judges, ws)
        grid = out / "grids" / f"{fname}.png"
        ps = row["per_sample"]
        reconstruction_grid(rec.images, rec.labels, nearest, data, grid, ps["hit"], ps["confidence"], ps["hit_open"])
        row |= {"cell": fname, "grid": str(grid.relative_to(out)), "data_key_hash": config_hash(data_key(sc))}
        write_json_atomic(f, row)
        rows.append(row)
    return rows


def cell_staleness(cell: "Cell", row: dict[str, Any]) -> list[str]:
    """Why a stored cell's row was computed by other code than the current one (empty: it is current)."""
    return (stale_modules(row.get("code"), attack_code(ATTACKS.get(cell.attack)))
            + stale_modules(row.get("target_code"), classifier_code(DEFENSES.get(cell.defense))))


class CellsFailed(CalorError):
    """Cells of a bench failed (an executor other than the in-process loop reports them all once the others
    have finished); the finished cells are stored, and rerunning the bench redoes only the failed ones."""

    def __init__(self, failures: list[tuple[str, str]], total: int) -> None:
        self.failures = failures
        lines = "\n".join(f"  - {cid}: {error}" for cid, error in failures)
        super().__init__(f"{len(failures)} of {total} cells failed (the others are stored; rerun to redo these):\n{lines}")


def run_bench(plan: BenchPlan, *, out: Path, ws: Workspace | None = None, show: bool = True,
              calibrate: bool = True, executor: Any = None) -> list[dict[str, Any]]:
    """Run every unfinished cell of `plan`, store each as it finishes, and return all rows in plan order,
    followed (with `calibrate`) by the floor and ceiling rows of every seed.

    `executor`: None runs the cells one after another in this process; an executor object (e.g.
    `calor.executors.RayExecutor`) runs them elsewhere through `run_cell`, the same per-cell code, and
    raises `CellsFailed` after the others finish if any cell failed."""
    ws = ws or Workspace()
    out = Path(out)
    with directory_lock(out):
        return _run_bench(plan, out, ws, show, calibrate, executor)


def cell_targets(sc: Scenario, cell: Cell, ws: Workspace) -> tuple[Any, Any]:
    """The cell's target (trained or loaded) and, for a white-box attack, the undefended target of the same
    seed that the gradient diagnostics compare against (None otherwise)."""
    target = train_target(sc, cell.defense, seed=cell.seed, settings=cell.settings, ws=ws, replicate=cell.replicate)
    if ATTACKS.get(cell.attack).threat_model is not ThreatModel.WHITE_BOX:
        return target, None
    original_none = cell.defense == "none" and not cell.variant and not cell.replicate
    return target, target if original_none else train_target(sc, "none", seed=cell.seed, ws=ws)


def compute_cell(sc: Scenario, cell: Cell, out: Path, ws: Workspace, judges: list[Any], executor: str = "local") -> dict[str, Any]:
    """The one code path that computes a cell, whichever executor runs it: train (or load) its target, attack it,
    draw its grid, write its row atomically to `<out>/cells/<cell id>.json` and return the row. The row's
    `reported_with` names the executor that ran it."""
    cid = cell.cell_id(sc)
    data = load_data(sc)
    target, reference = cell_targets(sc, cell, ws)
    run = attack_target(sc, target, cell.attack, seed=cell.seed, settings=cell.attack_settings, ws=ws, judges=judges,
                        reference=reference)
    grid = out / "grids" / f"{cid}.png"
    ps = run.metrics["per_sample"]
    reconstruction_grid(run.reconstructions.images, run.reconstructions.labels, run.metrics["nearest_private_index"], data, grid,
                        ps["hit"], ps["confidence"], ps["hit_open"])
    row = result_row(sc, target, run, judges) | {
        "cell": cid, "label": cell.label, "variant": cell.settings, "attack": cell.attack_label, "attack_name": cell.attack,
        "attack_variant": cell.attack_settings, "grid": str(grid.relative_to(out)),
        "data_key_hash": config_hash(data_key(sc)),
    }
    row["reported_with"] = {**row.get("reported_with", {}), "executor": executor}
    write_json_atomic(out / "cells" / f"{cid}.json", row)
    return row


def run_cell(scenario: dict[str, Any], cell: Cell, out: str | Path, cache: str | Path, *, threads: int | None = None,
             device: str = "cpu", packaged: bool = True, checkpoint_every: float | None = DEFAULT_EVERY_SECONDS,
             precision: str | None = None, executor: str = "local") -> dict[str, Any]:
    """One cell from plain, picklable arguments (the scenario as `Scenario.to_dict()`, the cell, the output and
    cache directories, torch threads, device, precision): what a worker process calls. Sets the threads (and the
    precision, when given), rebuilds the scenario and the workspace, loads the judges (cached: a bench builds
    them before it fans out) and runs `compute_cell`, the function the in-process loop runs. Processes sharing
    the cache build each artifact once (`Workspace.cached` locks it)."""
    configure_threads(threads)
    if precision is not None:
        set_precision(precision)
    sc = from_dict(Scenario, scenario, "scenario")
    ws = Workspace(cache=Path(cache), device=resolve_device(device), packaged=packaged, checkpoint_every=checkpoint_every)
    return compute_cell(sc, cell, Path(out), ws, train_judges(sc, ws), executor)


def _todo(plan: BenchPlan, done: dict[str, dict[str, Any]]) -> Iterator[tuple[int, Cell]]:
    """(position, cell) of every cell to run: not finished, or finished by other code (stale, reported)."""
    for i, cell in enumerate(plan.cells, 1):
        cid = cell.cell_id(plan.scenario)
        if cid in done:
            stale = cell_staleness(cell, done[cid])
            if not stale:
                continue
            log(f"[yellow]stale cell {cid}: computed by other code ({'; '.join(stale[:4])}); recomputing[/yellow]")
        yield i, cell


def _run_bench(plan: BenchPlan, out: Path, ws: Workspace, show: bool, calibrate: bool, executor: Any) -> list[dict[str, Any]]:
    sc = plan.scenario
    write_json_atomic(out / "plan.json", plan.to_dict() | {"scenario_config": sc.to_dict()})
    done = finished_cells(out)
    if show:
        _status_table(plan, set(done), f"bench {sc.name}: {len(done)}/{len(plan.cells)} cells done")
    data = load_data(sc)
    write_json_atomic(out / "split.json", data.info)
    dp = parallel.current()
    if executor is None and dp is not None:  # torchrun: data-parallel training, then the cells split over processes
        judges = train_judges(sc, ws)
        t0 = time.perf_counter()
        todo = list(_todo(plan, done))
        _train_together(sc, todo, ws)
        with parallel.local_only():
            for k, (i, cell) in enumerate(todo):
                if k % dp.world == dp.rank:
                    log(f"[bold]cell {i}/{len(plan.cells)}[/bold] {cell.label} × {cell.attack_label} (seed {cell.seed}), rank {dp.rank}")
                    compute_cell(sc, cell, out, ws, judges, f"torchrun rank {dp.rank}/{dp.world}")
        parallel.barrier()
        if not parallel.is_main():
            return []  # rank 0 gathers the cells every process stored and reports
        done = finished_cells(out)
        with parallel.local_only():
            return _finish(plan, out, ws, judges, done, calibrate, show, t0)
    if executor is None:  # in this process, one cell after another
        judges = train_judges(sc, ws)
        t0 = time.perf_counter()
        for i, cell in _todo(plan, done):
            log(f"[bold]cell {i}/{len(plan.cells)}[/bold] {cell.label} × {cell.attack_label} (seed {cell.seed})")
            done[cell.cell_id(sc)] = compute_cell(sc, cell, out, ws, judges)
    else:
        t0 = time.perf_counter()
        todo = list(_todo(plan, done))
        if todo:
            done.update(executor.run(sc, todo, len(plan.cells), out, ws))
        judges = train_judges(sc, ws)  # built by the executor's first wave (or here, with every cell done): loaded
    return _finish(plan, out, ws, judges, done, calibrate, show, t0)


def _train_together(sc: Scenario, todo: list[tuple[int, Cell]], ws: Workspace) -> None:
    """Under torchrun, every process trains the cells' targets (and the undefended reference of white-box
    cells) and each seed's shared GAN prior data-parallel, in the same order, before the cells split up."""
    from .prior_store import Priors

    for _, cell in todo:
        cell_targets(sc, cell, ws)
    for seed in sorted({cell.seed for _, cell in todo}):
        Priors(sc, seed, ws).gan()


def _finish(plan: BenchPlan, out: Path, ws: Workspace, judges: list[Any], done: dict[str, dict[str, Any]], calibrate: bool,
            show: bool, t0: float) -> list[dict[str, Any]]:
    """Every cell's row in plan order, then (with `calibrate`) each seed's floor and ceiling rows."""
    sc = plan.scenario
    rows = [done[c.cell_id(sc)] for c in plan.cells]
    if calibrate:
        for seed in sorted({c.seed for c in plan.cells}):
            rows += _calibrate(plan, out, seed, judges, ws)
    if show:
        log(f"bench: {len(plan.cells)} cells in {time.perf_counter() - t0:.1f}s this run")
    return rows


def redraw_grids(out: Path, rows: list[dict[str, Any]], data: Any) -> int:
    """Draw the reconstruction grids of stored cells again from their attack artifacts (after the grid
    drawing changed); cells whose artifact is gone keep their old grid. Returns how many were drawn."""
    drawn = 0
    for r in rows:
        path = Path(r.get("artifacts", {}).get("attack", ""))
        if r.get("calibration") or not r.get("grid") or not find_artifact(path):
            continue
        art = load_artifact(path)
        ps = art.meta["metrics"]["per_sample"]
        reconstruction_grid(art.tensors["images"], art.tensors["labels"], art.meta["metrics"]["nearest_private_index"], data,
                            Path(out) / r["grid"], ps["hit"], ps["confidence"], ps.get("hit_open"))
        drawn += 1
    return drawn


def bench_protocol(plan: BenchPlan, rows: list[dict[str, Any]]) -> dict[str, Any]:
    sc = plan.scenario
    data = load_data(sc)
    return {
        "scenario": sc.name, "description": sc.description, "seeds": sorted({c.seed for c in plan.cells}),
        "defenses": sorted({c.label for c in plan.cells}), "attacks": sorted({c.attack_label for c in plan.cells}),
        "sweeps": plan.sweeps, "classes_attacked": sc.attacked_classes(), "reconstructions_per_class": sc.attack.per_class,
        "attack_iterations": sc.attack.iterations, "prior": to_dict(sc.prior),
        "data_split": {k: v for k, v in data.info.items() if k != "indices"},
        "judges": rows[0]["judge"]["all"] if rows else {}, "judge_classes": sc.judge_classes,
        "tuning_seeds": list(sc.tuning_seeds), "primary": to_dict(sc.primary),
        "versions": versions(),
    }


__all__ = ["BenchPlan", "Cell", "CellsFailed", "bench_protocol", "compute_cell", "estimate_seconds", "finished_cells",
           "parse_attack_spec", "parse_sweeps", "plan_bench", "run_bench", "run_cell", "split_specs"]
