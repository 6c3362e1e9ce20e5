"""BREP-MI, Mirror-b and LOKT: they reach the target only through the access their threat model grants
(label-only attacks call nothing but `label`, the black-box attack gets no gradients), count their
queries exactly, do their core step, cache their priors, and validate their settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from calor import ConfigError, ThreatModelError, build_attack, make_oracle
from calor.attacks import BlackBoxOracle, GanPrior, ThreatModel, WhiteBoxOracle
from calor.attacks.lokt import balanced_indices
from calor.attacks.surrogates import distillation_loss
from calor.models import Critic, Generator


class ProjectionTarget(nn.Module):
    """A 3-class toy target with classes of equal size under the generator: nearest of three centres (the
    1/6, 1/2, 5/6 quantiles of s = w.x over G's samples) on a random projection s of the image."""

    def __init__(self, generator: nn.Module, sharpness: float = 10.0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.w = nn.Parameter(torch.randn(256, generator=g))
        with torch.no_grad():
            s = generator(torch.randn(2000, generator.z_dim, generator=g)).flatten(1) @ self.w
        self.register_buffer("centres", torch.quantile(s, torch.tensor([1 / 6, 0.5, 5 / 6])))
        self.register_buffer("spread", s.std())
        self.sharpness = sharpness

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1) @ self.w
        return -((s.unsqueeze(1) - self.centres) / self.spread).pow(2) * self.sharpness


class LabelsOnly(WhiteBoxOracle):
    """Grants white-box access by type, but fails the test if anything other than `label` is used."""

    @property
    def module(self) -> nn.Module:
        raise AssertionError("a label-only attack touched the target module")

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("a label-only attack asked for logits")

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("a label-only attack asked for confidences")


class NoGradientSpy(BlackBoxOracle):
    """A black-box oracle that records whether autograd was on, or the query carried a graph, at each call."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.grad_seen: list[bool] = []

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        self.grad_seen.append(torch.is_grad_enabled() or x.requires_grad)
        return super().probs(x)


@pytest.fixture
def prior() -> GanPrior:
    torch.manual_seed(0)
    return GanPrior(Generator(8, 16, 1, 4).eval(), Critic(16, 1, 4).eval(), "dcgan")


def frozen(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# ---------------------------------------------------------------- BREP-MI


def test_brepmi_uses_only_labels_counts_queries_and_stays_in_class(prior: GanPrior) -> None:
    target = frozen(ProjectionTarget(prior.generator))
    oracle = LabelsOnly(target, 3, (1, 16, 16))
    atk = build_attack("brepmi", {"iterations": 12, "points": 8})
    rec = atk.run(oracle, prior, [0, 1, 2], 2, seed=0)
    ex = rec.extras
    assert ex["failed_classes"] == [] and ex["found_initial"] == 6
    # init search + (N sphere points + 1 move check) per run and step
    assert rec.queries == ex["init_queries"] + 6 * 12 * (8 + 1) > 0
    assert rec.images.shape == (6, 1, 16, 16) and rec.labels.tolist() == [0, 0, 1, 1, 2, 2]
    # every accepted move stays inside the class, so every reconstruction is labelled as its class
    assert torch.equal(target(rec.images).argmax(1), rec.labels)
    assert rec.latents.abs().max() <= 1.5 and ex["radius_growths_mean"] > 0


def test_brepmi_repulsion_moves_away_from_the_boundary(prior: GanPrior) -> None:
    """On a class whose region is {s < c}, repulsion must push s (the projection) further inside."""
    target = frozen(ProjectionTarget(prior.generator))
    oracle = make_oracle(target, ThreatModel.LABEL_ONLY, 3, (1, 16, 16))
    short = build_attack("brepmi", {"iterations": 1, "points": 16}).run(oracle, prior, [0], 4, seed=3)
    long = build_attack("brepmi", {"iterations": 25, "points": 16}).run(oracle, prior, [0], 4, seed=3)
    s = lambda images: (images.flatten(1) @ target.w).mean()  # noqa: E731
    assert s(long.images) < s(short.images)  # class 0 = smallest projections: moved deeper into it


def test_brepmi_reports_a_class_it_cannot_find(prior: GanPrior) -> None:
    class NeverTwo(ProjectionTarget):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) - torch.tensor([0.0, 0.0, 1e9])  # class 2 is never predicted

    oracle = make_oracle(NeverTwo(prior.generator), ThreatModel.LABEL_ONLY, 3, (1, 16, 16))
    rec = build_attack("brepmi", {"iterations": 2, "points": 4, "init_batch": 16, "init_batches": 3}).run(oracle, prior, [0, 2], 1, seed=0)
    assert rec.extras["failed_classes"] == [2]
    assert rec.extras["init_queries"] == 3 * 16  # searched the whole budget for class 2
    assert rec.images.shape == (2, 1, 16, 16)  # best effort (a random latent) is still returned and flagged


# ---------------------------------------------------------------- Mirror-b


def test_mirror_b_gets_no_gradients_and_improves_confidence(prior: GanPrior) -> None:
    target = frozen(ProjectionTarget(prior.generator, sharpness=0.5))
    oracle = NoGradientSpy(target, 3, (1, 16, 16))
    settings = {"population": 8, "init_pool": 8, "mutation_scale": 0.3}
    short = build_attack("mirror-b", {**settings, "generations": 1}).run(oracle, prior, [0, 2], 2, seed=0)
    long = build_attack("mirror-b", {**settings, "generations": 15}).run(oracle, prior, [0, 2], 2, seed=0)
    assert oracle.grad_seen and not any(oracle.grad_seen)
    assert not hasattr(oracle, "logits") and not hasattr(oracle, "module")
    assert long.queries == 4 * (8 + 15 * 7)  # runs x (pool + generations x (population - 1))
    # elitism: same seed, same first generation; the longer search can only do better, and does
    gain = torch.tensor(long.extras["final_confidence"]) - torch.tensor(short.extras["final_confidence"])
    assert (gain >= 0).all() and gain.sum() > 0
    assert long.extras["final_confidence_mean"] > long.extras["initial_confidence_mean"]
    assert long.latents.abs().max() <= 1.0 and long.images.shape == (4, 1, 16, 16)


def test_mirror_b_early_stop_saves_queries(prior: GanPrior) -> None:
    target = frozen(ProjectionTarget(prior.generator))
    oracle = make_oracle(target, ThreatModel.BLACK_BOX, 3, (1, 16, 16))
    rec = build_attack("mirror-b", {"population": 8, "init_pool": 16, "generations": 10, "min_score": 0.5}).run(oracle, prior, [0], 2, seed=0)
    assert rec.extras["generations_run_mean"] < 10 and rec.queries < 2 * (16 + 10 * 7)


def test_mirror_b_refuses_a_label_only_oracle(prior: GanPrior) -> None:
    oracle = make_oracle(ProjectionTarget(prior.generator), ThreatModel.LABEL_ONLY, 3, (1, 16, 16))
    with pytest.raises(ThreatModelError, match="black-box"):
        build_attack("mirror-b").run(oracle, prior, [0], 1, seed=0)


# ---------------------------------------------------------------- LOKT


def test_one_hot_distillation_is_cross_entropy() -> None:
    logits, y = torch.randn(7, 3), torch.tensor([0, 1, 2, 2, 1, 0, 1])
    assert torch.allclose(distillation_loss(logits, F.one_hot(y, 3).float()), F.cross_entropy(logits, y), atol=1e-6)


def test_balanced_indices_resample_every_present_class() -> None:
    labels = torch.tensor([0] * 10 + [2] * 2)
    idx = balanced_indices(labels, 3, 4, torch.Generator().manual_seed(0))
    assert torch.bincount(labels[idx], minlength=3).tolist() == [4, 0, 4]


def test_lokt_label_only_surrogates_are_cached_and_attacked(tiny_scenario, tmp_path: Path) -> None:
    from calor.prior_store import Priors
    from calor.workspace import Workspace
    from calor.attacks.lokt import LOKTPrior

    ws = Workspace(cache=tmp_path / "cache")
    settings = {"samples_per_class": 8, "archs": ["cnn", "resnet"], "epochs": 1, "batch_size": 8, "iterations": 3}
    gan = Priors(tiny_scenario, 0, ws).gan()
    target = frozen(ProjectionTarget(gan.generator))
    oracle = LabelsOnly(target, 3, (1, 16, 16))
    atk = build_attack("lokt", settings)
    first = atk.prepare(oracle, Priors(tiny_scenario, 0, ws, target_hash="t1"))
    assert isinstance(first, LOKTPrior) and oracle.queries == 8 * 3 == first.meta["queries"]
    assert sum(first.meta["label_counts"]) == 24
    # a second prepare (fresh store, same cache) loads the surrogates: no label queries, same weights
    store = Priors(tiny_scenario, 0, ws, target_hash="t1")
    second = atk.prepare(oracle, store)
    assert oracle.queries == 24 and store.queries["lokt-surrogates"] == 24
    for a, b in zip(first.surrogates.state_dict().values(), second.surrogates.state_dict().values()):
        assert torch.equal(a, b)
    # another target: its own surrogates
    atk.prepare(oracle, Priors(tiny_scenario, 0, ws, target_hash="t2"))
    assert oracle.queries == 48
    rec = atk.run(oracle, second, [0, 2], 2, seed=0)
    assert rec.queries == 4  # the target only labels the 4 reconstructions (agreement report)
    assert rec.extras["surrogate_queries"] == 3 * 4 and 0 <= rec.extras["target_agreement"] <= 1
    assert rec.images.shape == (4, 1, 16, 16) and rec.labels.tolist() == [0, 0, 2, 2]


# ---------------------------------------------------------------- contracts and settings


def test_threat_models_are_declared() -> None:
    from calor.attacks import ATTACKS

    assert ATTACKS.get("brepmi").threat_model is ThreatModel.LABEL_ONLY
    assert ATTACKS.get("lokt").threat_model is ThreatModel.LABEL_ONLY
    assert ATTACKS.get("mirror-b").threat_model is ThreatModel.BLACK_BOX


@pytest.mark.parametrize("name, bad", [
    ("brepmi", {"points": 0}), ("brepmi", {"expansion": 1.0}), ("brepmi", {"grow_fraction": 1.0}), ("brepmi", {"radius": -1}),
    ("mirror-b", {"population": 1}), ("mirror-b", {"init_pool": 5, "population": 10}), ("mirror-b", {"mutation_prob": 2}),
    ("mirror-b", {"min_score": 0}), ("lokt", {"archs": ["nope"]}), ("lokt", {"archs": []}), ("lokt", {"batch_size": 1}),
])
def test_invalid_settings_are_refused(name: str, bad: dict) -> None:
    with pytest.raises(ConfigError):
        build_attack(name, bad)


def test_lokt_augmentation_is_seeded_and_keeps_the_background() -> None:
    from calor.attacks.lokt import augment_copy

    x = torch.full((6, 1, 16, 16), -1.0)
    x[:, :, 4:12, 6:10] = 1.0
    a, b = augment_copy(x, torch.Generator().manual_seed(0)), augment_copy(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape and not torch.equal(a, x)
    assert a.min() >= -1 and a.max() <= 1 and a[:, :, 0, 0].eq(-1).all()  # corners stay background
