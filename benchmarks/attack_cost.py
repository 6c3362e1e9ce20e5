"""Attack cost against the floor, in one process on one target.

Gradient-based attacks: seconds per optimisation step (from two runs of K and K + --steps iterations,
so set-up cost cancels) against the *floor*: one bare forward+backward through the same generator and
target at the same batch (images the attack sends to the target per step). A second floor adds the
attack's discriminator/critic (its prior term), which the algorithm cannot skip. Query-based attacks
(mirror-b, brepmi): target queries per second against raw target inference at the attack's batch,
and against generator + target inference (both attacks query with generated images).

    .venv/bin/python benchmarks/attack_cost.py [--attacks gmi,kedmi] [--steps 200] [--device cpu]

Priors are trained with tiny budgets (their quality does not change a step's cost); the target, the
generators and the discriminators have the scenario's sizes.
"""

from __future__ import annotations

import argparse
import inspect
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from calor import Workspace, build_attack, configure_threads, load_scenario, make_oracle, progress, train_target
from calor.prior_store import Priors
from calor.scenario_data import load_data
from calor.runtime import cpu_model, resolve_device

GRADIENT = ["gmi", "kedmi", "plgmi", "lomma-gmi", "lomma-kedmi", "adaptive-pstar", "adaptive-logit", "adaptive-bpda"]
QUERY = ["mirror-b", "brepmi"]
FAST_PRIORS = {"evaluation.epochs": "1", "target.epochs": "2", "prior.steps": "30"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn: Callable[[], Any], device: torch.device, steps: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def _parts(prior: Any) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """The generator and discriminator/critic an attack's prior holds (through BPDA/LOMMA wrappers)."""
    while not hasattr(prior, "generator") and hasattr(prior, "prior"):
        prior = prior.prior
    disc = getattr(prior, "critic", None) or getattr(prior, "discriminator", None)
    return prior.generator, disc


def floors(G: torch.nn.Module, D: torch.nn.Module | None, target: torch.nn.Module, batch: int, classes: int,
           device: torch.device, steps: int) -> tuple[float, float]:
    conditional = len(inspect.signature(G.forward).parameters) == 2
    z = torch.randn(batch, G.z_dim, device=device, requires_grad=True)
    y = torch.randint(0, classes, (batch,), device=device)

    def step(with_d: bool) -> None:
        x = G(z, y) if conditional else G(z)
        loss = F.cross_entropy(target(x), y)
        if with_d and D is not None:
            out = D(x, y) if conditional else D(x)
            loss = loss + (out[1] if isinstance(out, tuple) else out).float().mean()
        z.grad = None
        loss.backward()

    return _timed(lambda: step(False), device, steps), _timed(lambda: step(True), device, steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--attacks", default=",".join(GRADIENT + QUERY))
    ap.add_argument("--scenario", default="mnist")
    ap.add_argument("--steps", type=int, default=200, help="extra iterations timed per gradient attack (default 200)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    progress.set_enabled(False)
    threads = configure_threads(args.threads)
    device = resolve_device(args.device)
    sc = load_scenario(args.scenario).with_overrides(FAST_PRIORS)
    ws = Workspace(cache=Path(tempfile.mkdtemp(prefix="calor-attack-cost-")), device=device)
    target = train_target(sc, "none", seed=0, ws=ws)
    data = load_data(sc)
    classes, per_class = sc.attacked_classes(), sc.attack.per_class
    cap = torch.backends.cpu.get_cpu_capability()
    print(f"# attack cost — {cpu_model()} ({cap}), {threads} threads, device {device}, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d')}; scenario {sc.name}: {len(classes)} classes x {per_class}")
    print(f"{'attack':<16} {'img/step':>8} {'ms/step':>8} {'floor G+T':>9} {'ratio':>6} {'floor G+D+T':>11} {'ratio':>6}")
    for name in args.attacks.split(","):
        probe = build_attack(name)
        oracle = make_oracle(target.model, probe.threat_model, data.num_classes, data.image_shape)
        priors = Priors(sc, 0, ws, target_hash=target.meta["hash"])
        if name in QUERY:
            prior = probe.prepare(oracle, priors)
            calls = []
            counted = oracle.count
            oracle.count = lambda x: (calls.append(len(x)), counted(x))  # type: ignore[method-assign]
            knob = {"generations": 3} if name == "mirror-b" else {"iterations": 20}
            rec = build_attack(name, knob).run(oracle, prior, classes, per_class, 0)
            batch = max(1, round(sum(calls) / len(calls)))
            x = data.x_public[:batch].to(device)
            G, _ = _parts(prior)
            z = torch.randn(batch, G.z_dim, device=device)
            with torch.no_grad():  # these attacks query with generated images: G's forward is part of the floor
                raw = _timed(lambda: target.model(x).softmax(1), device, 20)
                raw_g = _timed(lambda: target.model(G(z)).softmax(1), device, 20)
            qps = rec.queries / rec.seconds
            print(f"{name:<16} {batch:>8}  {qps:,.0f} queries/s; raw target inference {batch / raw:,.0f}/s "
                  f"({batch / raw / qps:.2f}x); generator + target {batch / raw_g:,.0f}/s ({batch / raw_g / qps:.2f}x)")
            continue
        k = 10
        runs = []
        for iterations in (k, k + args.steps):
            atk = build_attack(name, {"iterations": iterations})
            prior = atk.prepare(oracle, priors)  # per run: BPDA's prior holds its base attack (and its iterations)
            runs.append(atk.run(oracle, prior, classes, per_class, 0))
        per_step = (runs[1].seconds - runs[0].seconds) / args.steps
        batch = round((runs[1].queries - runs[0].queries) / args.steps)
        G, D = _parts(prior)
        g_t, g_d_t = floors(G, D, target.model, batch, data.num_classes, device, args.steps)
        print(f"{name:<16} {batch:>8} {per_step * 1e3:>8.2f} {g_t * 1e3:>9.2f} {per_step / g_t:>6.2f} "
              f"{g_d_t * 1e3:>11.2f} {per_step / g_d_t:>6.2f}")


if __name__ == "__main__":
    main()
