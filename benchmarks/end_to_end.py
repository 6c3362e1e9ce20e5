"""End to end: wall time and peak RSS of `calor demo` (empty cache, then cached) and of the test suite,
with the first demo's time broken down by stage from the artifacts it wrote. (With an empty cache the
judge and GAN prior shipped with calor are still used; pass `-- --rebuild` to train them too.)

    .venv/bin/python benchmarks/end_to_end.py [--skip-tests] [--threads 2] [-- extra calor demo args]

Stages: judge (evaluation model training), targets (every target's training, CA included), prior
(the shared GAN prior, counted once), attacks, metrics (judging the reconstructions); "other" is the
rest of the wall time: interpreter and imports, data loading, grids, plots and the report.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float, subprocess.CompletedProcess]:
    """Wall seconds and peak RSS (MB) of one child process (run through `time -v`-like accounting)."""
    # ru_maxrss of RUSAGE_CHILDREN is the largest child so far; a fresh interpreter per measurement keeps
    # each figure its own.
    wrapper = ("import resource, subprocess, sys, json; p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "print(json.dumps({'rc': p.returncode, 'out': p.stdout[-4000:], 'err': p.stderr[-4000:], "
               "'rss': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    res = json.loads(proc.stdout)
    done = subprocess.CompletedProcess(cmd, res["rc"], res["out"], res["err"])
    return wall, res["rss"] / 1024, done


def stages(out: Path, wall: float) -> dict[str, float]:
    from calor.pretrained import STORE

    rows = [r for r in json.loads((out / "results.json").read_text())["rows"] if not r.get("calibration")]  # floor/ceiling rows: "other"
    # A judge or prior shipped with calor was loaded, not trained, in this run: it cost (almost) nothing.
    built = lambda path: not Path(path).resolve().is_relative_to(STORE.resolve())  # noqa: E731
    judge_paths = [Path(p) for k, p in rows[0]["artifacts"].items() if k.startswith("judge ")]
    judge = sum(json.loads((p / "meta.json").read_text())["metrics"]["train_seconds"] for p in judge_paths if built(p))
    parts = {
        "judge": judge,
        "targets": sum(r["train_s"] for r in rows),
        "prior": max(r["prior_s"] for r in rows) if built(rows[0]["artifacts"]["gan"]) else 0.0,  # one shared prior
        "attacks": sum(r["attack_s"] for r in rows),
        "metrics": sum(r["metrics_s"] or 0.0 for r in rows),
    }
    parts["other"] = wall - sum(parts.values())
    return parts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("extra", nargs="*", help="extra `calor demo` arguments (after --)")
    args = ap.parse_args()
    import torch

    from calor.runtime import available_cpus, cpu_model

    threads = args.threads or available_cpus()
    env = {**os.environ, "CALOR_THREADS": str(threads)}
    calor = [str(ROOT / ".venv" / "bin" / "calor")] if (ROOT / ".venv" / "bin" / "calor").exists() else [sys.executable, "-m", "calor.cli"]
    print(f"# end to end — {cpu_model()} ({torch.backends.cpu.get_cpu_capability()}), {threads} threads, "
          f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    with tempfile.TemporaryDirectory(prefix="calor-e2e-") as tmp:
        cache, out = Path(tmp) / "cache", Path(tmp) / "demo"
        cmd = [*calor, "demo", "--quiet", "--cache", str(cache), "--out", str(out), *args.extra]
        for label in ("demo, empty cache", "demo, cached"):
            wall, rss, done = run(cmd, env)
            if done.returncode != 0:
                sys.exit(f"{label} failed: {done.stderr[-2000:]}")
            print(f"{label:<22} wall {wall:7.1f} s   peak RSS {rss:6.0f} MB")
            if label.endswith("empty cache"):
                first = stages(out, wall)
                print("  by stage: " + ", ".join(f"{k} {v:.1f} s ({v / wall:.0%})" for k, v in first.items()))
                print("  " + "\n  ".join(line for line in done.stdout.splitlines() if line.strip()))
    if not args.skip_tests:
        wall, rss, done = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], env)
        summary = (done.stdout.strip().splitlines() or ["?"])[-1]
        print(f"{'test suite':<22} wall {wall:7.1f} s   peak RSS {rss:6.0f} MB   ({summary})")


if __name__ == "__main__":
    main()
