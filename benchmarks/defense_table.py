"""Train every registered defense on a scenario through the `calor` command and print one table:
natural accuracy, mean true-class confidence (private train), seconds per epoch, and the defense's own
report (e.g. DP epsilon). Uses a fresh cache so every number comes from this run.

    .venv/bin/python benchmarks/defense_table.py [--scenario mnist] [--seed 0] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from calor.defenses import DEFENSES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scenario", default="mnist")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default=None, help="default: a new temporary directory")
    ap.add_argument("--defenses", default=",".join(DEFENSES.names()))
    args = ap.parse_args()
    cache = args.cache or tempfile.mkdtemp(prefix="calor-defense-table-")
    print(f"{'defense':<8} {'nat_acc':>8} {'mean_conf':>9} {'s/epoch':>8} {'wall_s':>7}  report")
    for name in args.defenses.split(","):
        cmd = [sys.executable, "-m", "calor.cli", "train", "--defense", name, "--scenario", args.scenario,
               "--seed", str(args.seed), "--cache", cache, "--quiet"]
        archs = DEFENSES.get(name).architectures
        if archs:
            cmd += ["--scenario-set", f"target.arch={archs[0]}"]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            print(f"{name:<8} FAILED: {done.stderr.strip()[-300:]}")
            continue
        artifact = done.stdout.split("artifact")[-1].strip()
        m = json.loads(Path(artifact, "meta.json").read_text())["metrics"]
        arch = f" (target {archs[0]})" if archs else ""
        print(f"{name:<8} {m['natural_acc']:>8.4f} {m['train_confidence']['mean']:>9.4f} {m['seconds_per_epoch']:>8.2f} {wall:>7.1f}  "
              f"{json.dumps(m.get('defense') or {})}{arch}", flush=True)


if __name__ == "__main__":
    main()
