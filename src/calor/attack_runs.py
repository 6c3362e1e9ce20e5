"""Attack runs: one registered attack against one target, through the oracle its threat model allows,
judged by every metric (`calor.evaluation`) and cached as an artifact."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .artifacts import Artifact, config_hash
from .attacks.adaptive_bpda import SATURATING, AdaptiveBPDA
from .attacks.base import Attack, AttackerStore, Reconstructions, build_attack
from .attacks.oracle import make_oracle
from .checkpoint import Checkpointer
from .config import to_dict
from .data.splits import SplitData
from .diagnostics import gradient_path
from .errors import ConfigError
from .evaluation import Judge, judge_images
from .progress import log
from .records import CARD_SCHEMA, AttackCard
from .runtime import compute_key, seed_everything
from .scenario import Scenario, attack_settings, prior_key
from .scenario_data import load_data
from .targets import TrainedClassifier, train_judges
from .prior_store import Priors
from .workspace import ARTIFACT_FORMAT, Workspace, attack_code


@dataclass
class AttackRun:
    """An attack run: its reconstructions, metrics, artifact meta and directory."""

    reconstructions: Reconstructions
    metrics: dict[str, Any]
    meta: AttackCard
    path: Path


def evaluate_reconstructions(rec: Reconstructions, data: SplitData, judges: list[Judge]) -> dict[str, Any]:
    """Every metric of `rec` (see `calor.evaluation.judge_images`): the aggregate metrics, plus
    "per_sample" values and each reconstruction's "nearest_private_index" into x_train."""
    judged = judge_images(rec.images, rec.labels, data, judges)
    return {**judged["metrics"], "per_sample": judged["per_sample"], "nearest_private_index": judged["nearest_private_index"]}


def check_request(classes: list[int], per_class: int, num_classes: int) -> None:
    """Refuse an attack request before any work starts."""
    if per_class < 1:
        raise ConfigError(f"per_class={per_class}: ask for at least 1 reconstruction per class")
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise ConfigError(f"classes {bad}: the target has classes 0..{num_classes - 1}")


def attack_request(scenario: Scenario, classes: list[int] | None, per_class: int | None) -> tuple[list[int], int]:
    """The classes and reconstructions per class an attack run asks for (the scenario's by default), checked
    before any work starts."""
    classes = list(classes) if classes is not None else scenario.attacked_classes()
    per_class = per_class if per_class is not None else scenario.attack.per_class
    check_request(classes, per_class, load_data(scenario).num_classes)
    return classes, per_class


def reconstruct(attack: Attack, model: nn.Module, num_classes: int, image_shape: tuple[int, ...], store: AttackerStore,
                classes: list[int], per_class: int, seed: int, checkpoint: Checkpointer | None = None) -> Reconstructions:
    """Run `attack` against `model` through the oracle its threat model allows: build its prior from
    `store`, then reconstruct `per_class` images of each of `classes` (latents seeded by `seed`)."""
    oracle = make_oracle(model, attack.threat_model, num_classes, image_shape)
    prior = attack.prepare(oracle, store)
    seed_everything(seed)
    return attack.run(oracle, prior, classes, per_class, seed, checkpoint=checkpoint)


def has_saturating_units(model: nn.Module) -> bool:
    """Does `model` hold an activation that adaptive-bpda would make straight-through?"""
    return any(isinstance(m, SATURATING) for m in model.modules())


def _as_base_run(scenario: Scenario, target: TrainedClassifier, atk: AdaptiveBPDA, seed: int, classes: list[int], per_class: int,
                 ws: Workspace, judges: list[Judge], reference: TrainedClassifier | None) -> AttackRun:
    """adaptive-bpda against a model with no saturating unit is its base attack, step for step (the
    straight-through copy is the model itself; tests/test_bpda_composition.py checks it bit for bit): run or
    load the base's own run, so that a bench computes it once for both columns, and say so in the meta."""
    cfg = atk.config
    base = attack_target(scenario, target, cfg.base, seed=seed, settings={**cfg.base_settings, "iterations": cfg.iterations},
                         classes=classes, per_class=per_class, ws=ws, judges=judges, reference=reference)
    rec = dataclasses.replace(base.reconstructions, extras={**base.reconstructions.extras, "bpda_swapped": 0, "base": cfg.base})
    meta = {**base.meta, "attack": atk.name, "attack_config": atk.config_dict(), "code": attack_code(type(atk)),
            "computed_as": {"attack": cfg.base, "artifact": str(base.path),
                            "why": "no saturating activation: the straight-through copy is the model itself"}}
    return AttackRun(rec, base.metrics, meta, base.path)


def attack_target(
    scenario: Scenario,
    target: TrainedClassifier,
    attack: str = "gmi",
    *,
    seed: int = 0,
    settings: dict[str, Any] | None = None,
    classes: list[int] | None = None,
    per_class: int | None = None,
    ws: Workspace | None = None,
    judges: list[Judge] | None = None,
    reference: TrainedClassifier | None = None,
) -> AttackRun:
    """Attack `target` with a registered attack (or load the cached run) and compute its metrics with the
    scenario's judges. `reference` (the undefended target of the same seed) adds gradient diagnostics
    along the attack's path (`calor.diagnostics`) for attacks that optimise latents."""
    ws = ws or Workspace()
    atk = build_attack(attack, attack_settings(scenario, attack, settings), iterations=scenario.attack.iterations)
    classes, per_class = attack_request(scenario, classes, per_class)
    judges = judges or train_judges(scenario, ws)
    if isinstance(atk, AdaptiveBPDA) and not has_saturating_units(target.model):
        return _as_base_run(scenario, target, atk, seed, classes, per_class, ws, judges, reference)
    data = load_data(scenario)
    key = {"format": ARTIFACT_FORMAT, "kind": "attack", **compute_key(), "target": target.meta["hash"], "judges": [j.hash for j in judges],
           "reference": reference.meta["hash"] if reference is not None else None,
           "attack": attack, "attack_config": atk.config_dict(), "prior": prior_key(scenario.prior), "classes": classes,
           "per_class": per_class, "seed": seed}
    defense = target.meta["defense"]

    def load(art: Artifact) -> Reconstructions:
        return Reconstructions(art.tensors["images"], art.tensors["labels"], art.tensors.get("latents"),
                               art.meta["queries"], art.meta["attack_seconds"], art.meta.get("extras", {}))

    def build(ckpt: Checkpointer) -> tuple[dict[str, torch.Tensor], dict[str, Any], Reconstructions]:
        priors = Priors(scenario, seed, ws, target_hash=target.meta["hash"])
        rec = reconstruct(atk, target.model, data.num_classes, data.image_shape, priors.for_attacker(), classes, per_class,
                          seed, ckpt)
        t0 = time.perf_counter()
        metrics = evaluate_reconstructions(rec, data, judges)
        metrics["diagnostics"] = gradient_path(target.model, rec, reference.model if reference is not None else None)
        metrics["metrics_seconds"] = time.perf_counter() - t0
        metrics["queries"] = rec.queries
        metrics["prior_queries"] = sum(priors.queries.values())
        metrics["prior_seconds"] = sum(priors.seconds.values())
        metrics["attack_seconds"] = rec.seconds
        meta = {"schema": CARD_SCHEMA, "attack": attack, "threat_model": atk.threat_model.value, "attack_config": atk.config_dict(),
                "target": str(target.path), "judges": {j.name: j.path for j in judges}, "priors": priors.used,
                "classes": classes, "per_class": per_class, "seed": seed, "metrics": metrics, "queries": rec.queries,
                "attack_seconds": rec.seconds, "extras": rec.extras}
        tensors = {"images": rec.images, "labels": rec.labels}
        if rec.latents is not None:
            tensors["latents"] = rec.latents
        if rec.trajectory is not None:
            tensors["trajectory"] = rec.trajectory
        log(f"attack {attack} on {defense}: acc@1 {metrics['attack_acc@1']:.3f} (open-set {metrics['attack_acc@1_open']:.3f}), "
            f"knn {metrics['knn_dist']:.1f}, {rec.queries} queries, {rec.seconds:.1f}s")
        return tensors, meta, rec

    rel = f"attacks/{attack}-{defense}-{config_hash(key)}"
    rec, meta, path = ws.cached(rel, key, attack_code(type(atk)), build=build, load=load, what=f"attack {attack} on {defense}")
    return AttackRun(rec, dict(meta["metrics"]), meta, path)
