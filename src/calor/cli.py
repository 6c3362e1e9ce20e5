"""The `calor` command: a thin shell over the Python API. Bad input exits 2 with one clear message."""

from __future__ import annotations

import argparse
import os
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .errors import CalorError

EPILOG = "Artifacts are cached by config hash under --cache (default runs/cache); rerunning reuses them."
AUDIT_INCONCLUSIVE = 3  # `calor audit`: no attack cleared its floor on the baseline (2 is bad input)


def _common(p: argparse.ArgumentParser, *, out: str | None = None) -> None:
    """Options shared by the commands that run work on a scenario."""
    p.add_argument("--scenario", default="mnist", help="built-in scenario name or a YAML file (default: mnist)")
    p.add_argument("--seed", type=int, default=None,
                   help="experiment seed (default: the scenario's first published seed, never one its defaults were tuned on)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto (under torchrun, cuda = cuda:LOCAL_RANK)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="mixed precision for training (autocast; fp16 needs CUDA); recorded in every result and cache key")
    p.add_argument("--no-channels-last", action="store_true",
                   help="train on NCHW batches instead of channels-last ones (the default; recorded, and keyed when off)")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="where scenarios' relative data paths point (e.g. DIR/celeba); default $CALOR_DATA_ROOT")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: $CALOR_THREADS, else the CPUs this process may use); recorded in every result")
    p.add_argument("--cache", default="runs/cache", help="artifact cache directory (default runs/cache)")
    p.add_argument("--scenario-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a scenario setting, e.g. target.epochs=5 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--rebuild", action="store_true",
                   help="train the judge and GAN prior even where calor ships them (embedded mnist scenario)")
    p.add_argument("--checkpoint-every", type=float, default=300.0, metavar="SECONDS",
                   help="least seconds between checkpoints inside a long stage (training, GAN priors); a killed run resumes "
                        "from the last one (default 300; 0: every epoch/step; -1: none)")
    if out is not None:
        p.add_argument("--out", default=out, help=f"output directory (default {out})")


def _user_model_options(p: argparse.ArgumentParser, checkpoint_help: str) -> None:
    """--checkpoint and the model it loads into (--module or --arch, --module-kwargs): `_user_model` reads them."""
    p.add_argument("--checkpoint", required=True, help=checkpoint_help)
    model_src = p.add_mutually_exclusive_group(required=True)
    model_src.add_argument("--module", help="your model class as pkg.module:Class (importable from here)")
    model_src.add_argument("--arch", help="a calor classifier (see `calor list models`), built with the scenario's target sizes")
    p.add_argument("--module-kwargs", default="{}", help="JSON keyword arguments for --module's class (default {})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="calor",
        description="Harden image classifiers against model inversion with CALoR, and measure what they still leak.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"calor {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", help="train an undefended and a CALoR target, attack both with GMI, write a report",
                       description="Train (or load) the evaluation model, train an undefended and a CALoR-defended target on the scenario, "
                                   "attack both with GMI, and write results.json, report.md and image grids to --out. "
                                   "A second run reuses the cached artifacts.", epilog=EPILOG)
    _common(p, out="runs/demo")

    p = sub.add_parser("train", help="train a target under a defense", epilog=EPILOG,
                       description="Train (or load from the cache) the scenario's target under --defense and print its natural "
                                   "accuracy and true-class confidence. Prints the artifact directory.")
    _common(p)
    p.add_argument("--defense", default="none", help="defense name (see `calor list defenses`)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="defense hyper-parameter (repeatable)")
    p.add_argument("--evaluation-model", action="store_true", help="train the scenario's judges (evaluation models) instead")

    p = sub.add_parser("attack", help="attack a trained target and compute the metrics", epilog=EPILOG,
                       description="Run an attack against a target artifact (from `calor train`), judge its reconstructions "
                                   "with the scenario's evaluation model, and write images and metrics to --out.")
    _common(p, out="runs/attack")
    p.add_argument("--target", required=True, help="target artifact directory (printed by `calor train`)")
    p.add_argument("--attack", default="gmi", help="attack name (see `calor list attacks`)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="attack hyper-parameter (repeatable)")
    p.add_argument("--classes", default=None, help="comma-separated class indices (default: the scenario's)")
    p.add_argument("--per-class", type=int, default=None, help="reconstructions per class (default: the scenario's)")
    p.add_argument("--diagnostics", action="store_true",
                   help="also replay the attack's latent path against the undefended target of the same seed (gradient diagnostics)")

    p = sub.add_parser("evaluate", help="natural accuracy and confidence statistics of a classifier artifact", epilog=EPILOG,
                       description="Evaluate a classifier artifact on the scenario's private test and train splits.")
    _common(p)
    p.add_argument("--target", required=True, help="classifier artifact directory")

    p = sub.add_parser("bench", help="run the defenses x attacks x seeds grid (resumable) and write the report", epilog=EPILOG,
                       description="Plan every (defense, attack, seed) cell, run the unfinished ones (each stored atomically in "
                                   "--out/cells/ as it finishes, so an interrupted bench resumes), then write report.md and "
                                   "report.html. --sweep varies one defense setting at a time around the scenario's defaults.")
    _common(p, out=None)
    p.add_argument("--out", default=None, help="output directory (default runs/bench-<scenario>)")
    p.add_argument("--defenses", default="none,calor", help="comma-separated defenses (default none,calor)")
    p.add_argument("--attacks", default="gmi", help="comma-separated attacks, each optionally with settings: NAME[key=value,...] (default gmi)")
    p.add_argument("--seeds", type=int, default=None,
                   help="number of seeds: SEED, SEED+1, ..., SEED+N-1 (default: the scenario's published seeds)")
    p.add_argument("--sweep", action="append", default=[], metavar="DEFENSE.SETTING=V1,V2",
                   help="sensitivity sweep, e.g. calor.rank=2,4,8,16 (repeatable)")
    p.add_argument("--aa", action="append", default=[], metavar="DEFENSE",
                   help="A/A calibration: also train an independent second DEFENSE target per seed, labelled DEFENSE~aa1, "
                        "attacked and compared with DEFENSE like any defense; the report prints the empirical false-positive "
                        "rate of its marks (repeatable; DEFENSE must be in --defenses)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and its estimated time, run nothing")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="where the cells run: local (default: one after another in this process) or ray (each cell a Ray "
                        "task, in parallel; pip install calor[ray]). With ray, workers write cells and artifacts straight "
                        "into --out and --cache: on a multi-node cluster both must be on a shared filesystem, mounted at the "
                        "same path on every node, and every node needs the same calor installed; --device is the cells' "
                        "device, --threads the driver's (which computes the floor/ceiling rows, on the CPU)")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="with --executor ray: the Ray cluster to run on (auto, HOST:PORT or ray://HOST:10001); default: "
                        "start a local Ray instance for this bench (even where $RAY_ADDRESS is set: pass --ray-address auto to use it)")
    p.add_argument("--ray-cpus-per-cell", type=int, default=None, metavar="N",
                   help="with --executor ray: CPUs reserved for each cell, also its torch threads (default 1)")
    p.add_argument("--ray-gpus-per-cell", type=float, default=None, metavar="N",
                   help="with --executor ray: GPUs reserved for each cell (a fraction shares one; default 0); above 0 the "
                        "cells run on CUDA")

    p = sub.add_parser("report", help="(re)write report.md and report.html of a bench directory",
                       description="Rebuild the report of a `calor bench` output directory from its stored cells.")
    p.add_argument("directory", help="a bench output directory (contains plan.json and cells/)")
    p.add_argument("--all", action="store_true",
                   help="report every finished cell of the directory's scenario, not only the last plan's (several "
                        "`calor bench` runs into one --out: a grid that is not a full product of defenses x attacks)")
    p.add_argument("--redraw-grids", action="store_true",
                   help="draw the cells' reconstruction grids again from their cached attack artifacts")

    p = sub.add_parser("harden", help="harden a classifier checkpoint of your own with CALoR (calor.harden)",
                       description="Load your classifier (--module pkg.mod:Class, or a calor --arch) with the weights in "
                                   "--checkpoint, replace its last linear layer (or --layer) by CALoR's low-rank head, train "
                                   "through it and fine-tune with the confidence-adaptation loss on the scenario's private "
                                   "training split, and write the hardened weights (safetensors) and a JSON record.")
    _common(p)
    _user_model_options(p, "the model's weights: .safetensors, or a state-dict file read with weights_only=True")
    p.add_argument("--layer", default=None, help="the nn.Linear to replace (dotted name; default: the last one)")
    p.add_argument("--rank", type=int, default=None, help="bottleneck rank (default min(50, d/2))")
    p.add_argument("--gamma", type=float, default=8.0, help="CA loss gamma: target confidence p* = exp(-1/gamma) (default 8)")
    p.add_argument("--train", default="all", choices=["all", "head"], help="train every weight (default) or the new head only")
    p.add_argument("--epochs", type=int, default=5, help="cross-entropy epochs through the new head (default 5)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of those epochs (default 1e-3)")
    p.add_argument("--ca-epochs", type=int, default=5, help="confidence-adaptation fine-tune epochs (default 5)")
    p.add_argument("--ca-lr", type=float, default=2e-5, help="fine-tune learning rate (default 2e-5, the authors' SGD)")
    p.add_argument("--ca-optimizer", default="sgd", choices=["sgd", "adam"], help="fine-tune optimiser (default sgd)")
    p.add_argument("--out", required=True, help="where to write the hardened weights (.safetensors); the record goes beside it (.json)")

    p = sub.add_parser("audit", help="measure what classifier checkpoints of your own leak to model inversion (calor.audit)",
                       description="Load your classifier (--module pkg.mod:Class, or a calor --arch) with the weights in "
                                   "--checkpoint (and each --compare checkpoint: e.g. its `calor harden` output), attack each "
                                   "with the same prior, judge and latent initialisations, using the scenario's private, test "
                                   "and public splits, and write report.md, results.json, reconstructions and grids to --out. "
                                   "Exit 3 when no attack recovered more than its floor from the baseline (the audit "
                                   "measured nothing: never a pass).")
    _common(p)
    _user_model_options(p, "the baseline model's weights (.safetensors, or a state dict read with weights_only=True)")
    p.add_argument("--compare", action="append", default=[], metavar="CHECKPOINT",
                   help="another checkpoint of the same class to audit beside the baseline (repeatable); a `calor harden` "
                        "output is recognised by its JSON record")
    p.add_argument("--attacks", default="gmi", help="comma-separated attacks (default gmi; see `calor list attacks`)")
    p.add_argument("--per-class", type=int, default=None, help="reconstructions per class (default: the scenario's)")
    p.add_argument("--iterations", type=int, default=None, help="latent-search iterations (default: the scenario's)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds of the latent initialisations (default: --seed)")
    p.add_argument("--out", required=True, help="output directory for report.md, results.json, reconstructions and grids")

    p = sub.add_parser("inspect-weights", help="list the tensors of a user checkpoint (.safetensors, or .pt read with weights_only=True)",
                       description="Read a checkpoint without running any code from it (safetensors, or torch.load with "
                                   "weights_only=True, which refuses pickled objects) and list its tensors.")
    p.add_argument("file", help="a .safetensors file or a PyTorch state-dict file (.pt, .pth, .bin)")

    p = sub.add_parser("data", help="prepare a scenario's data (split file, decoded images), or write a stand-in dataset",
                       description="`calor data prepare --scenario NAME --data-root DIR` lists the data, makes (or checks) the "
                                   "split file and decodes the images once, then prints the split's sizes and checksums. "
                                   "`calor data fake DIR --layout celeba` writes generated faces in a dataset's on-disk layout "
                                   "(to try a protocol end to end before the real data is there).", epilog=EPILOG)
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    q = data_sub.add_parser("prepare", help="split and decode a scenario's data; print sizes and checksums")
    _common(q)
    q = data_sub.add_parser("fake", help="write generated faces in a dataset layout (celeba, facescrub, ffhq, image-folder)")
    q.add_argument("directory", help="where to write (created)")
    q.add_argument("--layout", default="celeba", choices=["celeba", "facescrub", "ffhq", "image-folder"])
    q.add_argument("--identities", type=int, default=40, help="identities (default 40)")
    q.add_argument("--per-identity", type=int, default=12, help="images of each identity (default 12)")
    q.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("prior", help="import a StyleGAN2 generator's weights as a calor prior (no foreign code runs), or sample one",
                       description="`calor prior import FILE --kind stylegan2 --out DIR` reads an NVIDIA network pickle (by an "
                                   "unpickler that imports and runs nothing), or a plain NVlabs-named state dict (.pth read with "
                                   "weights_only=True, .safetensors), checks every key and shape, and writes a calor prior artifact "
                                   "(safetensors + meta.json with the source's SHA-256). `calor prior sample DIR --out grid.png` "
                                   "draws a grid of its images.", epilog=EPILOG)
    prior_sub = p.add_subparsers(dest="prior_command", metavar="ACTION", required=True)
    q = prior_sub.add_parser("import", help="write a calor prior artifact from a StyleGAN2 weights file")
    q.add_argument("file", help="network-snapshot-*.pkl / ffhq.pkl, or a state dict (.pth, .pt, .safetensors)")
    q.add_argument("--kind", choices=["stylegan2"], required=True)
    q.add_argument("--out", required=True, help="the artifact directory to write")
    q.add_argument("--conv-clamp", type=float, default=None,
                   help="for a state dict (which does not record it): the generator's conv_clamp (NVlabs FFHQ: 256)")
    q = prior_sub.add_parser("sample", help="a grid of a StyleGAN2 prior artifact's images")
    q.add_argument("artifact", help="a directory written by `calor prior import`, or a cached StyleGAN2 prior calor trained")
    q.add_argument("--out", required=True, help="the PNG to write")
    q.add_argument("--n", type=int, default=16, help="images (default 16)")
    q.add_argument("--psi", type=float, default=1.0, help="truncation psi (default 1: none)")
    q.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("list", help="list defenses, attacks, scenarios or models")
    p.add_argument("what", nargs="?", default="all", choices=["all", "defenses", "attacks", "scenarios", "models"])
    return parser


def _setup(args: argparse.Namespace) -> tuple[Any, Any]:
    from . import progress
    from .config import parse_assignments
    from .workspace import Workspace
    from .runtime import configure_threads, resolve_device
    from .scenario import load_scenario

    from . import parallel
    from .runtime import set_channels_last, set_precision

    if args.data_root is not None:  # one place reads it: data.decode.data_root()
        os.environ["CALOR_DATA_ROOT"] = args.data_root
    set_precision(args.precision)
    set_channels_last(not args.no_channels_last)
    # Under torchrun (WORLD_SIZE > 1) join the process group; only rank 0 draws progress and writes.
    parallel.init_from_environment(args.device)
    progress.set_enabled(not args.quiet and parallel.is_main())
    if not parallel.is_main():  # every process computes; rank 0 reports (errors still reach stderr from all)
        sys.stdout = open(os.devnull, "w")
    configure_threads(args.threads)
    scenario = load_scenario(args.scenario)
    if args.scenario_set:
        scenario = scenario.with_overrides(parse_assignments(args.scenario_set))
    if args.checkpoint_every < 0 and args.checkpoint_every != -1:
        from .errors import ConfigError

        raise ConfigError(f"--checkpoint-every {args.checkpoint_every:g}: use seconds >= 0, or -1 for no checkpoints")
    every = None if args.checkpoint_every == -1 else args.checkpoint_every
    return scenario, Workspace(cache=Path(args.cache), device=resolve_device(parallel.local_device(args.device)), packaged=not args.rebuild,
                               checkpoint_every=every)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _seed(args: argparse.Namespace, scenario: Any) -> int:
    """--seed, else the scenario's first published seed."""
    return args.seed if args.seed is not None else int(scenario.seeds[0])


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    from .report import text_table

    scenario, ws = _setup(args)
    t0 = time.perf_counter()
    rows = run_demo(scenario, out=Path(args.out), seed=_seed(args, scenario), ws=ws)
    print(text_table(rows))
    print(f"\nwrote {args.out}/results.json, report.md, report.html and grids in {time.perf_counter() - t0:.1f}s")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import (CellsFailed, bench_protocol, cell_staleness, estimate_seconds, finished_cells, parse_sweeps, plan_bench,
                        run_bench, split_specs)
    from . import parallel
    from .executors import bench_executor
    from .locking import directory_lock
    from .config import to_dict
    from .report import cells_table, plain_table, terminal_report, write_report

    executor = bench_executor(args.executor, address=args.ray_address, cpus_per_cell=args.ray_cpus_per_cell,
                              gpus_per_cell=args.ray_gpus_per_cell, device=args.device, quiet=args.quiet)
    if executor is not None:
        args.device = "cpu"  # the cells run on the executor's device; the driver plans, loads judges, computes floors/ceilings
    scenario, ws = _setup(args)
    if args.seeds is not None and args.seeds < 1:
        from .errors import ConfigError

        raise ConfigError(f"--seeds {args.seeds}: must be >= 1")
    names = lambda text: [n.strip() for n in text.split(",") if n.strip()]  # noqa: E731
    if args.seed is None and args.seeds is None:
        seeds = list(scenario.seeds)
    else:
        start = _seed(args, scenario)
        seeds = list(range(start, start + (args.seeds or 1)))
    plan = plan_bench(scenario, names(args.defenses), split_specs(args.attacks), seeds, parse_sweeps(args.sweep), args.aa)
    out = Path(args.out or f"runs/bench-{scenario.name}")
    if args.dry_run:
        done = finished_cells(out)
        statuses = []
        for i, c in enumerate(plan.cells, 1):
            row = done.get(c.cell_id(scenario))
            status = "todo" if row is None else ("stale" if cell_staleness(c, row) else "done")  # stale: recomputed
            statuses.append(status)
            print(f"{i:>3}  {c.label:<28} {c.attack_label:<18} seed {c.seed}  {status}")
        print(f"{len(plan.cells)} cells ({statuses.count('done')} done, {statuses.count('stale')} stale); "
              f"estimated cold run on 2 CPU cores: ~{estimate_seconds(plan) / 60:.0f} min (cached artifacts make it shorter)")
        return 0
    t0 = time.perf_counter()
    with directory_lock(out):  # the cells and the report: one writer at a time
        try:
            rows = run_bench(plan, out=out, ws=ws, show=not args.quiet, executor=executor)
        except CellsFailed as exc:  # the other cells finished and are stored: exit 1, no report of a partial grid
            print(f"calor bench: {exc}", file=sys.stderr)
            return 1
        if not parallel.is_main():  # torchrun: rank 0 writes the report
            return 0
        paths = write_report(out, rows, bench_protocol(plan, rows), f"calor bench — scenario `{scenario.name}`")
    print(terminal_report(rows, to_dict(scenario.primary)))
    print("\n" + plain_table(*cells_table(rows)))
    n_cal = sum(1 for r in rows if r.get("calibration"))
    print(f"\n{len(rows) - n_cal} cells and {n_cal} floor/ceiling rows; report: {paths['markdown']} and {paths['html']} "
          f"({time.perf_counter() - t0:.1f}s)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .bench import bench_protocol, finished_cells, plan_bench, redraw_grids, stored_calibration
    from .locking import directory_lock
    from .config import from_dict
    from .errors import ArtifactError
    from .report import terminal_report, write_report
    from .scenario import Scenario
    from .summary import replica_of

    out = Path(args.directory)
    plan_file = out / "plan.json"
    if not plan_file.is_file():
        raise ArtifactError(f"{out}: no plan.json — not a `calor bench` output directory")
    from .filekinds import describe, read_small_text

    try:
        saved = json.loads(read_small_text(plan_file, "bench plan", ArtifactError))
        scenario = from_dict(Scenario, saved["scenario_config"], "plan.json scenario")
        saved["cells"] = list(saved["cells"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{plan_file}: {describe(plan_file)}, not the plan a `calor bench` writes ({type(exc).__name__} {exc})") from None
    done = finished_cells(out)
    if args.all:
        same = [r for r in done.values() if r.get("scenario_config") == saved["scenario_config"]]
        order = {"none": "0", "calor": "1"}  # the undefended and CALoR rows first, then the others by name
        rows = sorted(same, key=lambda r: (r["attack"] != "gmi", r["attack"], order.get(r["label"], "2" + r["label"]), r["seed"]))
    else:
        rows = [done[c] for c in saved["cells"] if c in done]
    if not rows:
        raise ArtifactError(f"{out}: no finished cells yet; run `calor bench` first")
    defenses = list(dict.fromkeys(r["defense"] for r in rows))
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    replicates = list(dict.fromkeys(r["defense"] for r in rows if replica_of(r["label"])))
    plan = plan_bench(scenario, defenses, attacks, sorted({r["seed"] for r in rows}), saved.get("sweeps") or {}, replicates)
    missing = 0 if args.all else len(saved["cells"]) - len(rows)
    if args.redraw_grids:
        from .scenario_data import load_data

        print(f"redrew {redraw_grids(out, rows, load_data(scenario))} reconstruction grids")
    rows += [r for r in stored_calibration(out) if r["seed"] in {c.seed for c in plan.cells}]
    protocol = bench_protocol(plan, rows)
    with directory_lock(out, "calor bench or report"):
        paths = write_report(out, rows, protocol, f"calor bench — scenario `{scenario.name}`")
    print(terminal_report(rows, protocol["primary"]))
    n_cal = sum(1 for r in rows if r.get("calibration"))
    print(f"\n{len(rows) - n_cal} cells{f' ({missing} not finished)' if missing else ''} and {n_cal} floor/ceiling rows; "
          f"report: {paths['markdown']} and {paths['html']}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .config import parse_assignments
    from .targets import train_judges, train_target

    scenario, ws = _setup(args)
    if args.evaluation_model:
        for judge in train_judges(scenario, ws):
            print(f"judge {judge.name:<12} private-test acc {judge.natural_acc:.4f}  artifact {judge.path}")
        return 0
    else:
        trained = train_target(scenario, args.defense, seed=_seed(args, scenario), settings=parse_assignments(args.set), ws=ws)
    m = trained.meta["metrics"]
    conf = m["train_confidence"]
    print(f"defense           {trained.meta['defense']}  {json.dumps(trained.meta['defense_config'])}")
    print(f"natural_acc       {m['natural_acc']:.4f}")
    print(f"train confidence  mean {conf['mean']:.4f}  median {conf['quantiles']['q50']:.4f}  "
          f"q05 {conf['quantiles']['q05']:.4f}  q95 {conf['quantiles']['q95']:.4f}")
    for stage, summary in m["confidence_by_stage"].items():
        print(f"  after {stage:<10} mean {summary['mean']:.4f}")
    if m.get("defense"):
        print(f"defense report    {json.dumps(m['defense'])}")
    print(f"train_s           {m['train_seconds']:.1f}  ({m['seconds_per_epoch']:.2f} s/epoch)")
    print(f"artifact          {trained.path}")
    return 0


def cmd_attack(args: argparse.Namespace) -> int:
    from .config import parse_assignments
    from .artifacts import write_json_atomic
    from .attack_runs import attack_request, attack_target
    from .targets import load_classifier, train_judges, train_target
    from .scenario_data import load_data
    from .rows import result_row
    from .report import reconstruction_grid, text_table

    scenario, ws = _setup(args)
    target = load_classifier(args.target, ws.device)
    if target.meta.get("kind") != "target":
        from .errors import ArtifactError

        raise ArtifactError(f"{args.target}: is an evaluation model, not a target")
    _check_same_data(scenario, target.meta)
    classes = None
    if args.classes:
        from .config import _coerce

        classes = _coerce(args.classes, list[int], "--classes")
    attack_request(scenario, classes, args.per_class)  # bad classes / per_class: refused before any judge is trained
    judges = train_judges(scenario, ws)
    reference = train_target(scenario, "none", seed=target.meta["seed"], ws=ws) if args.diagnostics else None
    run = attack_target(scenario, target, args.attack, seed=_seed(args, scenario), settings=parse_assignments(args.set),
                        classes=classes, per_class=args.per_class, ws=ws, judges=judges, reference=reference)
    row = result_row(scenario, target, run, judges)
    out = Path(args.out)
    ps = run.metrics["per_sample"]
    grid = reconstruction_grid(run.reconstructions.images, run.reconstructions.labels, run.metrics["nearest_private_index"],
                               load_data(scenario), out / f"grid_{row['defense']}_{args.attack}.png", ps["hit"], ps["confidence"],
                               ps["hit_open"])
    write_json_atomic(out / "results.json", {"rows": [row | {"grid": grid.name}]})
    print(text_table([row]))
    print(f"queries {row['queries']}  ·  grid {grid}  ·  results {out / 'results.json'}  ·  artifact {run.path}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .metrics.accuracy import natural_accuracy
    from .metrics.confidence import confidence_summary, true_class_confidence
    from .targets import load_classifier
    from .scenario_data import load_data

    scenario, ws = _setup(args)
    trained = load_classifier(args.target, ws.device)
    _check_same_data(scenario, trained.meta)
    data = load_data(scenario)
    result = {
        "artifact": str(trained.path), "defense": trained.meta["defense"],
        "natural_acc": natural_accuracy(trained.model, data.x_test, data.y_test),
        "train_acc": natural_accuracy(trained.model, data.x_train, data.y_train),
        "train_confidence": confidence_summary(true_class_confidence(trained.model, data.x_train, data.y_train)),
        "test_confidence": confidence_summary(true_class_confidence(trained.model, data.x_test, data.y_test)),
    }
    _print_json(result)
    return 0


def _check_same_data(scenario: Any, meta: dict[str, Any]) -> None:
    from .errors import ConfigError
    from .scenario_data import data_key

    current = data_key(scenario)
    recorded = {k: meta.get("key", {}).get(k) for k in current}
    if recorded != current:
        raise ConfigError(f"the artifact was trained on another scenario's data ({meta.get('scenario', {}).get('name')!r}); "
                          "pass the same --scenario (and --scenario-set) it was trained with")


def _user_model(args: argparse.Namespace, scenario: Any, checkpoint: str | None = None) -> Any:
    """The model named by --module or --arch, with the weights of `checkpoint` (default --checkpoint). A
    checkpoint written by `calor harden` (its JSON record beside it) gets the low-rank head first."""
    import importlib

    from .errors import ArtifactError, ConfigError
    from .weights import load_weights

    if args.module:
        mod_name, _, cls_name = args.module.partition(":")
        if not mod_name or not cls_name:
            raise ConfigError(f"--module {args.module!r}: write it as package.module:ClassName")
        try:
            cls = getattr(importlib.import_module(mod_name), cls_name)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"--module {args.module}: cannot import it ({exc})") from None
        try:
            kwargs = json.loads(args.module_kwargs)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--module-kwargs: not JSON ({exc})") from None
        if not isinstance(kwargs, dict):
            raise ConfigError("--module-kwargs: expected a JSON object of keyword arguments")
        try:
            model = cls(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"--module {args.module}: cannot build it with {kwargs} ({exc})") from None
    else:
        from .models import build_classifier
        from .scenario_data import load_data

        data = load_data(scenario)
        c, r, _ = data.image_shape
        t = scenario.target
        model = build_classifier(args.arch, num_classes=data.num_classes, in_channels=c, resolution=r, width=t.width,
                                 feature_dim=t.feature_dim)
    checkpoint = checkpoint or args.checkpoint
    record_file = Path(checkpoint).with_suffix(".json")
    if record_file.is_file():
        from .filekinds import describe, read_small_text
        from .harden import restore_head

        text = read_small_text(record_file, "harden record", ArtifactError)
        try:
            record = json.loads(text)["record"]
            restore_head(model, str(record["layer"]), int(record["rank"]), str(record.get("activation", "tanh")))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ArtifactError(f"{record_file}: {describe(record_file)}, not a `calor harden` record (the JSON written beside "
                                f"a hardened checkpoint: {type(exc).__name__} {exc}); move it away to load the checkpoint as it is") from None
    state = load_weights(checkpoint)
    own = model.state_dict()
    missing, unexpected = [k for k in own if k not in state], [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise ArtifactError(f"{checkpoint}: the weights do not fit {type(model).__name__}: missing {missing[:5]}, "
                            f"unexpected {unexpected[:5]}, shapes {wrong[:5]}")
    model.load_state_dict(state)
    return model


def cmd_harden(args: argparse.Namespace) -> int:
    from safetensors.torch import save_file

    from .artifacts import write_file_atomic, write_json_atomic
    from .harden import harden
    from .scenario_data import load_data
    from .runtime import versions

    scenario, ws = _setup(args)
    model = _user_model(args, scenario)
    data = load_data(scenario)
    out = Path(args.out)
    model, record = harden(model, (data.x_train, data.y_train), rank=args.rank, gamma=args.gamma, layer=args.layer,
                           train=args.train, epochs=args.epochs, lr=args.lr, ca_epochs=args.ca_epochs, ca_lr=args.ca_lr,
                           ca_optimizer=args.ca_optimizer,
                           test_data=(data.x_test, data.y_test), seed=_seed(args, scenario), device=ws.device)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_file_atomic(out, lambda tmp: save_file(state, str(tmp)))
    write_json_atomic(out.with_suffix(".json"), {"record": record.to_dict(), "checkpoint": args.checkpoint,
                                                 "model": args.module or args.arch, "scenario": scenario.to_dict(),
                                                 "versions": versions()})
    print(f"replaced {record.layer} ({record.in_features} -> {record.num_classes}) by a rank-{record.rank} head; "
          f"p* = {record.target_confidence:.3f}")
    for split in ("train", "test"):
        b, a = record.before[split], record.after[split]
        print(f"{split:<6} accuracy {b['accuracy']:.4f} -> {a['accuracy']:.4f}   mean true-class confidence "
              f"{b['confidence']['mean']:.4f} -> {a['confidence']['mean']:.4f}")
    print(f"hardened weights {out}  ·  record {out.with_suffix('.json')}  ·  {record.seconds:.1f}s")
    return 0


def _or(value: Any, default: Any) -> Any:
    """An option's value, or `default` when it was not given (0 is a value: validation refuses it)."""
    return default if value is None else value


def cmd_audit(args: argparse.Namespace) -> int:
    from .audit import audit
    from .prior_store import Priors
    from .report import conclusive_table, plain_table, results_table, worst_case_table
    from .scenario_data import load_data
    from .targets import train_judges

    from .errors import ConfigError

    scenario, ws = _setup(args)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()] if args.seeds else [_seed(args, scenario)]
    except ValueError:
        raise ConfigError(f"--seeds {args.seeds!r}: write integers separated by commas, e.g. 0,1,2") from None
    models = {Path(args.checkpoint).stem: _user_model(args, scenario)}
    for path in args.compare:
        name = Path(path).stem
        if name in models:
            raise ConfigError(f"--compare {path}: a model named {name!r} is already audited; give checkpoints distinct file names")
        models[name] = _user_model(args, scenario, path)
    data = load_data(scenario)
    result = audit(models, (data.x_train, data.y_train), (data.x_public, data.y_public),
                   [a.strip() for a in args.attacks.split(",") if a.strip()], test_data=(data.x_test, data.y_test),
                   evaluator=train_judges(scenario, ws), prior=Priors(scenario, seeds[0], ws).gan(),
                   attacker_model=scenario.target, classes=scenario.attacked_classes(),
                   per_class=_or(args.per_class, scenario.attack.per_class), iterations=_or(args.iterations, scenario.attack.iterations),
                   seeds=seeds, device=ws.device)
    out = result.save(args.out)
    print("did each attack learn anything (on the baseline, against its floor)\n" + plain_table(*conclusive_table(result.conclusive)) + "\n")
    if result.usable:
        print("worst case over the conclusive attacks\n" + plain_table(*worst_case_table(result.rows, baseline=result.baseline)) + "\n")
    print(plain_table(*results_table(result.rows, ["attack_acc@1", "attack_acc@1_open", "judge_confidence", "knn_dist"],
                                     markdown=False, baseline=result.baseline, primary=result.primary)))
    print(f"report {out / 'report.md'}  ·  rows {out / 'results.json'}  ·  grids {out / 'grids'}")
    if not result.usable:
        print(f"calor audit: INCONCLUSIVE - no attack recovered more than its floor from {result.baseline}; this audit says "
              "nothing about leakage (see 'why not' above). Exit 3: not a pass.", file=sys.stderr)
        return AUDIT_INCONCLUSIVE
    return 0


def cmd_inspect_weights(args: argparse.Namespace) -> int:
    from .weights import load_weights

    sd = load_weights(args.file)
    for name, t in sd.items():
        print(f"{name:<48} {str(tuple(t.shape)):<20} {str(t.dtype).replace('torch.', '')}")
    print(f"{len(sd)} tensors, {sum(t.numel() for t in sd.values()):,} values")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from .attacks import ATTACKS
    from .attacks.base import describe as describe_attack
    from .defenses import DEFENSES
    from .defenses.base import describe as describe_defense
    from .models import CLASSIFIERS
    from .scenario import builtin_scenarios, load_scenario

    what = args.what
    if what in ("all", "defenses"):
        print("defenses:")
        for n in DEFENSES:
            d = describe_defense(DEFENSES.get(n))
            print(f"  {n:<10} {d['paper']}\n             defaults: {json.dumps(d['defaults'])}")
    if what in ("all", "attacks"):
        print("attacks:")
        for n in ATTACKS:
            d = describe_attack(ATTACKS.get(n))
            print(f"  {n:<10} [{d['threat_model']}] {d['paper']}\n             defaults: {json.dumps(d['defaults'])}")
    if what in ("all", "scenarios"):
        print("scenarios:")
        for n in builtin_scenarios():
            print(f"  {n:<10} {load_scenario(n).description}")
    if what in ("all", "models"):
        print("models:")
        for n in CLASSIFIERS:
            print(f"  {n:<10} {(CLASSIFIERS.get(n).__doc__ or '').split(chr(10))[0]}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    if args.data_command == "fake":
        from .data.synthetic import write_fake_faces

        t0 = time.perf_counter()
        root = write_fake_faces(args.directory, args.layout, args.identities, args.per_identity, seed=args.seed)
        print(f"wrote {args.identities} x {args.per_identity} generated faces in the {args.layout} layout to {root} "
              f"({time.perf_counter() - t0:.1f}s)")
        return 0
    from .scenario_data import load_data, split_summary

    scenario, _ = _setup(args)
    t0 = time.perf_counter()
    data = load_data(scenario)
    info = split_summary(data)
    print(f"scenario {scenario.name}: {data.num_classes} private classes, images {data.image_shape}")
    for part, n in info["sizes"].items():
        print(f"  {part:<14} {n:>7} images  (names sha256 {info['indices_sha256'][part]})")
    for k in ("private_listing", "public_listing"):
        if info.get(k):
            print(f"  {k.replace('_', ' '):<14} {info[k]['layout']}  fingerprint {info[k]['fingerprint'][:16]}")
    if "split_file" in info:
        print(f"  split file     {info['split_file']}  checksum {info['split_checksum'][:16]}")
    print(f"  {time.perf_counter() - t0:.1f}s")
    return 0


def cmd_prior(args: argparse.Namespace) -> int:
    from .stylegan_import import import_stylegan2, load_stylegan2

    if args.prior_command == "import":
        t0 = time.perf_counter()
        out = import_stylegan2(args.file, args.out, conv_clamp=args.conv_clamp)
        from .artifacts import load_meta

        meta = load_meta(out)
        cfg, src = meta["config"], meta["source"]
        print(f"imported {src['file']} ({src['format']}, sha256 {src['sha256'][:16]}): StyleGAN2 at {cfg['resolution']} px, "
              f"{cfg['channels']} channels, z {cfg['z_dim']}, w {cfg['w_dim']} x {meta['num_ws']}, "
              f"{len(meta['key_report']['matched'])} tensors, every key and shape checked -> {out} ({time.perf_counter() - t0:.1f}s)")
        return 0
    import torch

    from .errors import ConfigError
    from .images import save_grid

    if args.n < 1:
        raise ConfigError(f"--n {args.n}: must be >= 1")
    G = load_stylegan2(args.artifact)
    with torch.no_grad():
        ws = G.sample_w(args.n, torch.Generator().manual_seed(args.seed), psi=args.psi)
        images = G.synthesize(ws).clamp(-1, 1)
    side = max(1, int(round(args.n ** 0.5)))
    path = save_grid([images[i:i + side] for i in range(0, args.n, side)], Path(args.out))
    print(f"{args.n} samples (psi {args.psi}, seed {args.seed}) -> {path}")
    return 0


COMMANDS = {"demo": cmd_demo, "bench": cmd_bench, "report": cmd_report, "train": cmd_train, "attack": cmd_attack, "evaluate": cmd_evaluate,
            "harden": cmd_harden, "audit": cmd_audit, "inspect-weights": cmd_inspect_weights, "data": cmd_data, "prior": cmd_prior, "list": cmd_list}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except CalorError as exc:
        print(f"calor {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"calor {args.command}: error: out of memory; lower the batch size, model width or resolution", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        if "out of memory" in str(exc) or "can't allocate memory" in str(exc):  # torch's CPU and CUDA allocators
            print(f"calor {args.command}: error: out of memory ({str(exc).splitlines()[0][:200]}); lower the batch size, "
                  "model width or resolution", file=sys.stderr)
            return 2
        raise
    except OSError as exc:  # a file calor did not expect to fail (a full disk mid-run): one line, not a traceback
        where = f" {exc.filename}" if exc.filename else ""
        print(f"calor {args.command}: error:{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished artifacts are kept, rerun to resume", file=sys.stderr)
        return 130
    finally:
        from .parallel import shutdown

        shutdown()  # leave a torchrun process group cleanly (no-op otherwise)


if __name__ == "__main__":
    sys.exit(main())
