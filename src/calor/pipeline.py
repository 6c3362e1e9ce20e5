"""Builds (or finds in the cache) every artifact a result needs: data, targets, evaluation model, priors,
attack runs; and turns an attack run into one traceable result row.

Every function here is a plain call with plain inputs; caching is by config hash, so nothing is
recomputed when its config is unchanged.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .checkpoint import DEFAULT_EVERY_SECONDS, Checkpointer
from .artifacts import config_hash, find_artifact, load_artifact, load_meta, save_artifact
from .attacks.base import AttackerBudget, AttackerStore, Reconstructions, build_attack
from .attacks.oracle import make_oracle
from .attacks.priors import GanPrior, train_gan
from .config import to_dict
from .data.splits import SplitData, make_splits
from .defenses.base import Defense, Stage, build_defense
from .errors import ArtifactError, ConfigError
from .diagnostics import gradient_path
from .evaluation import Judge, calibration_images, judge_images
from .metrics.accuracy import natural_accuracy, predict
from .metrics.confidence import confidence_summary, true_class_confidence
from .models.classifiers import Classifier, build_classifier
from .models.gan import Critic, Generator
from .progress import log
from .runtime import seed_everything, versions
from .versioning import class_modules, code_versions, module_file, stale_modules
from .scenario import ClassifierSpec, Scenario

ARTIFACT_FORMAT = 3  # bump when a change makes old cached artifacts invalid
EVAL_MODEL_SEED = 12345  # one evaluation model per scenario, independent of the experiment seeds

# the modules every artifact's work runs through, besides its own (calor.versioning follows their imports)
_COMMON_CODE = ("data/splits.py", "runtime.py")


def classifier_code(defense: type[Defense]) -> dict[str, int]:
    """Code versions of a classifier artifact trained under the `defense` class."""
    return code_versions([*_COMMON_CODE, "training.py", "models/classifiers.py", *class_modules(defense)])


def gan_code() -> dict[str, int]:
    """Code versions of the shared GAN prior."""
    return code_versions([*_COMMON_CODE, "attacks/priors.py"])


def attack_code(attack: type) -> dict[str, int]:
    """Code versions of a run of the `attack` class (and of its attack-specific priors): the attack's class
    hierarchy and the judging code its metrics come from."""
    return code_versions([*_COMMON_CODE, *class_modules(attack), "evaluation.py", "diagnostics.py"])


@dataclass
class Workspace:
    """Where artifacts are cached, which device computes, and whether artifacts shipped with calor
    (`calor.pretrained`: the embedded scenario's judges and the demo seed's GAN prior) may stand in for cached ones."""

    cache: Path = Path("runs/cache")
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    packaged: bool = True
    # least seconds between checkpoints inside a long stage (0: every epoch / step; None: no checkpoints)
    checkpoint_every: float | None = DEFAULT_EVERY_SECONDS

    def __post_init__(self) -> None:
        self.cache = Path(self.cache)  # a str works too (the README's example passes one)
        self.device = torch.device(self.device)
        if self.checkpoint_every is not None and self.checkpoint_every < 0:
            raise ConfigError(f"checkpoint interval {self.checkpoint_every}: must be >= 0 seconds (or None for no checkpoints)")

    def checkpointer(self, rel: str, key: dict[str, Any]) -> Checkpointer:
        """Checkpoints of the work that will produce artifact `rel` (keyed by its cache key), under
        <cache>/checkpoints/<rel>; removed once the artifact is saved."""
        return Checkpointer(self.cache / "checkpoints" / rel, key, self.checkpoint_every)

    def existing(self, path: Path, code: dict[str, int]) -> Path | None:
        """The finished artifact for cache location `path`, built by the current `code` (see calor.versioning):
        the cached one, else a shipped one with the same key (same relative path), else None. An artifact
        built by other code is reported as stale and not returned (the caller rebuilds it)."""
        found = path if find_artifact(path) else None
        if found is None and self.packaged:
            from .pretrained import packaged_artifact

            found = packaged_artifact(Path(path).relative_to(self.cache))
        if found is None:
            return None
        stale = stale_modules(load_meta(found).get("code"), code)
        if stale:
            log(f"[yellow]stale artifact {found}: built by other code ({'; '.join(stale[:4])}"
                f"{'; ...' if len(stale) > 4 else ''}); rebuilding[/yellow]")
            return None
        return found


@dataclass
class TrainedClassifier:
    model: Classifier
    meta: dict[str, Any]
    path: Path


@dataclass
class AttackRun:
    reconstructions: Reconstructions
    metrics: dict[str, Any]
    meta: dict[str, Any]
    path: Path


_DATA: dict[str, SplitData] = {}


def data_key(scenario: Scenario) -> dict[str, Any]:
    return {"data": to_dict(scenario.data), "resolution": scenario.resolution}


def load_data(scenario: Scenario) -> SplitData:
    """The scenario's split (memoised in-process: loading and splitting is deterministic)."""
    key = config_hash(data_key(scenario))
    if key not in _DATA:
        _DATA[key] = make_splits(scenario)
    return _DATA[key]


def split_summary(data: SplitData) -> dict[str, Any]:
    """The split's description without the (long) index lists."""
    return {k: v for k, v in data.info.items() if k != "indices"}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def defense_settings(scenario: Scenario, name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Scenario defaults for a defense (chosen for that data), then the user's overrides."""
    return {**scenario.defenses.get(name, {}), **(overrides or {})}


def _model_spec(data: SplitData, spec: ClassifierSpec) -> dict[str, Any]:
    c, r, _ = data.image_shape
    return {"arch": spec.arch, "num_classes": data.num_classes, "in_channels": c, "resolution": r,
            "width": spec.width, "feature_dim": spec.feature_dim}


def _build(model_spec: dict[str, Any], defense: Defense) -> Classifier:
    defense.check_architecture(model_spec["arch"])
    model = build_classifier(model_spec["arch"], **{k: v for k, v in model_spec.items() if k != "arch"})
    return defense.prepare(model)


def load_classifier(path: Path | str, device: torch.device | None = None) -> TrainedClassifier:
    """Rebuild a trained classifier (target or evaluation model) from its artifact directory."""
    art = load_artifact(Path(path))
    meta = art.meta
    if meta.get("kind") not in ("target", "evaluation"):
        raise ArtifactError(f"{path}: is a {meta.get('kind')!r} artifact, not a classifier")
    try:
        defense = build_defense(meta["defense"], meta["defense_config"])
        model = _build(meta["model"], defense)
        model.load_state_dict(art.tensors, strict=True)
    except (KeyError, RuntimeError) as exc:
        raise ArtifactError(f"{path}: weights do not match the recorded model ({exc})") from None
    model.to(device or torch.device("cpu")).eval()
    return TrainedClassifier(model, meta, Path(path))


def classifier_key(scenario: Scenario, role: str, spec: ClassifierSpec, defense_name: str, defense: Defense,
                   seed: int) -> tuple[dict[str, Any], str]:
    """The cache key of a classifier artifact and its location relative to the cache."""
    key = {"format": ARTIFACT_FORMAT, "kind": role, **data_key(scenario), "model": _model_spec(load_data(scenario), spec),
           "budget": to_dict(spec), "defense": defense_name, "defense_config": defense.config_dict(), "seed": seed}
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
    model = _model_spec(data, spec)
    if scenario.judge_classes == "private+public":
        model["num_classes"] = data.num_classes + len(scenario.data.public_classes)
    key = {"format": ARTIFACT_FORMAT, "kind": "evaluation", **data_key(scenario), "model": model, "budget": to_dict(spec),
           "defense": "none", "defense_config": {}, "judge_classes": scenario.judge_classes, "seed": EVAL_MODEL_SEED + index}
    return key, f"evaluation/{judge_name(spec)}-{config_hash(key)}"


def gan_key(scenario: Scenario, seed: int) -> tuple[dict[str, Any], str]:
    """The cache key and relative location of the scenario's shared GAN prior for `seed`."""
    key = {"format": ARTIFACT_FORMAT, "kind": "prior-gan", **data_key(scenario), "prior": to_dict(scenario.prior), "seed": seed}
    return key, f"priors/{scenario.prior.kind}-{config_hash(key)}"


def _train_classifier_artifact(scenario: Scenario, role: str, spec: ClassifierSpec, defense_name: str, settings: dict[str, Any], seed: int, ws: Workspace) -> TrainedClassifier:
    from .training import train_classifier

    defense = build_defense(defense_name, settings)
    data = load_data(scenario)
    key, rel = classifier_key(scenario, role, spec, defense_name, defense, seed)
    model_spec = key["model"]
    h = config_hash(key)
    path = ws.cache / rel
    code = classifier_code(type(defense))
    found = ws.existing(path, code)
    if found:
        log(f"[dim]cached {role} {defense_name}: {found}[/dim]")
        return load_classifier(found, ws.device)
    seed_everything(seed)
    model = _build(model_spec, defense)

    def confidence_after(stage: Stage, m: torch.nn.Module) -> dict[str, Any]:
        if stage.data != "private":  # e.g. TL pre-training: the head then predicts public classes
            return {}
        return {"train_confidence": confidence_summary(true_class_confidence(m, data.x_train, data.y_train))}

    t0 = time.perf_counter()
    ckpt = ws.checkpointer(rel, key)
    history = train_classifier(model, defense, data.x_train, data.y_train, spec, public=(data.x_public, data.y_public),
                               device=ws.device, seed=seed, description=f"{role} {defense_name}", after_stage=confidence_after,
                               checkpoint=ckpt)
    train_s = time.perf_counter() - t0
    epochs = [h_ for h_ in history if h_["epoch"] is not None]
    metrics = {
        "natural_acc": natural_accuracy(model, data.x_test, data.y_test),
        "train_confidence": confidence_summary(true_class_confidence(model, data.x_train, data.y_train)),
        "test_confidence": confidence_summary(true_class_confidence(model, data.x_test, data.y_test)),
        "confidence_by_stage": {h_["stage"]: h_["train_confidence"] for h_ in history if h_["epoch"] is None and "train_confidence" in h_},
        "train_seconds": train_s,
        "seconds_per_epoch": sum(e["seconds"] for e in epochs) / max(len(epochs), 1),
        "defense": defense.summary(),
    }
    meta = {"kind": role, "hash": h, "key": key, "model": model_spec, "defense": defense_name,
            "defense_config": defense.config_dict(), "seed": seed, "metrics": metrics, "history": history,
            "scenario": scenario.to_dict(), "data_split": split_summary(data), "versions": versions(), "code": code, "created": _now()}
    save_artifact(path, model.state_dict(), meta)
    ckpt.clear()
    log(f"{role} {defense_name}: natural acc {metrics['natural_acc']:.4f}, mean train confidence "
        f"{metrics['train_confidence']['mean']:.3f}, {train_s:.1f}s -> {path}")
    return TrainedClassifier(model.eval(), meta, path)


def train_target(scenario: Scenario, defense: str = "none", *, seed: int = 0, settings: dict[str, Any] | None = None, ws: Workspace | None = None) -> TrainedClassifier:
    """Train (or load from cache) the scenario's target under `defense`."""
    return _train_classifier_artifact(scenario, "target", scenario.target, defense, defense_settings(scenario, defense, settings), seed, ws or Workspace())


def train_evaluation_model(scenario: Scenario, ws: Workspace | None = None, index: int = 0) -> TrainedClassifier:
    """Judge number `index` of the scenario (0: the primary one): an architecture the attacker never sees,
    trained with plain cross-entropy on the private training split and — with judge_classes
    "private+public" — on the labelled public split as extra classes."""
    from .training import train_classifier

    ws = ws or Workspace()
    spec = judge_specs(scenario)[index]
    key, rel = evaluation_model_key(scenario, index)
    path = ws.cache / rel
    code = classifier_code(type(build_defense("none", {})))
    found = ws.existing(path, code)
    if found:
        log(f"[dim]cached judge {judge_name(spec)}: {found}[/dim]")
        return load_classifier(found, ws.device)
    data = load_data(scenario)
    x, y = data.x_train, data.y_train
    if scenario.judge_classes == "private+public":
        x, y = torch.cat([x, data.x_public]), torch.cat([y, data.y_public + data.num_classes])
    seed = key["seed"]
    seed_everything(seed)
    defense = build_defense("none", {})
    model = _build(key["model"], defense)
    t0 = time.perf_counter()
    ckpt = ws.checkpointer(rel, key)
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
    meta = {"kind": "evaluation", "hash": config_hash(key), "key": key, "model": key["model"], "defense": "none",
            "defense_config": {}, "seed": seed, "judge": {"name": judge_name(spec), "num_private": k,
                                                          "classes": scenario.judge_classes},
            "metrics": metrics, "history": history, "scenario": scenario.to_dict(), "data_split": split_summary(data),
            "versions": versions(), "code": code, "created": _now()}
    save_artifact(path, model.state_dict(), meta)
    ckpt.clear()
    log(f"judge {judge_name(spec)}: private-test acc {metrics['natural_acc']:.4f} (open-set {metrics['natural_acc_open']:.4f}), "
        f"{train_s:.1f}s -> {path}")
    return TrainedClassifier(model.eval(), meta, path)


def train_judges(scenario: Scenario, ws: Workspace | None = None) -> list[Judge]:
    """Every judge of the scenario, primary first, ready for `evaluation.judge_images`."""
    return [as_judge(train_evaluation_model(scenario, ws, i)) for i in range(len(judge_specs(scenario)))]


def as_judge(tc: TrainedClassifier) -> Judge:
    """A trained evaluation classifier as a Judge (old private-only artifacts: every logit is private)."""
    info = tc.meta.get("judge", {})
    name = info.get("name") or f"{tc.meta['model']['arch']}-w{tc.meta['model']['width']}"
    return Judge(name, tc.model, int(info.get("num_private", tc.meta["model"]["num_classes"])), tc.meta["metrics"]["natural_acc"],
                 str(tc.path), tc.meta["hash"])


class Priors:
    """The PriorStore handed to attacks: the attacker's public images, the shared GAN prior, and a
    generic cache for attack-specific priors (surrogates, conditional GANs), keyed by config and —
    when the prior depends on the target — by the target's hash too."""

    def __init__(self, scenario: Scenario, seed: int, ws: Workspace, target_hash: str | None = None) -> None:
        self.scenario, self.seed, self.ws, self.target_hash = scenario, seed, ws, target_hash
        self.used: dict[str, str] = {}
        self.queries: dict[str, int] = {}  # target queries spent building each prior (its meta's "queries")
        self.seconds: dict[str, float] = {}  # time it took to build each prior, whether built now or loaded

    @property
    def device(self) -> torch.device:
        return self.ws.device

    @property
    def budget(self) -> AttackerBudget:
        return AttackerBudget(prior=self.scenario.prior, target=self.scenario.target)

    def for_attacker(self) -> AttackerStore:
        """The view of this store an attack receives: public images, the GAN prior, the prior cache and the
        budget; not the scenario, the workspace or anything private."""
        return AttackerStore(device=self.device, budget=self.budget, gan=self.gan, public_images=self.public_images,
                             cached=self.cached)

    def public_images(self) -> torch.Tensor:
        """The attacker's public images (never their labels)."""
        return load_data(self.scenario).x_public

    def cached(self, name: str, config: dict[str, Any], build: Callable[[], tuple[dict[str, torch.Tensor], dict[str, Any]]],
               *, depends_on_target: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Return the tensors and meta of prior `name` for `config`, running `build()` (which returns
        (tensors, extra meta)) only when no finished artifact exists for that key."""
        if depends_on_target and self.target_hash is None:
            raise ArtifactError(f"prior {name!r} depends on the target, but no target was given")
        sc = self.scenario
        key = {"format": ARTIFACT_FORMAT, "kind": f"prior-{name}", **data_key(sc), "config": config, "seed": self.seed,
               "target": self.target_hash if depends_on_target else None}
        h = config_hash(key)
        path = self.ws.cache / "priors" / f"{name}-{h}"
        # the prior depends on the module whose `build` makes it (and its imports), not on which attack asks:
        # KED-MI's GAN is the same artifact for kedmi and lomma-kedmi
        code = code_versions([*_COMMON_CODE, *filter(None, [module_file(build.__module__)])])
        found = self.ws.existing(path, code)
        if found:
            path = found
            art = load_artifact(path)
            log(f"[dim]cached prior {name}: {path}[/dim]")
            tensors, meta = art.tensors, art.meta
        else:
            t0 = time.perf_counter()
            seed_everything(self.seed)
            # a build that takes a `checkpoint` (a long per-target GAN) snapshots inside its loop and resumes
            ckpt = self.ws.checkpointer(f"priors/{name}-{h}", key)
            takes_checkpoint = "checkpoint" in inspect.signature(build).parameters
            tensors, extra = build(checkpoint=ckpt) if takes_checkpoint else build()
            meta = {"kind": f"prior-{name}", "hash": h, "key": key, "seed": self.seed, **extra,
                    "train_seconds": time.perf_counter() - t0, "versions": versions(), "code": code, "created": _now()}
            save_artifact(path, tensors, meta)
            ckpt.clear()
            log(f"prior {name}: {meta['train_seconds']:.1f}s -> {path}")
        self.used[name] = str(path)
        self.queries[name] = int(meta.get("queries", 0))
        self.seconds[name] = float(meta.get("train_seconds", 0.0))
        return tensors, meta

    def gan(self) -> GanPrior:
        sc, ws = self.scenario, self.ws
        data = load_data(sc)
        key, rel = gan_key(sc, self.seed)
        h = config_hash(key)
        path = ws.cache / rel
        code = gan_code()
        found = ws.existing(path, code)
        if found:
            path = found
            art = load_artifact(path)
            self.seconds["gan"] = float(art.meta.get("train_seconds", 0.0))
            c, r, _ = data.image_shape
            prior = GanPrior(Generator(sc.prior.z_dim, r, c, sc.prior.width), Critic(r, c, sc.prior.width), sc.prior.kind)
            try:
                prior.generator.load_state_dict(_strip(art.tensors, "generator."))
                prior.critic.load_state_dict(_strip(art.tensors, "critic."))
            except RuntimeError as exc:
                raise ArtifactError(f"{path}: weights do not match the prior config ({exc})") from None
            log(f"[dim]cached GAN prior: {path}[/dim]")
        else:
            t0 = time.perf_counter()
            ckpt = ws.checkpointer(rel, key)
            prior, history = train_gan(data.x_public, sc.prior, device=ws.device, seed=self.seed, checkpoint=ckpt)
            tensors = {**{f"generator.{k}": v for k, v in prior.generator.state_dict().items()},
                       **{f"critic.{k}": v for k, v in prior.critic.state_dict().items()}}
            meta = {"kind": "prior-gan", "hash": h, "key": key, "seed": self.seed, "history": history,
                    "train_seconds": time.perf_counter() - t0, "data_split": split_summary(data), "versions": versions(), "code": code,
                    "created": _now()}
            save_artifact(path, tensors, meta)
            ckpt.clear()
            log(f"GAN prior ({sc.prior.kind}): {meta['train_seconds']:.1f}s -> {path}")
            self.seconds["gan"] = meta["train_seconds"]
        self.used["gan"] = str(path)
        prior.path = str(path)
        prior.generator.to(ws.device).eval()
        prior.critic.to(ws.device).eval()
        return prior


def _strip(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def evaluate_reconstructions(rec: Reconstructions, data: SplitData, judges: list[Judge]) -> dict[str, Any]:
    """Every metric of `rec` (see `calor.evaluation.judge_images`): the aggregate metrics, plus
    "per_sample" values and each reconstruction's "nearest_private_index" into x_train."""
    judged = judge_images(rec.images, rec.labels, data, judges)
    return {**judged["metrics"], "per_sample": judged["per_sample"], "nearest_private_index": judged["nearest_private_index"]}


def attack_request(scenario: Scenario, classes: list[int] | None, per_class: int | None) -> tuple[list[int], int]:
    """The classes and reconstructions per class an attack run asks for (the scenario's by default), checked
    before any work starts."""
    classes = list(classes) if classes is not None else scenario.attacked_classes()
    if per_class is not None and per_class < 1:
        raise ConfigError(f"per_class={per_class}: ask for at least 1 reconstruction per class")
    k = load_data(scenario).num_classes
    bad = [c for c in classes if not 0 <= c < k]
    if bad:
        raise ConfigError(f"classes {bad}: the target has classes 0..{k - 1}")
    return classes, per_class or scenario.attack.per_class


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
    settings = dict(settings or {})
    atk_cls_cfg = build_attack(attack, settings).config_dict()
    if "iterations" in atk_cls_cfg and atk_cls_cfg["iterations"] is None:
        settings["iterations"] = scenario.attack.iterations
    atk = build_attack(attack, settings)
    classes, per_class = attack_request(scenario, classes, per_class)
    judges = judges or train_judges(scenario, ws)
    data = load_data(scenario)
    key = {"format": ARTIFACT_FORMAT, "kind": "attack", "target": target.meta["hash"], "judges": [j.hash for j in judges],
           "reference": reference.meta["hash"] if reference is not None else None,
           "attack": attack, "attack_config": atk.config_dict(), "prior": to_dict(scenario.prior), "classes": classes,
           "per_class": per_class, "seed": seed}
    h = config_hash(key)
    path = ws.cache / "attacks" / f"{attack}-{target.meta['defense']}-{h}"
    code = attack_code(type(atk))
    if ws.existing(path, code):
        art = load_artifact(path)
        rec = Reconstructions(art.tensors["images"], art.tensors["labels"], art.tensors.get("latents"),
                              art.meta["queries"], art.meta["attack_seconds"], art.meta.get("extras", {}))
        log(f"[dim]cached attack {attack} on {target.meta['defense']}: {path}[/dim]")
        return AttackRun(rec, dict(art.meta["metrics"]), art.meta, path)
    oracle = make_oracle(target.model, atk.threat_model, data.num_classes, data.image_shape)
    priors = Priors(scenario, seed, ws, target_hash=target.meta["hash"])
    prior = atk.prepare(oracle, priors.for_attacker())
    seed_everything(seed)
    ckpt = ws.checkpointer(f"attacks/{path.name}", key)
    rec = atk.run(oracle, prior, classes, per_class, seed, checkpoint=ckpt)
    t0 = time.perf_counter()
    metrics = evaluate_reconstructions(rec, data, judges)
    metrics["diagnostics"] = gradient_path(target.model, rec, reference.model if reference is not None else None)
    metrics["metrics_seconds"] = time.perf_counter() - t0
    metrics["queries"] = rec.queries
    metrics["prior_queries"] = sum(priors.queries.values())
    metrics["prior_seconds"] = sum(priors.seconds.values())
    metrics["attack_seconds"] = rec.seconds
    meta = {"kind": "attack", "hash": h, "key": key, "attack": attack, "threat_model": atk.threat_model.value,
            "attack_config": atk.config_dict(), "target": str(target.path), "judges": {j.name: j.path for j in judges},
            "priors": priors.used, "classes": classes, "per_class": per_class, "seed": seed, "metrics": metrics,
            "queries": rec.queries, "attack_seconds": rec.seconds, "extras": rec.extras, "versions": versions(), "code": code,
            "created": _now()}
    tensors = {"images": rec.images, "labels": rec.labels}
    if rec.latents is not None:
        tensors["latents"] = rec.latents
    if rec.trajectory is not None:
        tensors["trajectory"] = rec.trajectory
    save_artifact(path, tensors, meta)
    ckpt.clear()
    log(f"attack {attack} on {target.meta['defense']}: acc@1 {metrics['attack_acc@1']:.3f} (open-set {metrics['attack_acc@1_open']:.3f}), "
        f"knn {metrics['knn_dist']:.1f}, {rec.queries} queries, {rec.seconds:.1f}s")
    return AttackRun(rec, metrics, meta, path)


# the metrics of a result row, in the order tables show them (calor.report.METRICS says which way is better)
ROW_METRICS = ("attack_acc@1", "attack_acc@1_open", "attack_acc@5", "judge_confidence", "judge_confidence_open", "public_verdict_rate",
               "knn_dist", "pixel_mse", "ssim", "kid", "eval_fid", "degenerate_rate", "diversity", "coverage")


def judge_check(judges: list[Judge], target_acc: float) -> dict[str, Any]:
    """Is the primary judge stronger than the target it judges (private-test accuracy)? Recorded in every row."""
    primary = judges[0]
    return {"name": primary.name, "natural_acc": primary.natural_acc, "target_natural_acc": target_acc,
            "margin": primary.natural_acc - target_acc, "stronger_than_target": primary.natural_acc > target_acc,
            "all": {j.name: j.natural_acc for j in judges}}


def _metric_fields(m: dict[str, Any]) -> dict[str, Any]:
    out = {k: m[k] for k in ROW_METRICS if k in m}
    out |= {"n": m["n"], "judges": m["judges"], "per_sample": m["per_sample"]}
    return out


def result_row(scenario: Scenario, target: TrainedClassifier, run: AttackRun, judges: list[Judge]) -> dict[str, Any]:
    """One traceable result row: the numbers, and everything that produced them."""
    tm = target.meta["metrics"]
    m = run.metrics
    check = judge_check(judges, tm["natural_acc"])
    if not check["stronger_than_target"]:
        log(f"[bold red]WARNING[/bold red]: judge {check['name']} (private-test acc {check['natural_acc']:.4f}) is not stronger than "
            f"the {target.meta['defense']} target it judges ({tm['natural_acc']:.4f}); its verdicts are not evidence")
    seed = run.meta["seed"]
    row = {
        "scenario": scenario.name, "defense": target.meta["defense"], "label": target.meta["defense"], "variant": {},
        "attack": run.meta["attack"], "seed": seed, "tuning_seed": seed in scenario.tuning_seeds,
        "natural_acc": tm["natural_acc"], **_metric_fields(m), "judge": check,
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
    classes = list(classes) if classes is not None else scenario.attacked_classes()
    if per_class is not None and per_class < 1:
        raise ConfigError(f"per_class={per_class}: ask for at least 1 reconstruction per class")
    per_class = per_class or scenario.attack.per_class
    generator = Priors(scenario, seed, ws).gan().generator if name == "floor: prior" else None
    rec = calibration_images(name, data, classes, per_class, seed, generator)
    m = evaluate_reconstructions(rec, data, judges)
    row = {"scenario": scenario.name, "defense": name, "label": name, "variant": {}, "attack": "calibration", "seed": seed,
           "tuning_seed": seed in scenario.tuning_seeds, "calibration": True, **_metric_fields(m),
           "judge": {"name": judges[0].name, "natural_acc": judges[0].natural_acc, "all": {j.name: j.natural_acc for j in judges}},
           "classes": classes, "per_class": per_class, "scenario_config": scenario.to_dict(), "versions": versions()}
    return row, rec, m["nearest_private_index"]
