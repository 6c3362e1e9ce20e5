"""Where `calor bench` runs its cells besides the in-process loop: `RayExecutor`, each cell a Ray task.

Ray is optional (``pip install calor[ray]``) and imported only when a Ray bench runs: importing calor, or
this module, does not import it.

A Ray bench is one driver and many workers. The driver (`calor bench --executor ray`) plans the cells,
skips finished ones (the same resume rule as the in-process loop), submits the rest as Ray tasks, each
reserving ``--ray-cpus-per-cell`` CPUs (also its torch threads) and ``--ray-gpus-per-cell`` GPUs, and
collects them as they finish. Every task runs `calor.bench.run_cell`, which runs `compute_cell`, the code
the in-process loop runs: a cell computes the same numbers wherever it runs (same seeds, same threads).
Workers write their cells, grids and artifacts straight into --out and --cache, so on a multi-node cluster
both must be on a filesystem every node mounts at the same path, and every node needs the same calor
installed (checked: a worker whose calor differs from the driver's fails its cells).

Cells share artifacts through the cache (a target per (defense, seed), a GAN prior per seed, ...), and
several tasks may need one that does not exist yet at the same moment. `Workspace.cached` builds every
artifact under an exclusive lock of its own, so the first task builds it and the others wait, then load
it: nothing is trained twice, and no task replaces a directory that another is reading.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .errors import CalorError, ConfigError
from .progress import console, log
from .runtime import channels_last, configure_threads, precision, resolve_device, set_channels_last, set_precision
from .workspace import BUILT, Workspace

RAY_MISSING = "--executor ray needs Ray, which is not installed here: pip install calor[ray]"

def import_ray() -> Any:
    """The `ray` module, or a ConfigError (exit 2) saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    return ray


def code_fingerprint() -> dict[str, str]:
    """What a worker must share with the driver: calor's version and the code versions this process computes
    with (calor.versioning, read once per process: a worker started after the code changed differs)."""
    import json

    from . import __version__
    from .versioning import version, versioned_modules

    recorded = json.dumps({m: version(m) for m in versioned_modules()}, sort_keys=True)
    return {"calor": __version__, "code_versions": hashlib.sha256(recorded.encode()).hexdigest()[:16]}


def _worker_setup(options: dict[str, Any]) -> None:
    """Make a worker process ready for a task of this bench (a worker may run several tasks, of several benches)."""
    from . import progress

    mine = code_fingerprint()
    if mine != options["fingerprint"]:
        theirs = options["fingerprint"]
        raise ConfigError(f"worker {platform.node()} runs calor {mine['calor']} (code versions {mine['code_versions']}), the driver "
                          f"calor {theirs['calor']} ({theirs['code_versions']}): install the same calor on every node (or the code "
                          "changed on disk while the bench ran; rerun it)")
    os.environ.update(options["env"])  # the data root, so that relative data paths resolve as on the driver
    progress.set_enabled(not options["quiet"])
    set_precision(options["precision"])
    set_channels_last(options["channels_last"])


def _judges_task(scenario: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """Ray task: build (or load) the scenario's judges into the shared cache."""
    from .config import from_dict
    from .scenario import Scenario
    from .targets import train_judges

    _worker_setup(options)
    configure_threads(options["threads"])
    start, t0 = len(BUILT), time.perf_counter()
    sc = from_dict(Scenario, scenario, "scenario")
    ws = Workspace(cache=Path(options["cache"]), device=resolve_device(options["device"]), packaged=options["packaged"],
                   checkpoint_every=options["checkpoint_every"])
    train_judges(sc, ws)
    return {"built": BUILT[start:], "seconds": time.perf_counter() - t0, "host": platform.node()}


def _cell_task(scenario: dict[str, Any], cell: Any, out: str, options: dict[str, Any]) -> dict[str, Any]:
    """Ray task: one cell, by `calor.bench.run_cell` (the row is also written to `<out>/cells/`)."""
    from .bench import run_cell

    _worker_setup(options)
    start, t0 = len(BUILT), time.perf_counter()
    row = run_cell(scenario, cell, out, options["cache"], threads=options["threads"], device=options["device"],
                   packaged=options["packaged"], checkpoint_every=options["checkpoint_every"], precision=options["precision"],
                   executor="ray")
    return {"row": row, "built": BUILT[start:], "seconds": time.perf_counter() - t0, "host": platform.node()}


def _error_text(exc: BaseException) -> tuple[str, str | None]:
    """(one line, traceback or None) for a task's failure: a calor error is its message; anything else
    keeps the worker's traceback."""
    cause = getattr(exc, "cause", None) or exc
    line = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    line = f"{type(cause).__name__}: {line}"[:300]
    return line, None if isinstance(cause, CalorError) else str(exc)


@dataclass
class RayExecutor:
    """Run bench cells as Ray tasks on the cluster at `address` ("auto", "ray://head:10001", ...), or on a
    local Ray instance this executor starts (and stops) when `address` is None. A process that already
    runs Ray (`ray.init` called) uses its instance. `device`: the workers' device (cpu or cuda)."""

    address: str | None = None
    cpus_per_cell: int = 1
    gpus_per_cell: float = 0.0
    device: str = "cpu"
    quiet: bool = False
    built: Counter = field(default_factory=Counter)  # artifact -> times built by this executor's tasks
    hosts: Counter = field(default_factory=Counter)  # node -> cells it ran
    name: ClassVar[str] = "ray"

    def __post_init__(self) -> None:
        if self.cpus_per_cell < 1:
            raise ConfigError(f"--ray-cpus-per-cell {self.cpus_per_cell}: must be >= 1 (it is also each cell's torch threads)")
        if self.gpus_per_cell < 0:
            raise ConfigError(f"--ray-gpus-per-cell {self.gpus_per_cell:g}: must be >= 0")
        if self.device.startswith("cuda") and self.gpus_per_cell == 0:
            raise ConfigError(f"--device {self.device} with --executor ray: give --ray-gpus-per-cell (e.g. 1), so that Ray "
                              "reserves a GPU for each cell")
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"--device {self.device} with --executor ray: use cpu, or cuda with --ray-gpus-per-cell "
                              "(Ray assigns each cell its GPU)")
        import_ray()  # fail now, before anything runs, if Ray is missing

    def run(self, sc: Any, todo: list[tuple[int, Any]], total: int, out: Path, ws: Workspace) -> dict[str, dict[str, Any]]:
        """Run the cells `todo` ((position, cell) pairs of a plan of `total` cells) and return their rows by cell id;
        raise `CellsFailed` once every cell has finished if some failed."""
        ray = import_ray()
        started = self._connect(ray)
        try:
            return self._run(ray, sc, todo, total, out, ws)
        finally:
            if started:
                ray.shutdown()

    def _connect(self, ray: Any) -> bool:
        """Join or start Ray; True when this call started (or connected) it, so that `run` shuts it down."""
        t0 = time.perf_counter()
        level = logging.WARNING if self.quiet else logging.INFO
        if ray.is_initialized():
            log("ray: using this process's Ray instance")
            return False
        if self.address:
            ray.init(address=self.address, logging_level=level)
        else:
            from .runtime import available_cpus

            ray.init(address="local", num_cpus=available_cpus(), include_dashboard=False, logging_level=level)
        log(f"ray: {'connected to ' + self.address if self.address else 'started a local instance'} in {time.perf_counter() - t0:.1f}s")
        return True

    def _check_resources(self, ray: Any) -> None:
        """A cell no node can hold would wait for ever: refuse it on a local instance, warn on a cluster (an
        autoscaler may add the node)."""
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        fits = any(r.get("CPU", 0) >= self.cpus_per_cell and r.get("GPU", 0) >= self.gpus_per_cell for r in nodes)
        if fits:
            return
        have = ", ".join(f"{r.get('CPU', 0):g} CPU/{r.get('GPU', 0):g} GPU" for r in nodes) or "no nodes"
        message = (f"no Ray node can hold a cell of {self.cpus_per_cell} CPU and {self.gpus_per_cell:g} GPU "
                   f"(nodes: {have}); lower --ray-cpus-per-cell / --ray-gpus-per-cell")
        if not self.address:
            raise ConfigError(message)
        console.print(f"[yellow]warning: {message}; the cells wait until such a node joins[/yellow]")

    def _options(self, out: Path, ws: Workspace) -> dict[str, Any]:
        from .data.decode import DATA_ROOT_ENV
        from .data.identity_split import SPLIT_DIR_ENV

        env = {k: str(Path(os.environ[k]).expanduser().resolve()) for k in (DATA_ROOT_ENV, SPLIT_DIR_ENV) if os.environ.get(k, "").strip()}
        return {"cache": str(Path(ws.cache).resolve()), "threads": self.cpus_per_cell, "device": self.device, "packaged": ws.packaged,
                "checkpoint_every": ws.checkpoint_every, "precision": precision(), "channels_last": channels_last(),
                "quiet": self.quiet, "env": env,
                "fingerprint": code_fingerprint()}

    def _run(self, ray: Any, sc: Any, todo: list[tuple[int, Any]], total: int, out: Path, ws: Workspace) -> dict[str, dict[str, Any]]:
        from .bench import CellsFailed

        self._check_resources(ray)
        options = self._options(out, ws)
        scenario = sc.to_dict()
        resources = {"num_cpus": self.cpus_per_cell, "num_gpus": self.gpus_per_cell}
        # Ordering. The judges come first, in one task, before anything fans out: every cell (and the floor
        # and ceiling rows, computed here afterwards) needs them, so N tasks would only queue on their lock,
        # and a judge that cannot be built is one error, not N. The other shared artifacts (targets, GAN
        # priors, attack-specific priors) are left to the cells: each is built by the first task that needs
        # it while the tasks that need it too wait on its lock (Workspace.cached), and artifacts that are not
        # shared build in parallel. A separate wave per artifact kind would leave nodes idle between waves.
        t0 = time.perf_counter()
        judges = ray.remote(_judges_task).options(name="calor judges", **resources).remote(scenario, options)
        try:
            first = ray.get(judges)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            raise cause if isinstance(cause, CalorError) else CalorError(f"the judges could not be built: {_error_text(exc)[0]}") from None
        self.built.update(first["built"])
        log(f"ray: judges ready in {time.perf_counter() - t0:.1f}s; {len(todo)} cells to run "
            f"({self.cpus_per_cell} CPU, {self.gpus_per_cell:g} GPU each)")
        cell_task = ray.remote(_cell_task)
        out_dir = str(Path(out).resolve())
        pending = {cell_task.options(name=f"calor {c.label} x {c.attack_label} s{c.seed}", **resources).remote(scenario, c, out_dir, options): (i, c)
                   for i, c in todo}
        rows: dict[str, dict[str, Any]] = {}
        failures: list[tuple[str, str]] = []
        finished = 0
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    i, cell = pending.pop(ref)
                    cid = cell.cell_id(sc)
                    finished += 1
                    try:
                        result = ray.get(ref)
                    except Exception as exc:  # the task raised, or its worker died (after Ray's retries)
                        line, trace = _error_text(exc)
                        failures.append((cid, line))
                        console.print(f"[bold red]cell {i}/{total} {cell.label} × {cell.attack_label} (seed {cell.seed}) failed[/bold red]: "
                                      f"{line}", highlight=False, soft_wrap=True)
                        if trace:
                            console.print(trace, highlight=False, markup=False, soft_wrap=True)
                        continue
                    rows[cid] = result["row"]
                    self.built.update(result["built"])
                    self.hosts[result["host"]] += 1
                    log(f"[bold]cell {i}/{total}[/bold] {cell.label} × {cell.attack_label} (seed {cell.seed}) done in "
                        f"{result['seconds']:.1f}s on {result['host']} [{finished}/{len(todo)}, {time.perf_counter() - t0:.0f}s]")
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref)
            raise
        doubles = sorted(rel for rel, n in self.built.items() if n > 1)
        if doubles:  # the artifact locks did not exclude each other (a filesystem without working flock?)
            console.print(f"[yellow]warning: artifacts built more than once by concurrent cells: {', '.join(doubles)} "
                          "(is --cache on a filesystem whose file locks work across nodes?)[/yellow]", soft_wrap=True)
        if failures:
            raise CellsFailed(failures, len(todo))
        return rows


def bench_executor(executor: str, *, address: str | None, cpus_per_cell: int | None, gpus_per_cell: float | None,
                   device: str, quiet: bool) -> RayExecutor | None:
    """The executor `calor bench` options ask for: None (in process) or a RayExecutor. Refuses Ray options
    without --executor ray, and exits 2 with the install hint when Ray is missing."""
    given = [name for name, value in (("--ray-address", address), ("--ray-cpus-per-cell", cpus_per_cell),
                                      ("--ray-gpus-per-cell", gpus_per_cell)) if value is not None]
    if executor == "local":
        if given:
            raise ConfigError(f"{', '.join(given)}: only with --executor ray")
        return None
    if executor != "ray":
        raise ConfigError(f"--executor {executor!r}: choose local or ray")
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise ConfigError("--executor ray runs each cell in a process of its own: launch it with python or calor, not torchrun")
    gpus = gpus_per_cell or 0.0
    if device == "auto":
        device = "cuda" if gpus > 0 else "cpu"
    elif device == "cpu" and gpus > 0:
        device = "cuda"  # a cell that reserves a GPU uses it
    return RayExecutor(address=address, cpus_per_cell=1 if cpus_per_cell is None else cpus_per_cell, gpus_per_cell=gpus,
                       device=device, quiet=quiet)


__all__ = ["RAY_MISSING", "RayExecutor", "bench_executor", "import_ray"]
