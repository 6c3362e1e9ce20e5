"""Scenarios: everything that defines an experiment's data, models and budgets, loadable from YAML.

A scenario is the unit of reproducibility: its dict (plus a seed) determines every artifact calor builds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Optional

import yaml

from .config import from_dict, to_dict, with_overrides
from .errors import ConfigError, collect
from .filekinds import read_small_text

MAX_RESOLUTION = 1024  # the field's protocols use 64-256 px; larger is a typo that would exhaust memory


@dataclass(frozen=True)
class DataSpec:
    """Where the images come from and how they are split (GMI/MID/BiDO protocol by default)."""

    source: str = "mnist-embedded"  # mnist-embedded | idx | image-folder | celeba | facescrub
    # directory of the data: absolute, or relative to --data-root / CALOR_DATA_ROOT
    path: Optional[str] = None
    # class-list sources: the private and the public classes (labels of the source)
    private_classes: tuple[int, ...] = (0, 1, 2, 3, 4)
    public_classes: tuple[int, ...] = (5, 6, 7, 8, 9)
    test_fraction: float = 0.2
    split_seed: int = 0
    max_per_class: Optional[int] = None  # cap images per class (tiny test scenarios)
    crop: Optional[int] = None  # centre crop (pixels) before resizing image files (CelebA protocol: 108)
    # The face protocols (source celeba | facescrub | image-folder): the `identities` with most images are
    # private (the class lists are then unused); `public_images` public images (None = all) come from the
    # other identities, or from `public_source` (e.g. ffhq) at `public_path`, cropped by `public_crop`.
    identities: Optional[int] = None
    public_source: Optional[str] = None
    public_path: Optional[str] = None
    public_images: Optional[int] = None
    public_crop: Optional[int] = None
    # The public pool is cut in three disjoint parts: the judges' public classes (`judge_public_fraction`;
    # None: 0.3 when judge_classes is private+public, else 0), a holdout that no model sees
    # (`public_holdout_fraction`: the public floor and the realism test's public reference), and the
    # attacker's images (the rest: GAN priors, attacks, public pre-training). A judge that was trained on
    # the prior's images would recognise the prior's own style; a floor measured on a judge's training
    # images is no floor. Both 0: one shared pool (what every scenario had before the cut).
    judge_public_fraction: Optional[float] = None
    public_holdout_fraction: float = 0.1

    @property
    def num_classes(self) -> int:
        return self.identities if self.identities is not None else len(self.private_classes)


@dataclass(frozen=True)
class ClassifierSpec:
    """An architecture and the budget of its (plain CE) training."""

    arch: str = "cnn"
    width: int = 32
    feature_dim: int = 128
    epochs: int = 12
    batch_size: int = 64
    lr: float = 1e-3
    augment: bool = True  # random shifts of up to 2 pixels
    flip: bool = False  # random left-right mirroring when augmenting (faces; never digits)
    optimizer: str = "adam"  # adam | sgd (momentum 0.9)
    weight_decay: float = 0.0
    # weights the backbone starts from (safetensors, or a state dict read with weights_only=True); its
    # sha256 and what matched are recorded in the artifact
    pretrained: Optional[str] = None


@dataclass(frozen=True)
class PriorSpec:
    """The attacker's GAN prior, trained on the public split."""

    kind: str = "wgan-gp"  # wgan-gp (GMI) | dcgan | stylegan2 (the PPA / IF-GMI prior, calor.attacks.stylegan_prior)
    width: int = 32  # stylegan2: block channels min(width * resolution // r, 4 * width)
    z_dim: int = 100  # stylegan2: z and w
    steps: int = 1500
    batch_size: int = 64
    lr: float = 2e-4
    n_critic: int = 5  # D steps per G step (wgan-gp); dcgan and stylegan2 take one
    gp_weight: float = 10.0  # wgan-gp: gradient penalty; stylegan2: R1 gamma, (gamma / 2) E |grad D(x)|^2 on reals
    # stylegan2 only (left out of cache keys at these defaults: older priors keep their keys)
    mapping_layers: int = 2
    style_mixing: float = 0.0  # probability of mixing two ws at a random layer
    pl_weight: float = 0.0  # path-length regularisation weight (StyleGAN2: 2; off by default on a CPU)


# PriorSpec fields added after artifacts were made with the others: a key leaves them out at their defaults
LATER_PRIOR_FIELDS = {"mapping_layers": 2, "style_mixing": 0.0, "pl_weight": 0.0}


def prior_key(spec: "PriorSpec") -> dict[str, Any]:
    """What a cache key records of a PriorSpec: every field, except the later ones at their defaults."""
    d = dataclasses.asdict(spec)
    return {k: v for k, v in d.items() if not (k in LATER_PRIOR_FIELDS and v == LATER_PRIOR_FIELDS[k])}


@dataclass(frozen=True)
class AttackSpec:
    """Budget of an attack run: which classes, how many reconstructions each, how many iterations."""

    classes: Optional[tuple[int, ...]] = None  # None = every private class
    per_class: int = 5
    iterations: int = 1500


@dataclass(frozen=True)
class PrimaryFamily:
    """The headline comparisons of a scenario, declared before its runs: Holm corrects inside this family
    only, and every other comparison of a report is exploratory. A reporting choice: it changes no number
    and no cell (it is left out of cell keys)."""

    pairs: tuple[str, ...] = ()  # "A vs B" under each attack, e.g. "calor vs none"
    attacks: tuple[str, ...] = ()  # attack columns as written in a bench (empty: every attack of the report)
    metrics: tuple[str, ...] = ("attack_acc@1_open",)


@dataclass(frozen=True)
class Scenario:
    name: str = "custom"
    description: str = ""
    resolution: int = 32
    data: DataSpec = field(default_factory=DataSpec)
    target: ClassifierSpec = field(default_factory=ClassifierSpec)
    # The judges (evaluation models): `evaluation` is the primary one (every metric), `extra_judges` are
    # more architectures whose attack accuracy is reported beside it. Trained on the private and the
    # public classes ("private+public", so a public-looking image can be called none of the private
    # classes) or on the private classes only ("private", the field's closed-set evaluator).
    evaluation: ClassifierSpec = field(default_factory=lambda: ClassifierSpec(arch="resnet", width=32, epochs=15))
    extra_judges: tuple[ClassifierSpec, ...] = ()
    judge_classes: str = "private+public"
    prior: PriorSpec = field(default_factory=PriorSpec)
    attack: AttackSpec = field(default_factory=AttackSpec)
    defenses: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-defense default overrides
    # per-attack default settings chosen for this scenario's data (an attack made strong on the undefended
    # target first, on the tuning seeds); an attack run on a base (adaptive-bpda) takes its base's defaults
    attacks: dict[str, dict[str, Any]] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)
    # seeds on which the scenario's defaults (defense settings) were chosen: results on them are marked as
    # tuning results and the published tables use `seeds`, which must not overlap them
    tuning_seeds: tuple[int, ...] = ()
    primary: PrimaryFamily = field(default_factory=PrimaryFamily)

    def __post_init__(self) -> None:
        p: list[str] = []
        p += _primary_problems(self.primary)
        if self.resolution < 8 or self.resolution % 4 or self.resolution > MAX_RESOLUTION:
            p.append(f"resolution={self.resolution}: must be a multiple of 4 from 8 to {MAX_RESOLUTION}")
        d = self.data
        if d.identities is None:
            if not d.private_classes:
                p.append("data.private_classes: empty")
            if len(set(d.private_classes)) != len(d.private_classes):
                p.append("data.private_classes: repeated class")
            overlap = set(d.private_classes) & set(d.public_classes)
            if overlap:
                p.append(f"data.public_classes overlap the private ones: {sorted(overlap)}")
            if not d.public_classes:
                p.append("data.public_classes: empty (the attacker needs public data)")
        elif d.identities < 2:
            p.append(f"data.identities={d.identities}: must be >= 2")
        if d.public_images is not None and d.public_images < 1:
            p.append(f"data.public_images={d.public_images}: must be >= 1")
        if (d.public_source is None) != (d.public_path is None):
            p.append("data.public_source and data.public_path go together")
        for name, crop in (("crop", d.crop), ("public_crop", d.public_crop)):
            if crop is not None and crop < 8:
                p.append(f"data.{name}={crop}: must be >= 8 pixels")
        if not 0.0 < d.test_fraction < 1.0:
            p.append(f"data.test_fraction={d.test_fraction}: must be in (0, 1)")
        if d.max_per_class is not None and d.max_per_class < 4:
            p.append(f"data.max_per_class={d.max_per_class}: must be >= 4")
        if d.public_source is not None and self.judge_classes == "private+public":
            p.append(f"judge_classes=private+public needs labelled public data; data.public_source={d.public_source} is "
                     "unlabelled (use judge_classes: private)")
        if self.judge_classes not in ("private+public", "private"):
            p.append(f"judge_classes={self.judge_classes!r}: choose private+public or private")
        if d.judge_public_fraction is None:
            d = replace(d, judge_public_fraction=0.3 if self.judge_classes == "private+public" else 0.0)
            object.__setattr__(self, "data", d)
        jf, hf = d.judge_public_fraction, d.public_holdout_fraction
        if not (0.0 <= jf < 1.0 and 0.0 <= hf < 1.0 and jf + hf < 1.0):
            p.append(f"data.judge_public_fraction={jf} and data.public_holdout_fraction={hf}: each in [0, 1) and "
                     "together below 1 (the attacker keeps the rest of the public pool)")
        if set(self.seeds) & set(self.tuning_seeds):
            p.append(f"seeds {sorted(set(self.seeds) & set(self.tuning_seeds))} are also tuning_seeds: publish on other seeds")
        specs = [("target", self.target), ("evaluation", self.evaluation)]
        specs += [(f"extra_judges[{i}]", s) for i, s in enumerate(self.extra_judges)]
        for name, spec in specs:
            if spec.epochs < 1 or spec.batch_size < 1 or spec.width < 1 or spec.feature_dim < 1:
                p.append(f"{name}: epochs, batch_size, width and feature_dim must be >= 1")
            if spec.lr <= 0:
                p.append(f"{name}.lr={spec.lr}: must be > 0")
            if spec.optimizer not in ("adam", "sgd"):
                p.append(f"{name}.optimizer={spec.optimizer!r}: choose adam or sgd")
            if spec.weight_decay < 0:
                p.append(f"{name}.weight_decay={spec.weight_decay}: must be >= 0")
        if self.prior.kind not in ("wgan-gp", "dcgan", "stylegan2"):
            p.append(f"prior.kind={self.prior.kind!r}: choose wgan-gp, dcgan or stylegan2")
        if self.prior.kind == "stylegan2" and (self.resolution & (self.resolution - 1)):
            p.append(f"prior.kind=stylegan2 needs a power-of-two resolution, got {self.resolution}")
        if self.prior.mapping_layers < 1 or not 0 <= self.prior.style_mixing <= 1 or self.prior.pl_weight < 0:
            p.append("prior: mapping_layers must be >= 1, style_mixing in [0, 1], pl_weight >= 0")
        if self.prior.steps < 1 or self.prior.n_critic < 1 or self.prior.batch_size < 2:
            p.append("prior: steps and n_critic must be >= 1, batch_size >= 2")
        if self.attack.per_class < 1 or self.attack.iterations < 1:
            p.append("attack: per_class and iterations must be >= 1")
        if self.attack.classes is not None:
            bad = [c for c in self.attack.classes if not 0 <= c < d.num_classes]
            if bad:
                p.append(f"attack.classes {bad}: class indices must be in [0, {d.num_classes})")
        if not self.seeds:
            p.append("seeds: empty")
        problems, typed = _parse_defense_blocks(self.defenses)
        p += problems
        p += _attack_block_problems(self.attacks)
        collect(p, f"scenario {self.name!r}")
        object.__setattr__(self, "defenses", typed)

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    def attacked_classes(self) -> list[int]:
        return list(self.attack.classes) if self.attack.classes is not None else list(range(self.num_classes))

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def with_overrides(self, overrides: dict[str, Any]) -> "Scenario":
        return with_overrides(self, overrides, f"scenario {self.name!r}")


def _primary_problems(primary: PrimaryFamily) -> list[str]:
    from .summary import METRICS, parse_pair  # imported here: the reporting layer sits above this module

    problems = []
    for pair in primary.pairs:
        try:
            a, b = parse_pair(pair)
        except ConfigError as exc:  # collected with the scenario's other problems
            problems.append(f"primary.pairs: {exc}")
            continue
        if a == b:
            problems.append(f"primary.pairs: {pair!r} compares a defense with itself")
    problems += [f"primary.metrics: unknown metric {m!r} (choose from {', '.join(METRICS)})" for m in primary.metrics if m not in METRICS]
    return problems


def _attack_block_problems(blocks: dict[str, dict[str, Any]]) -> list[str]:
    """An `attacks:` block names registered attacks and settings their configs accept (checked at load)."""
    from .attacks.base import ATTACKS, build_attack  # imported here: the attack modules import this one's specs

    problems = []
    for name, settings in blocks.items():
        if name not in ATTACKS.names():
            problems.append(f"attacks.{name}: unknown attack (registered: {', '.join(ATTACKS.names())})")
        elif not isinstance(settings, dict):
            problems.append(f"attacks.{name}: expected a mapping of settings, got {type(settings).__name__}")
        else:
            try:
                build_attack(name, settings)
            except ConfigError as exc:
                problems.append(f"attacks.{name}: " + str(exc).replace("\n  - ", " "))
    return problems


def attack_settings(scenario: "Scenario", name: str, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The settings an attack runs with in `scenario`: the scenario's defaults for it (for an attack run on a
    `base`, the base's defaults too, the user's base choice first), then the user's `settings`."""
    from .attacks.base import ATTACKS

    settings = dict(settings or {})
    merged = dict(scenario.attacks.get(name, {}))
    default_base = getattr(ATTACKS.get(name).Config, "base", None)  # a dataclass field's default is a class attribute
    base = settings.get("base", merged.get("base", default_base))
    if base is not None and base in scenario.attacks:
        merged = {**scenario.attacks[base], **merged}
    return {**merged, **settings}


def _parse_defense_blocks(blocks: dict[str, dict[str, Any]]) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Each `defenses:` block parsed into its defense's registered config type now, so that a misspelt
    defense or setting is reported when the scenario is loaded, not when (or if) that defense is trained.
    Returns the problems and the blocks with typed values (an override's "1" becomes 1)."""
    from .defenses import DEFENSES  # imported here: the defense modules import this one
    from .errors import ConfigError

    problems, typed = [], {}
    for name, settings in blocks.items():
        if name not in DEFENSES.names():
            problems.append(f"defenses.{name}: unknown defense (registered: {', '.join(DEFENSES.names())})")
            continue
        if not isinstance(settings, dict):
            problems.append(f"defenses.{name}: expected a mapping of settings, got {type(settings).__name__}")
            continue
        try:
            parsed = DEFENSES.get(name).from_settings(settings).config_dict()
        except ConfigError as exc:
            problems.append(f"defenses.{name}: " + str(exc).replace("\n  - ", " "))
            continue
        typed[name] = {k: parsed[k] for k in settings}
    return problems, typed


def builtin_scenarios() -> list[str]:
    return sorted(p.name[: -len(".yaml")] for p in resources.files("calor.scenarios").iterdir() if p.name.endswith(".yaml"))


def _scenario_text(name_or_path: str | Path) -> str:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return read_small_text(path, "scenario file", ConfigError)
    name = str(name_or_path)
    if name not in builtin_scenarios():
        raise ConfigError(f"unknown scenario {name!r}; built-in: {', '.join(builtin_scenarios())}, or pass a YAML file")
    return resources.files("calor.scenarios").joinpath(f"{name}.yaml").read_text()


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _scenario_data(name_or_path: str | Path, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """A scenario's mapping; `extends: NAME` (a built-in name or a path) starts from that scenario's."""
    text = _scenario_text(name_or_path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"scenario {name_or_path}: invalid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"scenario {name_or_path}: expected a mapping at the top level")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if str(parent) in seen:
        raise ConfigError(f"scenario {name_or_path}: extends {parent!r}, which extends it again")
    return _merge(_scenario_data(parent, (*seen, str(name_or_path))), data)


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load a built-in scenario by name (`mnist`) or a YAML file by path; a file with `extends: NAME` is that
    scenario with the file's keys on top (mappings merged key by key)."""
    try:
        return from_dict(Scenario, _scenario_data(name_or_path), f"scenario {name_or_path}")
    except ConfigError as exc:  # the validation of a nested block names the block, not the file it came from
        if str(name_or_path) in str(exc):
            raise
        raise ConfigError(f"{name_or_path}: {exc}") from None
