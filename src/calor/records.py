"""The records calor writes and reads back, typed in one place: result rows (one per bench cell or
floor/ceiling set), and the metadata of classifier artifacts (`TargetCard`) and attack runs (`AttackCard`).

They are JSON objects on disk (rows in `cells/*.json` and `results.json`, cards in each artifact's
`meta.json`), so in code they are TypedDicts: every key with its type, checked by a type checker, and a
schema version written into each new record (records without one are version 1, the same keys).
"""

from __future__ import annotations

from typing import TypedDict

ROW_SCHEMA = 2  # rows without "schema" are version 1 (the same keys); bump when a key changes meaning

ResultRow = TypedDict("ResultRow", {
    "schema": int,  # ROW_SCHEMA of the code that wrote the row
    # what was measured
    "scenario": str, "defense": str, "label": str, "variant": dict, "attack": str, "attack_name": str, "attack_variant": dict,
    "cell": str, "seed": int, "tuning_seed": bool, "calibration": bool, "threat_model": str, "classes": list, "per_class": int,
    # the numbers (ROW_METRICS, each a mean over the row's reconstructions), per reconstruction, and their context
    "attack_acc@1": float, "attack_acc@1_open": float, "attack_acc@1_real": float, "attack_acc@5": float, "judge_confidence": float,
    "judge_confidence_open": float, "public_verdict_rate": float, "knn_dist": float, "pixel_mse": float, "ssim": float,
    "kid": float, "eval_fid": "float | None", "degenerate_rate": float, "diversity": "float | None", "coverage": "float | None",
    "n": int, "per_sample": dict, "judges": dict, "judge": dict, "diagnostics": "dict | None", "natural_acc": float,
    "realism": dict, "judge_agreement": dict,  # the realism threshold behind attack_acc@1_real; pairwise judge agreement
    "eval_model_acc": float, "mean_train_confidence": float, "train_confidence_histogram": list, "confidence_by_stage": dict,
    # cost
    "train_s": float, "attack_s": float, "prior_s": float, "metrics_s": float, "queries": int, "prior_queries": int,
    # provenance: configs, artifacts, data split, versions of the code and machine
    "defense_config": dict, "attack_config": dict, "target_seed": int, "artifacts": dict, "scenario_config": dict,
    "data_split": dict, "versions": dict, "target_versions": dict, "reported_with": dict, "code": "dict | None",
    "target_code": "dict | None", "grid": str, "data_key_hash": str, "extras": dict,
}, total=False)
ResultRow.__doc__ = """A result row: one (target, attack, seed) cell or one floor/ceiling set. Written by `result_row`,
`calibration_fields`, `calor.bench` (cell keys) and `calor.audit`; read by `calor.summary`, `calor.report` and the CLI."""


CARD_SCHEMA = 2  # artifact metas without "schema" are version 1 (the same keys)


class TargetCard(TypedDict, total=False):
    """meta.json of a classifier artifact (a target, or a judge with `judge`), written by `calor.targets`."""

    schema: int
    kind: str  # "target" | "evaluation"
    hash: str
    key: dict  # the cache key: format, kind, data, model, budget, defense, defense_config, seed
    model: dict  # constructor arguments (arch, num_classes, in_channels, resolution, width, feature_dim)
    defense: str
    defense_config: dict
    seed: int
    replicate: int  # A/A replicates only: which copy (the original has none)
    train_seed: int  # A/A replicates only: the training seed used instead of `seed`
    judge: dict  # judges only: name, num_private, classes
    metrics: dict  # natural_acc, train/test confidence summaries, confidence_by_stage, train_seconds, ...
    history: list  # one entry per epoch and per stage end
    scenario: dict
    data_split: dict
    versions: dict
    code: dict  # calor.versioning: module -> version of the code that trained it
    created: str


class AttackCard(TypedDict, total=False):
    """meta.json of an attack-run artifact, written by `calor.attack_runs.attack_target`."""

    schema: int
    kind: str  # "attack"
    hash: str
    key: dict  # target hash, judges, reference, attack, attack_config, prior, classes, per_class, seed
    attack: str
    threat_model: str
    attack_config: dict
    target: str  # the target artifact's directory
    judges: dict  # judge name -> artifact directory
    priors: dict  # prior name -> artifact directory
    classes: list
    per_class: int
    seed: int
    metrics: dict  # every metric of evaluate_reconstructions, diagnostics, seconds, queries
    queries: int
    attack_seconds: float
    extras: dict
    versions: dict
    code: dict
    created: str
