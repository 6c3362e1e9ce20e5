"""Adaptive attacks against CALoR (GMI variants): p*-targeting, logit loss, BPDA, surrogate transfer."""

import math

import pytest
import torch
import torch.nn.functional as F

from calor import ConfigError, build_attack, build_classifier, make_oracle
from calor.attacks import BlackBoxOracle, GanPrior, ThreatModel, WhiteBoxOracle
from calor.attacks import adaptive_surrogate
from calor.attacks.adaptive_bpda import StraightThroughActivation, straight_through_copy
from calor.attacks.adaptive_pstar import estimate_p_target, pstar_loss
from calor.attacks.losses import max_margin_loss
from calor.models import Critic, Generator
from calor.models.heads import LowRankHead
from calor.prior_store import MemoryPriors


def tiny_target(low_rank: bool = False):
    torch.manual_seed(0)
    model = build_classifier("cnn", num_classes=3, in_channels=1, resolution=16, width=4, feature_dim=8)
    if low_rank:
        model.head = LowRankHead(8, 2, 3)
    return model.eval()


def tiny_prior() -> GanPrior:
    torch.manual_seed(1)
    return GanPrior(Generator(8, 16, 1, 4).eval(), Critic(16, 1, 4).eval(), "dcgan")


# ---------- adaptive-pstar ----------

@pytest.mark.parametrize("form", ["squared", "ca"])
def test_pstar_loss_is_minimal_at_the_target_confidence(form: str) -> None:
    p_t = 0.7
    # two classes: p_0 = sigmoid(l) sweeps (0, 1) as the logit gap l does
    gaps = torch.linspace(-6, 6, 2401)
    logits = torch.stack([gaps, torch.zeros_like(gaps)], 1)
    losses = torch.stack([pstar_loss(logits[i:i + 1], torch.tensor([0]), p_t, form) for i in range(len(gaps))])
    p_best = torch.sigmoid(gaps[losses.argmin()]).item()
    assert p_best == pytest.approx(p_t, abs=0.01)


def test_pstar_estimator_is_the_median_of_per_class_top_k_medians() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8], [0.4, 0.6], [0.5, 0.5]])
    p, per_class = estimate_p_target(probs, 3)
    assert per_class.tolist() == pytest.approx([0.7, 0.6])  # medians of {0.9,0.7,0.5} and {0.8,0.6,0.5}
    assert p == pytest.approx(0.65)
    with pytest.raises(ConfigError):
        estimate_p_target(probs, 6)


def test_pstar_pulls_true_confidence_towards_p_target(tiny_scenario, tmp_path) -> None:
    from calor.prior_store import Priors
    from calor.workspace import Workspace

    oracle = make_oracle(tiny_target(), ThreatModel.WHITE_BOX, 3, (1, 16, 16))
    store = Priors(tiny_scenario, 0, Workspace(cache=tmp_path / "cache"), target_hash="t1")
    fixed = build_attack("adaptive-pstar", {"p_target": 0.9, "iterations": 1}).prepare(oracle, store)
    assert fixed.p_target == 0.9 and "pstar-estimate" not in store.queries  # given: no queries spent
    atk = build_attack("adaptive-pstar", {"iterations": 1})
    prior = atk.prepare(oracle, store)
    n_public = len(store.public_images())
    assert store.queries["pstar-estimate"] == n_public and 0 < prior.p_target < 1
    again = Priors(tiny_scenario, 0, store.ws, target_hash="t1")
    assert atk.prepare(oracle, again).p_target == prior.p_target and oracle.queries == n_public  # cached: no new queries
    short = build_attack("adaptive-pstar", {"iterations": 1}).run(oracle, fixed, [0, 1], 2, seed=0)
    long = build_attack("adaptive-pstar", {"iterations": 30}).run(oracle, fixed, [0, 1], 2, seed=0)
    assert long.extras["final_identity_loss"] < short.extras["final_identity_loss"]
    assert long.queries == 30 * 4 + 4 and long.extras["p_target"] == 0.9


# ---------- adaptive-logit ----------

def test_logit_attack_uses_a_loss_that_never_looks_at_softmax() -> None:
    atk = build_attack("adaptive-logit")
    logits = torch.tensor([[50.0, 0.0, -3.0], [1.0, 2.0, 0.0]], requires_grad=True)
    y = torch.tensor([0, 0])
    assert torch.equal(atk.objective.loss(logits, y).mean(), max_margin_loss(logits, y))  # per sample, same mean
    shifted = logits + torch.tensor([[100.0], [-7.0]])  # softmax-invariant but so is the margin: same loss
    assert torch.allclose(atk.objective.loss(shifted, y), atk.objective.loss(logits, y))
    (grad,) = torch.autograd.grad(atk.objective.loss(logits, y).sum(), logits)
    assert grad[0].abs().sum() > 0.5  # still pulling where softmax cross-entropy has saturated
    capped = build_attack("adaptive-logit", {"kappa": 5.0})
    assert capped.objective.loss(logits, y).tolist() == [-5.0, 1.0]  # margins 50 -> 5 and -1
    logit = build_attack("adaptive-logit", {"kind": "logit"})
    assert logit.objective.loss(logits, y).tolist() == [-50.0, -1.0]


def test_logit_attack_lowers_its_loss() -> None:
    oracle = make_oracle(tiny_target(low_rank=True), ThreatModel.WHITE_BOX, 3, (1, 16, 16))
    short = build_attack("adaptive-logit", {"iterations": 1}).run(oracle, tiny_prior(), [0, 2], 2, seed=0)
    long = build_attack("adaptive-logit", {"iterations": 30}).run(oracle, tiny_prior(), [0, 2], 2, seed=0)
    assert long.extras["final_identity_loss"] < short.extras["final_identity_loss"]


# ---------- adaptive-bpda ----------

def saturated_low_rank_target():
    model = tiny_target(low_rank=True)
    with torch.no_grad():
        model.head.down.weight.mul_(1e4)  # drive the tanh bottleneck deep into saturation
    return model


def test_bpda_gives_gradients_where_tanh_saturates_and_leaves_the_target_alone() -> None:
    target = saturated_low_rank_target()
    clone, swapped = straight_through_copy(target)
    assert swapped == 1 and isinstance(clone.head.act, StraightThroughActivation)
    assert isinstance(target.head.act, torch.nn.Tanh)  # the original is untouched
    x = torch.randn(4, 1, 16, 16)
    assert target.head.bottleneck(target.features(x)).abs().min() > 0.9999  # saturated
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    plain, bpda = target(xs[0]), clone(xs[1])
    assert torch.equal(plain, bpda)  # forward unchanged
    F.cross_entropy(plain, torch.tensor([0, 1, 2, 0])).backward()
    F.cross_entropy(bpda, torch.tensor([0, 1, 2, 0])).backward()
    assert xs[0].grad.abs().max() < 1e-6 < xs[1].grad.abs().max()


def gan_store():
    """The attacker's store a run gets, in memory: the tiny GAN prior and no public images."""
    return MemoryPriors(tiny_prior(), torch.empty(0, 1, 16, 16)).for_attacker()


def test_bpda_attack_counts_its_forwards_as_target_queries() -> None:
    oracle = make_oracle(saturated_low_rank_target(), ThreatModel.WHITE_BOX, 3, (1, 16, 16))
    atk = build_attack("adaptive-bpda", {"iterations": 5})

    prior = atk.prepare(oracle, gan_store())
    rec = atk.run(oracle, prior, [1], 3, seed=0)
    assert rec.queries == 5 * 3 and rec.extras["bpda_swapped"] == 1 and rec.extras["base"] == "gmi"
    assert prior.oracle.module is not oracle.module


def test_bpda_without_saturating_activations_is_exactly_its_base() -> None:
    oracle = make_oracle(tiny_target(low_rank=False), ThreatModel.WHITE_BOX, 3, (1, 16, 16))
    for base in ("gmi", "adaptive-logit"):
        plain = build_attack(base, {"iterations": 4})
        bpda = build_attack("adaptive-bpda", {"iterations": 4, "base": base})
        ref = plain.run(oracle, plain.prepare(oracle, gan_store()), [0, 2], 2, seed=1)
        prior = bpda.prepare(oracle, gan_store())
        rec = bpda.run(oracle, prior, [0, 2], 2, seed=1)
        assert prior.swapped == 0 and rec.extras["base"] == base
        assert torch.equal(rec.images, ref.images) and rec.queries == ref.queries == 4 * 4


def test_bpda_runs_other_white_box_bases_through_the_straight_through_copy() -> None:
    oracle = make_oracle(saturated_low_rank_target(), ThreatModel.WHITE_BOX, 3, (1, 16, 16))
    atk = build_attack("adaptive-bpda", {"iterations": 3, "base": "adaptive-logit"})
    assert atk.base_attack().config.iterations == 3
    prior = atk.prepare(oracle, gan_store())
    before = oracle.queries
    rec = atk.run(oracle, prior, [1], 2, seed=0)
    assert rec.queries == oracle.queries - before == 3 * 2  # counted on the real target's oracle
    with pytest.raises(ConfigError, match="white-box"):
        build_attack("adaptive-bpda", {"base": "brepmi"})
    with pytest.raises(ConfigError, match="white-box"):
        build_attack("adaptive-bpda", {"base": "adaptive-bpda"})
    with pytest.raises(ConfigError, match="unknown key.*update"):
        build_attack("adaptive-bpda", {"base": "kedmi", "update": "adam"})  # a setting KED-MI does not have


# ---------- adaptive-surrogate ----------

def test_surrogate_attack_is_black_box_and_caches_its_distillation(tiny_scenario, tmp_path, monkeypatch) -> None:
    from calor.prior_store import Priors
    from calor.workspace import Workspace

    oracle = make_oracle(tiny_target(low_rank=True), ThreatModel.BLACK_BOX, 3, (1, 16, 16))
    assert isinstance(oracle, BlackBoxOracle) and not isinstance(oracle, WhiteBoxOracle)  # no gradients to use
    atk = build_attack("adaptive-surrogate", {"iterations": 3, "gan_samples": 8, "distill_epochs": 2})
    calls = []
    real = adaptive_surrogate.distill
    monkeypatch.setattr(adaptive_surrogate, "distill", lambda *a, **k: calls.append(1) or real(*a, **k))
    store = Priors(tiny_scenario, 0, Workspace(cache=tmp_path / "cache"), target_hash="t1")
    prior = atk.prepare(oracle, store)
    n_public = len(store.public_images())
    assert calls == [1] and store.queries["adaptive-surrogate"] == n_public + 8
    assert not isinstance(prior.surrogate.head, LowRankHead)  # plain linear head
    again = Priors(tiny_scenario, 0, store.ws, target_hash="t1")
    atk.prepare(oracle, again)
    assert calls == [1] and again.queries["adaptive-surrogate"] == n_public + 8  # cached
    before = oracle.queries
    rec = atk.run(oracle, prior, [0, 2], 2, seed=0)
    assert rec.queries == oracle.queries - before == 4  # only the final transfer check touches the target
    assert 0.0 <= rec.extras["target_agreement"] <= 1.0


def test_distillation_raises_agreement_with_the_teacher() -> None:
    from calor.attacks.surrogates import distill, soft_labels

    teacher = make_oracle(tiny_target(low_rank=True), ThreatModel.BLACK_BOX, 3, (1, 16, 16))
    torch.manual_seed(3)
    images = torch.rand(64, 1, 16, 16) * 2 - 1
    probs = soft_labels(teacher, images)
    student = build_classifier("cnn", num_classes=3, in_channels=1, resolution=16, width=4, feature_dim=8)
    log = distill(student, images, probs, epochs=8, batch_size=16, lr=1e-2, gen=torch.Generator().manual_seed(0),
                  device=torch.device("cpu"))
    assert log[-1]["kd_loss"] < log[0]["kd_loss"]


# ---------- config validation ----------

@pytest.mark.parametrize("name,bad", [
    ("adaptive-pstar", {"p_target": 1.0}), ("adaptive-pstar", {"form": "cubic"}), ("adaptive-pstar", {"estimate_top_k": 0}),
    ("adaptive-pstar", {"lam": -1.0}), ("adaptive-logit", {"kind": "softmax"}), ("adaptive-logit", {"kappa": 0.0}),
    ("adaptive-logit", {"kind": "logit", "kappa": 1.0}), ("adaptive-bpda", {"lr": 0.0}),
    ("adaptive-surrogate", {"surrogate_arch": "vgg99"}), ("adaptive-surrogate", {"distill_batch": 1}),
    ("adaptive-surrogate", {"gan_samples": -1}),
])
def test_adaptive_config_validation(name: str, bad: dict) -> None:
    with pytest.raises(ConfigError):
        build_attack(name, bad)


def test_pstar_ca_form_matches_calor_p_star() -> None:
    gamma = 4.0
    p_star = math.exp(-1 / gamma)
    logits = torch.tensor([[math.log(p_star / (1 - p_star)), 0.0]], requires_grad=True)  # p_0 = p*
    (grad,) = torch.autograd.grad(pstar_loss(logits, torch.tensor([0]), p_star, "ca").sum(), logits)
    assert grad.abs().max() < 1e-6  # stationary exactly where CALoR puts real data
