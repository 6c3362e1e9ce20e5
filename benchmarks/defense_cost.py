"""Training cost per defense: seconds per epoch of each training stage and peak memory, as a ratio to
`none`. Every defense trains in its own fresh subprocess (so peak RSS is its own), in the order given,
on the scenario's target with the scenario's data; extra stages (CA fine-tune, TL pre-training, ...)
are reported on their own lines.

    .venv/bin/python benchmarks/defense_cost.py [--defenses none,lor,calor] [--epochs 3] [--threads 2]

s/epoch is the median over the stage's epochs after the first (warm-up); peak RSS is the child's
high-water mark (data loading included, the same for every defense).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CHILD = r"""
import json, resource, sys, time, statistics
import torch
from calor import build_defense, configure_threads, load_scenario
from calor.targets import build_model, model_spec, defense_settings
from calor.scenario_data import load_data
from calor.training import train_classifier
from calor.runtime import resolve_device
name, scenario, epochs, threads, device = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
configure_threads(threads)
sc = load_scenario(scenario).with_overrides({"target.epochs": str(epochs)})
settings = defense_settings(sc, name, {})
defense = build_defense(name, settings)
arch = defense.architectures[0] if defense.architectures else sc.target.arch
sc = sc.with_overrides({"target.arch": arch})
data = load_data(sc)
model = build_model(model_spec(data, sc.target), defense)
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
history = train_classifier(model, defense, data.x_train, data.y_train, sc.target, public=(data.x_public, data.y_public),
                           device=resolve_device(device), seed=0)
stages = {}
for h in history:
    if h["epoch"] is not None:
        stages.setdefault(h["stage"], []).append(h["seconds"])
out = {s: {"epochs": len(v), "s_per_epoch": statistics.median(v[1:] or v)} for s, v in stages.items()}
print(json.dumps({"stages": out, "arch": arch, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_before_training_mb": rss0 / 1024}))
"""


def main() -> None:
    from calor.defenses import DEFENSES
    from calor.runtime import available_cpus, cpu_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--defenses", default=",".join(DEFENSES.names()))
    ap.add_argument("--scenario", default="mnist")
    ap.add_argument("--epochs", type=int, default=5, help="epochs per stage (default 5; the first is warm-up)")
    ap.add_argument("--threads", type=int, default=None, help="default: the CPUs this process may use")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    threads = args.threads or available_cpus()
    import torch

    print(f"# defense training cost — {cpu_model()} ({torch.backends.cpu.get_cpu_capability()}), {threads} threads, "
          f"device {args.device}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}; scenario {args.scenario}, "
          f"{args.epochs} epochs per stage")
    print(f"{'defense':<9} {'target':<7} {'stage':<10} {'s/epoch':>8} {'x none':>7} {'peak RSS MB':>11} {'x none':>7}")
    base: dict[str, float] = {}
    # `none` runs first (the reference) and last (how far the machine drifted during the run).
    names = ["none", *[n for n in args.defenses.split(",") if n != "none"], "none"]
    for name in names:
        env = {**os.environ, "CALOR_PROGRESS": "0"}
        done = subprocess.run([sys.executable, "-c", CHILD, name, args.scenario, str(args.epochs), str(threads), args.device],
                              capture_output=True, text=True, env=env)
        if done.returncode != 0:
            print(f"{name:<9} FAILED: {done.stderr.strip()[-300:]}")
            continue
        res = json.loads(done.stdout.strip().splitlines()[-1])
        for i, (stage, s) in enumerate(res["stages"].items()):
            if name == "none":
                base.setdefault("s", s["s_per_epoch"])
                base.setdefault("rss", res["peak_rss_mb"])
            mem = f"{res['peak_rss_mb']:>11.0f} {res['peak_rss_mb'] / base['rss']:>7.2f}" if i == 0 else ""
            print(f"{name if i == 0 else '':<9} {res['arch'] if i == 0 else '':<7} {stage:<10} {s['s_per_epoch']:>8.3f} {s['s_per_epoch'] / base['s']:>7.2f} {mem}",
                  flush=True)
    head_cost(args.device)


def head_cost(device: str) -> None:
    """The heads alone, forward+backward at the scenario's batch: what the low-rank head itself adds."""
    import torch

    from calor.models import LinearHead, LowRankHead

    dev = torch.device(device)
    feats = torch.randn(64, 128, device=dev, requires_grad=True)
    y = torch.randint(0, 5, (64,), device=dev)
    for label, head in (("linear head", LinearHead(128, 5)), ("low-rank head r=8", LowRankHead(128, 8, 5, "tanh"))):
        head.to(dev).train()

        def step() -> None:
            feats.grad = None
            torch.nn.functional.cross_entropy(head(feats), y).backward()

        for _ in range(50):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(2000):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        print(f"{label:<18} forward+backward at batch 64: {(time.perf_counter() - t0) / 2000 * 1e6:.0f} us")


if __name__ == "__main__":
    main()
