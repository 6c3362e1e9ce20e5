"""Classifier artifacts: the scenario's targets (one per defense and seed) and its judges (evaluation
models the attacker never sees), trained through the one training loop or loaded from the cache."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .artifacts import Artifact, config_hash, load_artifact
from .config import to_dict
from .data.splits import SplitData
from .defenses.base import Defense, Stage, build_defense
from .errors import ArtifactError
from .evaluation import Judge
from .metrics.accuracy import natural_accuracy, predict
from .metrics.confidence import confidence_summary, true_class_confidence
from .models.classifiers import Classifier, build_classifier
from .progress import log
from .records import CARD_SCHEMA, TargetCard
from .runtime import compute_key, seed_everything
from .scenario import ClassifierSpec, Scenario
from .scenario_data import data_key, load_data, split_summary
from .workspace import ARTIFACT_FORMAT, Workspace, classifier_code

EVAL_MODEL_SEED = 12345  # one evaluation model per scenario, independent of the experiment seeds


@dataclass
class TrainedClassifier:
    """A target or judge: the model (eval mode), its artifact meta (config, metrics, history) and directory."""

    model: Classifier
    meta: TargetCard
    path: Path


def defense_settings(scenario: Scenario, name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Scenario defaults for a defense (chosen for that data), then the user's overrides."""
    return {**scenario.defenses.get(name, {}), **(overrides or {})}


def model_spec(data: SplitData, spec: ClassifierSpec) -> dict[str, Any]:
    """The constructor arguments of a classifier for `data` (what an artifact records as its model)."""
    c, r, _ = data.image_shape
    return {"arch": spec.arch, "num_classes": data.num_classes, "in_channels": c, "resolution": r,
            "width": spec.width, "feature_dim": spec.feature_dim}


def build_model(spec: dict[str, Any], defense: Defense) -> Classifier:
    """A fresh classifier of `spec`, prepared by `defense` (e.g. its head replaced)."""
    defense.check_architecture(spec["arch"])
    model = build_classifier(spec["arch"], **{k: v for k, v in spec.items() if k != "arch"})
    return defense.prepare(model)


def start_from_pretrained(model: Classifier, spec: ClassifierSpec) -> dict[str, Any] | None:
    """Load `spec.pretrained` (a user's safetensors or state-dict file) into `model` where names and shapes
    match (calor's names, or the field's checkpoint layout for a face network: whichever matches more), and
    return what to record: the file, its sha256, the layout used and the match report. None without one."""
    if not spec.pretrained:
        return None
    from .data.decode import resolve_data_path
    from .models.faces import FACE_ARCHS, field_prefix_map
    from .weights import file_digest, load_into, load_weights

    path = resolve_data_path(spec.pretrained, f"{spec.arch}.pretrained")
    state = load_weights(path)
    layouts = {"calor": None, **({"field": field_prefix_map(spec.arch)} if spec.arch in FACE_ARCHS else {})}
    trials = {}
    for name, mapping in layouts.items():  # count matches on a scratch copy; load the best into the model
        try:
            trials[name] = load_into(copy.deepcopy(model), state, prefix_map=mapping)
        except ArtifactError:
            continue
    if not trials:
        raise ArtifactError(f"{path}: no tensor matches the {spec.arch} model under the calor or the field's names "
                            "(see `calor inspect-weights`)")
    best = max(trials, key=lambda k: len(trials[k].matched))
    report = load_into(model, state, prefix_map=layouts[best])
    log(f"{spec.arch} starts from {path.name}: {report.summary()}")
    return {"file": str(spec.pretrained), "sha256": file_digest(path), "layout": best, "summary": report.summary(),
            "report": report.to_dict()}


def pretrained_key(spec: ClassifierSpec) -> dict[str, Any]:
    """What a pretrained start adds to a cache key: the weights' content, not only their file name."""
    if not spec.pretrained:
        return {}
    from .data.decode import resolve_data_path
    from .weights import file_digest

    return {"pretrained_sha256": file_digest(resolve_data_path(spec.pretrained, f"{spec.arch}.pretrained"))}


def _from_artifact(art: Artifact, device: torch.device | None = None) -> TrainedClassifier:
    meta = art.meta
    if meta.get("kind") not in ("target", "evaluation"):
        raise ArtifactError(f"{art.path}: is a {meta.get('kind')!r} artifact, not a classifier")
    try:
        defense = build_defense(meta["defense"], meta["defense_config"])
        model = build_model(meta["model"], defense)
        model.load_state_dict(art.tensors, strict=True)
    except (KeyError, RuntimeError) as exc:
        raise ArtifactError(f"{art.path}: weights do not match the recorded model ({exc})") from None
    model.to(device or torch.device("cpu")).eval()
    return TrainedClassifier(model, meta, Path(art.path))


def load_classifier(path: Path | str, device: torch.device | None = None) -> TrainedClassifier:
    """Rebuild a trained classifier (target or evaluation model) from its artifact directory."""
    return _from_artifact(load_artifact(Path(path)), device)


def classifier_key(scenario: Scenario, role: str, spec: ClassifierSpec, defense_name: str, defense: Defense,
                   seed: int) -> tuple[dict[str, Any], str]:
    """The cache key of a classifier artifact and its location relative to the cache."""
    key = {"format": ARTIFACT_FORMAT, "kind": role, **data_key(scenario), **compute_key(), "model": model_spec(load_data(scenario), spec),
           "budget": to_dict(spec), **pretrained_key(spec), "defense": defense_name, "defense_config": defense.config_dict(), "seed": seed}
    return key, f"{'targets' if role == 'target' else 'evaluation'}/{defense_name}-{config_hash(key)}"


def judge_specs(scenario: Scenario) -> list[ClassifierSpec]:
    """The scenario's judges, primary first."""
    return [scenario.evaluation, *scenario.extra_judges]


def judge_name(spec: ClassifierSpec) -> str:
    return f"{spec.arch}-w{spec.width}"


def evaluation_model_key(scenario: Scenario, index: int = 0) -> tuple[dict[str, Any], str]:
    """The cache key and relative location of the scenario's judge number `index` (0: the primary one)."""
    spec = judge_specs(scenario)[index]
    data = load_data(scenario)
    model = model_spec(data, spec)
    if scenario.judge_classes == "private+public":
        model["num_classes"] = data.num_classes + data.num_public_classes
    key = {"format": ARTIFACT_FORMAT, "kind": "evaluation", **data_key(scenario), **compute_key(), "model": model, "budget": to_dict(spec), **pretrained_key(spec),
           "defense": "none", "defense_config": {}, "judge_classes": scenario.judge_classes, "seed": EVAL_MODEL_SEED + index}
    return key, f"evaluation/{judge_name(spec)}-{config_hash(key)}"


def replicate_seed(seed: int, replicate: int) -> int:
    """The training seed of A/A replicate `replicate` of a seed's target (0: the seed itself)."""
    return seed if replicate == 0 else int(config_hash({"seed": seed, "replicate": replicate})[:8], 16)


def train_target(scenario: Scenario, defense: str = "none", *, seed: int = 0, settings: dict[str, Any] | None = None,
                 ws: Workspace | None = None, replicate: int = 0) -> TrainedClassifier:
    """Train (or load from cache) the scenario's target under `defense`.

    `replicate` > 0 trains an independent copy (A/A calibration): the same defense, data and budget from
    another training seed (`replicate_seed`), while the attacks keep the experiment seed `seed` — the
    copy faces the same prior and latent initialisations as the original, so the two pair like two defenses."""
    from .training import train_classifier

    ws = ws or Workspace()
    defense_obj = build_defense(defense, defense_settings(scenario, defense, settings))
    data = load_data(scenario)
    key, rel = classifier_key(scenario, "target", scenario.target, defense, defense_obj, seed)
    if replicate:
        key["replicate"] = replicate  # only when set: the original's key (and cache entry) is unchanged
        rel = f"targets/{defense}-{config_hash(key)}"
    train_seed = replicate_seed(seed, replicate)

    def confidence_after(stage: Stage, m: torch.nn.Module) -> dict[str, Any]:
        if stage.data != "private":  # e.g. TL pre-training: the head then predicts public classes
            return {}
        return {"train_confidence": confidence_summary(true_class_confidence(m, data.x_train, data.y_train))}

    def build(ckpt: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any], Classifier]:
        seed_everything(train_seed)
        model = build_model(key["model"], defense_obj)
        pretrained = start_from_pretrained(model, scenario.target)
        t0 = time.perf_counter()
        history = train_classifier(model, defense_obj, data.x_train, data.y_train, scenario.target,
                                   public=(data.x_public, data.y_public), device=ws.device, seed=train_seed,
                                   description=f"target {defense}", after_stage=confidence_after, checkpoint=ckpt)
        train_s = time.perf_counter() - t0
        epochs = [h for h in history if h["epoch"] is not None]
        metrics = {
            "natural_acc": natural_accuracy(model, data.x_test, data.y_test),
            "train_confidence": confidence_summary(true_class_confidence(model, data.x_train, data.y_train)),
            "test_confidence": confidence_summary(true_class_confidence(model, data.x_test, data.y_test)),
            "confidence_by_stage": {h["stage"]: h["train_confidence"] for h in history
                                    if h["epoch"] is None and "train_confidence" in h},
            "train_seconds": train_s,
            "seconds_per_epoch": sum(e["seconds"] for e in epochs) / max(len(epochs), 1),
            "defense": defense_obj.summary(),
        }
        if pretrained:
            metrics["pretrained"] = pretrained
        meta = {"schema": CARD_SCHEMA, "model": key["model"], "defense": defense, "defense_config": defense_obj.config_dict(), "seed": seed,
                **({"replicate": replicate, "train_seed": train_seed} if replicate else {}), "metrics": metrics, "history": history,
                "scenario": scenario.to_dict(), "data_split": split_summary(data)}
        log(f"target {defense}: natural acc {metrics['natural_acc']:.4f}, mean train confidence "
            f"{metrics['train_confidence']['mean']:.3f}, {train_s:.1f}s -> {ws.cache / rel}")
        return model.state_dict(), meta, model.eval()

    model, meta, path = ws.cached(rel, key, classifier_code(type(defense_obj)), build=build,
                               load=lambda art: _from_artifact(art, ws.device).model, what=f"target {defense}")
    return TrainedClassifier(model, meta, path)


def train_evaluation_model(scenario: Scenario, ws: Workspace | None = None, index: int = 0) -> TrainedClassifier:
    """Judge number `index` of the scenario (0: the primary one): an architecture the attacker never sees,
    trained with plain cross-entropy on the private training split and — with judge_classes
    "private+public" — on the judges' part of the labelled public pool as extra classes
    (`SplitData.judge_public`: disjoint from the images the attacker's priors learn from)."""
    from .training import train_classifier

    ws = ws or Workspace()
    spec = judge_specs(scenario)[index]
    key, rel = evaluation_model_key(scenario, index)
    defense = build_defense("none", {})

    def build(ckpt: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any], Classifier]:
        data = load_data(scenario)
        x, y = data.x_train, data.y_train
        if scenario.judge_classes == "private+public":  # the judges' own public images, never the attacker's
            x_pub, y_pub = data.judge_public()
            x, y = torch.cat([x, x_pub]), torch.cat([y, y_pub + data.num_classes])
        seed = key["seed"]
        seed_everything(seed)
        model = build_model(key["model"], defense)
        pretrained = start_from_pretrained(model, spec)
        t0 = time.perf_counter()
        history = train_classifier(model, defense, x, y, spec, device=ws.device, seed=seed, description=f"judge {judge_name(spec)}",
                                   checkpoint=ckpt)
        train_s = time.perf_counter() - t0
        k = data.num_classes
        logits = predict(model, data.x_test)
        metrics = {
            "natural_acc": (logits[:, :k].argmax(1) == data.y_test).float().mean().item(),  # closed set: what targets are compared on
            "natural_acc_open": (logits.argmax(1) == data.y_test).float().mean().item(),
            "train_seconds": train_s,
            "test_confidence": confidence_summary(logits[:, :k].softmax(1).gather(1, data.y_test.view(-1, 1)).squeeze(1)),
        }
        if pretrained:
            metrics["pretrained"] = pretrained
        meta = {"schema": CARD_SCHEMA, "model": key["model"], "defense": "none", "defense_config": {}, "seed": seed,
                "judge": {"name": judge_name(spec), "num_private": k, "classes": scenario.judge_classes},
                "metrics": metrics, "history": history, "scenario": scenario.to_dict(), "data_split": split_summary(data)}
        log(f"judge {judge_name(spec)}: private-test acc {metrics['natural_acc']:.4f} (open-set {metrics['natural_acc_open']:.4f}), "
            f"{train_s:.1f}s -> {ws.cache / rel}")
        return model.state_dict(), meta, model.eval()

    model, meta, path = ws.cached(rel, key, classifier_code(type(defense)), build=build,
                               load=lambda art: _from_artifact(art, ws.device).model, what=f"judge {judge_name(spec)}")
    return TrainedClassifier(model, meta, path)


def train_judges(scenario: Scenario, ws: Workspace | None = None) -> list[Judge]:
    """Every judge of the scenario, primary first, ready for `evaluation.judge_images`."""
    return [as_judge(train_evaluation_model(scenario, ws, i)) for i in range(len(judge_specs(scenario)))]


def as_judge(tc: TrainedClassifier) -> Judge:
    """A trained evaluation classifier as a Judge (old private-only artifacts: every logit is private)."""
    info = tc.meta.get("judge", {})
    name = info.get("name") or f"{tc.meta['model']['arch']}-w{tc.meta['model']['width']}"
    return Judge(name, tc.model, int(info.get("num_private", tc.meta["model"]["num_classes"])), tc.meta["metrics"]["natural_acc"],
                 str(tc.path), tc.meta["hash"])
