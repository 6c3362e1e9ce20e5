"""Result rows: one traceable record per (target, attack, seed) cell and per floor/ceiling set, holding the
numbers (with per-sample values for intervals and paired tests) and everything that produced them.
`calor.report` and `calor.summary` read these rows."""

from __future__ import annotations

from typing import Any

from .attack_runs import AttackRun, attack_request, evaluate_reconstructions
from .attacks.base import Reconstructions
from .evaluation import Judge, calibration_images
from .prior_store import Priors
from .progress import log
from .records import ROW_SCHEMA, ResultRow
from .runtime import versions
from .scenario import Scenario
from .scenario_data import load_data
from .targets import TrainedClassifier
from .workspace import Workspace

# the metrics of a result row, in the order tables show them (calor.report.METRICS says which way is better)
ROW_METRICS = ("attack_acc@1", "attack_acc@1_open", "attack_acc@1_real", "attack_acc@5", "judge_confidence", "judge_confidence_open",
               "public_verdict_rate", "knn_dist", "pixel_mse", "ssim", "kid", "eval_fid", "degenerate_rate", "diversity", "coverage")


def judge_check(judges: list[Judge], target_acc: float) -> dict[str, Any]:
    """Is the primary judge stronger than the target it judges (private-test accuracy)? Recorded in every row."""
    primary = judges[0]
    return {"name": primary.name, "natural_acc": primary.natural_acc, "target_natural_acc": target_acc,
            "margin": primary.natural_acc - target_acc, "stronger_than_target": primary.natural_acc > target_acc,
            "all": {j.name: j.natural_acc for j in judges}}


def metric_fields(m: dict[str, Any]) -> dict[str, Any]:
    out = {k: m[k] for k in ROW_METRICS if k in m}
    out |= {"n": m["n"], "judges": m["judges"], "per_sample": m["per_sample"]}
    out |= {k: m[k] for k in ("realism", "judge_agreement") if k in m}  # the realism threshold; how far the judges agree
    return out


def result_row(scenario: Scenario, target: TrainedClassifier, run: AttackRun, judges: list[Judge]) -> ResultRow:
    """One traceable result row: the numbers, and everything that produced them."""
    tm = target.meta["metrics"]
    m = run.metrics
    check = judge_check(judges, tm["natural_acc"])
    if not check["stronger_than_target"]:
        log(f"[bold red]WARNING[/bold red]: judge {check['name']} (private-test acc {check['natural_acc']:.4f}) is not stronger than "
            f"the {target.meta['defense']} target it judges ({tm['natural_acc']:.4f}); its verdicts are not evidence")
    seed = run.meta["seed"]
    row: ResultRow = {
        "schema": ROW_SCHEMA, "scenario": scenario.name, "defense": target.meta["defense"], "label": target.meta["defense"], "variant": {},
        "attack": run.meta["attack"], "seed": seed, "tuning_seed": seed in scenario.tuning_seeds,
        "natural_acc": tm["natural_acc"], **metric_fields(m), "judge": check,
        "diagnostics": m.get("diagnostics"),
        "train_s": tm["train_seconds"], "attack_s": m["attack_seconds"],
        "prior_s": m.get("prior_seconds", 0.0), "metrics_s": m.get("metrics_seconds"), "threat_model": run.meta["threat_model"], "queries": m["queries"],
        "prior_queries": m.get("prior_queries", 0), "mean_train_confidence": tm["train_confidence"]["mean"],
        "train_confidence_histogram": tm["train_confidence"]["histogram"],
        "confidence_by_stage": {k: v["mean"] for k, v in tm["confidence_by_stage"].items()},
        "eval_model_acc": check["natural_acc"],
        "classes": run.meta["classes"], "per_class": run.meta["per_class"],
        "defense_config": target.meta["defense_config"], "attack_config": run.meta["attack_config"],
        "target_seed": target.meta["seed"],
        "artifacts": {"target": str(target.path), **{f"judge {k}": v for k, v in run.meta["judges"].items()}, "attack": str(run.path),
                      **run.meta["priors"]},
        "scenario_config": scenario.to_dict(), "data_split": target.meta["data_split"],
        # where the numbers were computed: the attack run's versions (threads, CPU, kernels), which a cached
        # run keeps, and the target's; `reported_with` is the process that wrote this row
        "versions": run.meta.get("versions", {}), "target_versions": target.meta.get("versions", {}), "reported_with": versions(),
        "code": run.meta.get("code"), "target_code": target.meta.get("code"),
    }
    return row


def calibration_row(scenario: Scenario, name: str, seed: int, judges: list[Judge], ws: Workspace | None = None,
                    classes: list[int] | None = None, per_class: int | None = None) -> tuple[dict[str, Any], Reconstructions, list[int]]:
    """A floor or ceiling row (`calor.evaluation.CALIBRATION_SETS`): the same metrics, by the same code, on
    images no attack produced. Returns the row, the images and their nearest private indices (for a grid)."""
    ws = ws or Workspace()
    data = load_data(scenario)
    classes, per_class = attack_request(scenario, classes, per_class)
    generator = Priors(scenario, seed, ws).gan().generator if name == "floor: prior" else None
    rec = calibration_images(name, data, classes, per_class, seed, generator)
    m = evaluate_reconstructions(rec, data, judges)
    row = {"scenario": scenario.name, **calibration_fields(name, seed, m, judges, classes, per_class),
           "tuning_seed": seed in scenario.tuning_seeds, "scenario_config": scenario.to_dict()}
    return row, rec, m["nearest_private_index"]


def calibration_fields(name: str, seed: int, m: dict[str, Any], judges: list[Judge], classes: list[int],
                       per_class: int) -> ResultRow:
    """The fields of a floor or ceiling row with metrics `m` (from `evaluate_reconstructions`)."""
    return {"schema": ROW_SCHEMA, "defense": name, "label": name, "variant": {}, "attack": "calibration", "seed": seed, "tuning_seed": False,
            "calibration": True, **metric_fields(m),
            "judge": {"name": judges[0].name, "natural_acc": judges[0].natural_acc, "all": {j.name: j.natural_acc for j in judges}},
            "classes": classes, "per_class": per_class, "versions": versions()}
