"""`calor.audit`: what any PyTorch image classifier leaks to model-inversion attacks.

Registered attacks run against one or more `nn.Module` classifiers (calor's or not) through the oracles
their threat models allow. Every model of one audit faces the same attacker: one GAN prior trained on the
public images, the same latent initialisations for each (attack, seed) — so the models are compared
*paired* — and the same judge. The metrics are calor's (`calor.evaluation`), with floor and ceiling rows
computed by the same code, and the first model is the baseline the others are compared with (paired
differences, Holm-corrected significance marks), exactly as `calor report` does for a bench.

Images are (N, C, H, W) floats in `input_range`: [-1, 1] by default (calor's convention), (0, 1) for models
that take [0, 1] images. calor's generators work in [-1, 1]; the audited models and a given evaluator are
wrapped so that each receives images in the range it expects.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .artifacts import ensure_directory, write_file_atomic, write_json_atomic
from .attack_runs import check_request, evaluate_reconstructions, reconstruct
from .attacks.base import AttackerBudget, Reconstructions, build_attack
from .attacks.priors import GanPrior
from .checkpoint import no_checkpoints
from .conclusive import attack_conclusiveness, mark_conclusive
from .data.inputs import as_images, as_tensors
from .data.splits import SplitData
from .defenses import build_defense
from .diagnostics import gradient_path
from .errors import ConfigError, DataError
from .evaluation import CALIBRATION_SETS, Judge, calibration_images
from .harden import final_linear
from .metrics.accuracy import predict
from .models.classifiers import build_classifier
from .prior_store import MemoryPriors, train_prior
from .progress import log
from .records import ROW_SCHEMA, ResultRow
from .rows import calibration_fields, judge_check, metric_fields
from .runtime import resolve_device, seed_everything, versions
from .scenario import AttackSpec, ClassifierSpec, PriorSpec
from .training import train_classifier

DEFAULT_JUDGE = ClassifierSpec(arch="resnet", width=32, feature_dim=128, epochs=15)  # the built-in scenarios' judge
JUDGE_SEED = 12345  # the judge's training seed, independent of the audit's seeds (as for the scenarios' judges)
HELD_OUT = 0.2  # share of each class kept from the judge's training when no test_data is given


def to_model_range(x: torch.Tensor, input_range: tuple[float, float]) -> torch.Tensor:
    """calor's [-1, 1] images in the range a model takes."""
    low, high = float(input_range[0]), float(input_range[1])
    return x if (low, high) == (-1.0, 1.0) else low + (x + 1) * ((high - low) / 2)


class AuditedClassifier(nn.Module):
    """A user's classifier seen through calor's `Classifier` interface: logits of [-1, 1] images,
    `features` (the input of its final linear layer, captured by a hook), `num_classes` and `feature_dim`.
    Images are mapped from [-1, 1] to the model's `input_range` first."""

    def __init__(self, model: nn.Module, num_classes: int, input_range: tuple[float, float] = (-1.0, 1.0)) -> None:
        super().__init__()
        self.model = model
        self.low, self.high = float(input_range[0]), float(input_range[1])
        self.num_classes = num_classes
        self._tap, layer = final_linear(model, None, num_classes)
        self.feature_dim = layer.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(to_model_range(x, (self.low, self.high)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []
        handle = self.model.get_submodule(self._tap).register_forward_pre_hook(lambda _m, inputs: captured.append(inputs[0]))
        try:
            self.model(to_model_range(x, (self.low, self.high)))
        finally:
            handle.remove()
        return captured[-1].flatten(1)


@dataclass
class AuditResult:
    """What `audit` measured: one result row per (model, attack, seed) and per floor/ceiling set (the bench's
    row format, read by `calor.report`), the reconstructions, and the audit's full configuration."""

    rows: list[ResultRow]
    reconstructions: dict[tuple[str, str, int], Reconstructions]
    nearest: dict[tuple[str, str, int], list[int]]
    config: dict[str, Any]
    data: SplitData = field(repr=False)

    @property
    def baseline(self) -> str:
        return self.config["baseline"]

    def row(self, model: str, attack: str, seed: int | None = None) -> dict[str, Any]:
        """The result row of `model` under `attack` (the first seed unless `seed` is given)."""
        seed = self.config["seeds"][0] if seed is None else seed
        for r in self.rows:
            if r["label"] == model and r["attack"] == attack and r["seed"] == seed:
                return r
        raise KeyError(f"no row for model {model!r}, attack {attack!r}, seed {seed}")

    def metric(self, model: str, attack: str, name: str = "attack_acc@1") -> float:
        """`name` for `model` under `attack`, averaged over the audit's seeds."""
        return float(np.mean([self.row(model, attack, s)[name] for s in self.config["seeds"]]))

    @property
    def conclusive(self) -> dict[str, dict[str, Any]]:
        """Per attack, whether it cleared its floor on the baseline (`calor.conclusive`): the attacks whose
        numbers mean something. Inconclusive attacks are left out of the worst case."""
        return self.config.get("conclusive", {})

    @property
    def usable(self) -> bool:
        """Whether the audit measured anything: at least one attack cleared its floor on the baseline. An audit
        that is not usable says nothing about leakage (`calor audit` exits 3); it never means "safe"."""
        return any(v["conclusive"] for v in self.conclusive.values())

    @property
    def primary(self) -> dict[str, Any]:
        """The audit's primary family: every model against the baseline, under every attack, on acc@1 and
        open-set acc@1 (Holm inside it); other comparisons are exploratory."""
        models = [m for m in self.config["natural_acc"] if m != self.baseline]
        return {"pairs": [f"{m} vs {self.baseline}" for m in models], "attacks": [],
                "metrics": ["attack_acc@1", "attack_acc@1_open"]}

    def to_markdown(self) -> str:
        """The audit as a report: setup, judge, the worst case over attacks, results with 95 % intervals and
        floor/ceiling rows, paired comparisons with the baseline, gradient diagnostics, and how to read the columns."""
        from .report import READING, comparisons_table, conclusive_table, markdown_table, results_table, worst_case_table

        c = self.config
        lines = ["# calor audit", ""]
        lines.append(f"Models: {', '.join(f'`{m}` (test accuracy {acc:.4f})' for m, acc in c['natural_acc'].items())}; "
                     f"baseline `{self.baseline}`.")
        lines.append(f"Attacks: {', '.join(c['attacks'])}; {c['per_class']} reconstructions of each of classes {c['classes']}, "
                     f"seeds {c['seeds']}; the same GAN prior and latent initialisations for every model.")
        j = c["judge"]
        lines.append(f"Judge: {j['name']} ({j['source']}), private-test accuracy {j['natural_acc']:.4f}; {j['classes']}.")
        if c["held_out"]:
            lines.append(f"No test data was given: {HELD_OUT:.0%} of each private class was kept from the judge's training to "
                         "measure it, but the models saw those images, so whether the judge is stronger than them is unverified.")
        weak = [m for m, acc in c["natural_acc"].items() if not c["held_out"] and j["natural_acc"] <= acc]
        if weak:
            lines.append(f"**The judge is not stronger than {', '.join(weak)}: its verdicts on them are not evidence.**")
        lines += ["", "## Did each attack learn anything?", "", markdown_table(*conclusive_table(self.conclusive)), "",
                  f"An attack is conclusive when, on the baseline `{self.baseline}`, its seed-level interval of acc@1 lies above its "
                  "floor (the higher of `floor: prior` and `floor: public`) and its estimate clears the floor by the margin. An "
                  "inconclusive attack measured nothing — its low numbers are no evidence of low leakage — and is left out of the "
                  "worst case."]
        if not self.usable:
            lines += ["", "**No attack was conclusive: this audit says nothing about leakage. It is not a pass.**"]
        worst = worst_case_table(self.rows, baseline=self.baseline)
        if worst[1]:
            lines += ["", "## Worst case over the conclusive attacks", "", markdown_table(*worst), "",
                      "Per model and metric, the attack whose estimate leaks most, with its seed-level interval; the last column is "
                      f"the per-seed difference from `{self.baseline}` under its worst attack among the same attacks (paired t over seeds)."]
        lines += ["", "## Results", "", markdown_table(*results_table(self.rows, baseline=self.baseline, primary=self.primary)), ""]
        comp = comparisons_table(self.rows, baseline=self.baseline, primary=self.primary)
        if comp[1]:
            lines += [f"## Paired comparisons with `{self.baseline}`", "", markdown_table(*comp), "",
                      "primary: each model vs the baseline on acc@1 and open-set acc@1, Holm inside that family; exploratory: the "
                      "rest, unadjusted. Seed-level tests need at least two seeds; with one, comparisons are listed, not tested.", ""]
        diag = [(r["label"], r["attack"], r["seed"], r["diagnostics"]) for r in self.rows if r.get("diagnostics")]
        if diag:
            lines += ["## Gradient diagnostics along the attack's path", "",
                      markdown_table(["model", "attack", "seed", "saturated units (start → end)", "latent-gradient ratio to baseline (start → end)"],
                                     [[m, a, str(s), _ends(d.get("saturated_fraction")), _ends(d.get("grad_ratio"))] for m, a, s, d in diag]), ""]
        lines += ["## Reading the columns", "", READING.replace("`none`", f"`{self.baseline}`"), ""]
        lines.append(f"calor {c['versions'].get('calor', '?')}, torch {c['versions'].get('torch', '?')}, "
                     f"{c['versions'].get('cpu', '?')}, {c['versions'].get('threads', '?')} threads.")
        return "\n".join(lines) + "\n"

    def save(self, directory: str | Path) -> Path:
        """Write results.json (rows + config), report.md, each run's reconstructions (safetensors) and a
        reconstruction grid per run (each image framed with the judge's verdict) into `directory`."""
        from safetensors.torch import save_file

        from .report import reconstruction_grid

        out = ensure_directory(Path(directory))
        write_json_atomic(out / "results.json", {"config": self.config, "rows": self.rows})
        for (model, attack, seed), rec in self.reconstructions.items():
            stem = f"{_file_name(model)}-{_file_name(attack)}-s{seed}"
            tensors = {"images": rec.images.contiguous(), "labels": rec.labels.contiguous()}
            write_file_atomic(out / "reconstructions" / f"{stem}.safetensors", lambda tmp, t=tensors: save_file(t, str(tmp)))
            row = self.row(model, attack, seed) if attack != "calibration" else None
            ps = row["per_sample"] if row else None
            reconstruction_grid(rec.images, rec.labels, self.nearest[(model, attack, seed)], self.data, out / "grids" / f"{stem}.png",
                                hits=ps["hit"] if ps else None, confidence=ps["confidence"] if ps else None,
                                hits_open=ps["hit_open"] if ps else None)
        write_file_atomic(out / "report.md", lambda tmp: tmp.write_text(self.to_markdown()))
        return out


def _model_confidence(model: nn.Module, rec: Reconstructions, device: torch.device) -> float:
    """The audited model's mean true-class probability on its reconstructions: whether the search reached
    the class on the model itself (an inconclusive attack's first question)."""
    with torch.no_grad():
        p = predict(model, rec.images.to(device)).softmax(1)
    return float(p.gather(1, rec.labels.view(-1, 1).to(p.device)).mean())


def _judge_source(judge: Judge) -> str:
    """Where the judge came from, in words: trained here, given by the caller, or a calor artifact (by name;
    its full path is in `config["judge"]["path"]`)."""
    if judge.path in ("trained by calor", "given", ""):
        return judge.path or "given"
    return f"calor artifact {Path(judge.path).name}"


def _ends(values: list[float | None] | None) -> str:
    if not values or values[0] is None or values[-1] is None:
        return "-"
    return f"{values[0]:.3f} → {values[-1]:.3f}"


def _file_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _to_unit_range(x: torch.Tensor, input_range: tuple[float, float], what: str) -> torch.Tensor:
    """`x` from `input_range` to calor's [-1, 1], refusing data outside the declared range."""
    low, high = input_range
    lo, hi = float(x.min()), float(x.max())
    slack = 1e-3 * (high - low)
    if lo < low - slack or hi > high + slack:
        raise DataError(f"{what}: values span [{lo:.3g}, {hi:.3g}], outside input_range ({low:g}, {high:g}); pass the range "
                        f"your model takes, e.g. input_range=(0, 1)")
    return (x - low) * (2.0 / (high - low)) - 1.0


def _held_out_split(y: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, held out) with HELD_OUT of each class held out (at least one image)."""
    rng = np.random.default_rng(seed)
    train, held = [], []
    for c in torch.unique(y).tolist():
        idx = rng.permutation(np.flatnonzero(y.numpy() == c))
        if len(idx) < 2:
            raise DataError(f"private_data: class {c} has {len(idx)} image; give test_data or at least 2 images per class")
        n = max(1, int(round(len(idx) * HELD_OUT)))
        held.append(idx[:n])
        train.append(idx[n:])
    return torch.from_numpy(np.sort(np.concatenate(train))), torch.from_numpy(np.sort(np.concatenate(held)))


def _train_judge(spec: ClassifierSpec, x: torch.Tensor, y: torch.Tensor, public: tuple[torch.Tensor, torch.Tensor] | None,
                 num_classes: int, device: torch.device) -> tuple[nn.Module, str]:
    """A calor judge trained on the private images (and, when the public images are labelled, on the public
    classes as extra ones, so that a public-looking image can be called none of the private classes)."""
    classes = "private classes only"
    if public is not None:
        xp, yp = public
        public_ids = torch.unique(yp)
        remap = torch.full((int(public_ids.max()) + 1,), -1, dtype=torch.long)
        remap[public_ids] = torch.arange(len(public_ids))
        x, y = torch.cat([x, xp]), torch.cat([y, remap[yp] + num_classes])
        classes = f"private and {len(public_ids)} public classes (open set)"
    c, r = x.shape[1], x.shape[-1]
    model = build_classifier(spec.arch, num_classes=int(y.max()) + 1 if public is not None else num_classes, in_channels=c,
                             resolution=r, width=spec.width, feature_dim=spec.feature_dim)
    seed_everything(JUDGE_SEED)
    train_classifier(model, build_defense("none", {}), x, y, spec, device=device, seed=JUDGE_SEED, description="judge")
    return model.eval(), classes


def _closed_set_accuracy(model: nn.Module, num_private: int, x: torch.Tensor, y: torch.Tensor) -> float:
    return (predict(model, x)[:, :num_private].argmax(1) == y).float().mean().item()


def audit(models: nn.Module | Mapping[str, nn.Module], private_data: Any, public_data: Any,
          attacks: Sequence[str] = ("gmi",), *, test_data: Any = None,
          evaluator: nn.Module | Judge | Sequence[nn.Module | Judge] | None = None, judge: ClassifierSpec = DEFAULT_JUDGE,
          classes: Sequence[int] | None = None, per_class: int = AttackSpec.per_class, iterations: int = AttackSpec.iterations,
          settings: Mapping[str, Mapping[str, Any]] | None = None, prior: PriorSpec | GanPrior | None = None,
          attacker_model: ClassifierSpec = ClassifierSpec(), input_range: tuple[float, float] = (-1.0, 1.0),
          seeds: Sequence[int] = (0,), device: str | torch.device = "cpu", calibration: bool = True) -> AuditResult:
    """Attack each of `models` with each of `attacks` and measure what it leaks; returns an `AuditResult`.

    - `models`: one classifier, or {name: classifier} audited side by side (the first is the baseline the
      others are compared with, paired). Any `nn.Module` whose output is the class logits and whose logits
      come from an `nn.Linear` (its input is the feature space the metrics use).
    - `private_data`: the images the models were trained on — what the attacks try to recover — as (images,
      labels) tensors, a Dataset or a DataLoader. `test_data`: held-out private images (same forms), used to
      check that the judge is stronger than each model; without it, a share of `private_data` is held out
      from the judge's training and that check is reported as unverified.
    - `public_data`: the attacker's images (a tensor, or the forms above; labels, when present, train an
      open-set judge that can call a public-looking reconstruction none of the private classes).
    - `evaluator`: the judge(s): `nn.Module`s whose first logits are the private classes, or calor `Judge`s;
      by default calor trains `judge` (a ResNet) on the private data.
    - `classes` (default: all), `per_class`, `iterations` (every latent attack whose own `iterations` is
      unset), `settings` ({attack: {setting: value}}), `seeds` (each seed: new latent initialisations).
    - `prior`: the GAN prior's training budget (PriorSpec) or a trained `GanPrior`; `attacker_model`: the
      architecture and budget the attacker assumes for surrogate models.
    """
    dev = device if isinstance(device, torch.device) else resolve_device(str(device))
    named = dict(models) if isinstance(models, Mapping) else {"model": models}
    if not named or not all(isinstance(m, nn.Module) for m in named.values()):
        raise ConfigError("models: give an nn.Module or a non-empty {name: nn.Module} mapping")
    if not attacks:
        raise ConfigError("attacks: name at least one attack (see `calor list attacks`)")
    if not seeds:
        raise ConfigError("seeds: give at least one seed")
    low, high = input_range
    if not high > low:
        raise ConfigError(f"input_range={input_range}: the upper bound must exceed the lower one")

    x, y = as_tensors(private_data, "private_data")
    x = _to_unit_range(x, input_range, "private_data")
    xp, yp = as_images(public_data, "public_data")
    xp = _to_unit_range(xp, input_range, "public_data")
    if test_data is not None:
        xt, yt = as_tensors(test_data, "test_data")
        xt = _to_unit_range(xt, input_range, "test_data")
    for what, t in (("public_data", xp), *((("test_data", xt),) if test_data is not None else ())):
        if t.shape[1:] != x.shape[1:]:
            raise DataError(f"{what}: images of shape {tuple(t.shape[1:])}, but private_data's are {tuple(x.shape[1:])}")

    # the models: each seen through the Classifier interface, all with the same number of classes
    targets: dict[str, AuditedClassifier] = {}
    for name, m in named.items():
        m.to(dev).eval()
        with torch.no_grad():
            k = m(to_model_range(x[:2].to(dev), input_range)).shape[1]
        targets[name] = AuditedClassifier(m, k, input_range)
    ks = {name: t.num_classes for name, t in targets.items()}
    if len(set(ks.values())) > 1:
        raise ConfigError(f"models: they predict different numbers of classes {ks}; audit models of the same task together")
    num_classes = next(iter(ks.values()))
    if int(y.max()) >= num_classes or int(y.min()) < 0:
        raise DataError(f"private_data: labels range {int(y.min())}..{int(y.max())}, but the models predict {num_classes} classes")
    attacked = list(classes) if classes is not None else sorted(torch.unique(y).tolist())
    check_request(attacked, per_class, num_classes)

    held_out = test_data is None
    if held_out:
        train_idx, held_idx = _held_out_split(y, seed=JUDGE_SEED)
        judge_x, judge_y, xt, yt = x[train_idx], y[train_idx], x[held_idx], y[held_idx]
    else:
        judge_x, judge_y = x, y
    data = SplitData(x, y, xt, yt, xp, yp if yp is not None else torch.zeros(len(xp), dtype=torch.long),
                     [str(c) for c in range(num_classes)],
                     {"source": "calor.audit", "private": len(x), "test": len(xt), "public": len(xp), "held_out": held_out})

    judges = _judges(evaluator, judge, judge_x, judge_y, (xp, yp) if yp is not None else None, data, input_range, dev)
    natural_acc = {name: _closed_set_accuracy(t, num_classes, xt, yt) for name, t in targets.items()}

    gan = prior if isinstance(prior, GanPrior) else None
    prior_spec = prior if isinstance(prior, PriorSpec) else PriorSpec()
    if gan is None:
        t0 = time.perf_counter()
        gan, _ = train_prior(xp, prior_spec, device=dev, seed=seeds[0])
        log(f"audit: GAN prior ({prior_spec.kind}, {prior_spec.steps} steps) trained in {time.perf_counter() - t0:.1f}s")
    gan.generator.to(dev).eval()
    gan.critic.to(dev).eval()
    store = MemoryPriors(gan, xp, AttackerBudget(prior=prior_spec, target=attacker_model), dev)

    baseline = next(iter(targets))
    rows: list[ResultRow] = []
    recs: dict[tuple[str, str, int], Reconstructions] = {}
    nearest: dict[tuple[str, str, int], list[int]] = {}
    settings = {k: dict(v) for k, v in (settings or {}).items()}
    unknown = sorted(set(settings) - set(attacks))
    if unknown:
        raise ConfigError(f"settings for {unknown}: not among the audited attacks {list(attacks)}")
    for attack in attacks:
        build_attack(attack, settings.get(attack), iterations=iterations)  # refuse a bad name or setting before any work
    for seed in seeds:
        for attack in attacks:
            for name, target in targets.items():
                atk = build_attack(attack, settings.get(attack), iterations=iterations)
                spent: dict[str, float] = {}
                rec = reconstruct(atk, target, num_classes, tuple(x.shape[1:]), store.for_attacker(seed=seed, target=name, spent=spent), attacked,
                                  per_class, seed, no_checkpoints())
                t0 = time.perf_counter()
                m = evaluate_reconstructions(rec, data, judges)
                believed = _model_confidence(target, rec, dev)
                diagnostics = gradient_path(target, rec, targets[baseline] if name != baseline else None)
                check = judge_check(judges, natural_acc[name])
                if held_out:
                    check["stronger_than_target"] = None  # the models saw the held-out images: nothing to compare
                rows.append({
                    "schema": ROW_SCHEMA, "scenario": "audit", "defense": name, "label": name, "variant": {}, "attack": attack, "seed": seed,
                    "tuning_seed": False, "natural_acc": natural_acc[name], **metric_fields(m), "target_confidence": believed,
                    "judge": check,
                    "diagnostics": diagnostics, "attack_s": rec.seconds, "prior_s": spent.get("seconds", 0.0),
                    "metrics_s": time.perf_counter() - t0, "threat_model": atk.threat_model.value, "queries": rec.queries,
                    "prior_queries": int(spent.get("queries", 0)), "classes": attacked, "per_class": per_class,
                    "attack_config": atk.config_dict(), "extras": rec.extras, "versions": versions()})
                recs[(name, attack, seed)] = rec
                nearest[(name, attack, seed)] = m["nearest_private_index"]
                log(f"audit {attack} on {name} (seed {seed}): acc@1 {m['attack_acc@1']:.3f}, knn {m['knn_dist']:.1f}, "
                    f"{rec.queries} queries, {rec.seconds:.1f}s")
        if calibration:
            for set_name in CALIBRATION_SETS:
                rec = calibration_images(set_name, data, attacked, per_class, seed, gan.generator)
                m = evaluate_reconstructions(rec, data, judges)
                rows.append({"scenario": "audit", **calibration_fields(set_name, seed, m, judges, attacked, per_class)})
                recs[(set_name, "calibration", seed)] = rec
                nearest[(set_name, "calibration", seed)] = m["nearest_private_index"]

    # an attack that recovers no more than its floor from the baseline measured nothing (calor.conclusive)
    verdicts = attack_conclusiveness(rows, baseline, num_classes=num_classes, hints={"input_range": (low, high)})
    mark_conclusive(rows, verdicts)
    primary = judges[0]
    config = {
        "models": list(targets), "baseline": baseline, "attacks": list(attacks), "settings": settings, "classes": attacked,
        "per_class": per_class, "iterations": iterations, "seeds": list(seeds), "input_range": [low, high],
        "natural_acc": natural_acc, "held_out": held_out, "num_classes": num_classes,
        "data": {"private": len(x), "test": len(xt), "public": len(xp), "image_shape": list(x.shape[1:]),
                 "public_labels": yp is not None},
        "judge": {"name": primary.name, "natural_acc": primary.natural_acc, "source": _judge_source(primary),
                  "classes": ("open set: trained on the private and the public classes" if primary.open_set
                              else "private classes only"),
                  "path": primary.path, "all": {j.name: j.natural_acc for j in judges}},
        "prior": {"given": isinstance(prior, GanPrior), "spec": None if isinstance(prior, GanPrior) else vars(prior_spec).copy()},
        "attacker_model": vars(attacker_model).copy(), "device": str(dev), "versions": versions(),
        "conclusive": {a: v.to_dict() for a, v in verdicts.items()},
    }
    return AuditResult(rows, recs, nearest, config, data)


def _judges(evaluator: Any, spec: ClassifierSpec, x: torch.Tensor, y: torch.Tensor, public: tuple[torch.Tensor, torch.Tensor] | None,
            data: SplitData, input_range: tuple[float, float], device: torch.device) -> list[Judge]:
    """The audit's judges, primary first, each with its closed-set accuracy on the held-out private images."""
    k = data.num_classes
    if evaluator is None:
        model, classes = _train_judge(spec, x, y, public, k, device)
        acc = _closed_set_accuracy(model, k, data.x_test, data.y_test)
        log(f"audit: judge {spec.arch}-w{spec.width} ({classes}) private-test accuracy {acc:.4f}")
        return [Judge(f"{spec.arch}-w{spec.width}", model, k, acc, "trained by calor")]
    given = list(evaluator) if isinstance(evaluator, (list, tuple)) else [evaluator]
    judges = []
    for i, ev in enumerate(given):
        if isinstance(ev, Judge):
            judges.append(ev)
            continue
        if not isinstance(ev, nn.Module):
            raise ConfigError(f"evaluator[{i}]: expected an nn.Module or a calor Judge, got {type(ev).__name__}")
        ev.to(device).eval()
        with torch.no_grad():
            outputs = ev(to_model_range(data.x_test[:2].to(device), input_range)).shape[1]
        if outputs < k:
            raise ConfigError(f"evaluator[{i}]: {outputs} outputs, fewer than the models' {k} classes")
        wrapped = AuditedClassifier(ev, outputs, input_range)
        acc = _closed_set_accuracy(wrapped, k, data.x_test, data.y_test)
        judges.append(Judge(f"{type(ev).__name__}-{i}", wrapped, k, acc, "given"))
    return judges
