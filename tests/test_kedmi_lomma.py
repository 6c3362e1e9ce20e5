"""KED-MI and LOMMA (lomma-gmi, lomma-kedmi): core steps on tiny models, prior caching, config checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from calor import ConfigError, build_attack, build_classifier, make_oracle
from calor.attacks import GanPrior, ThreatModel
from calor.attacks.kedmi import KedmiGanSettings, KedmiPrior, KPlusOneDiscriminator, realness_energy, train_kedmi_gan
from calor.attacks.lomma import LommaPrior
from calor.attacks.surrogates import distill, logits_and_features, soft_labels
from calor.models import Critic, Generator


def tiny_target(k: int = 3):
    torch.manual_seed(0)
    return build_classifier("cnn", num_classes=k, in_channels=1, resolution=16, width=4, feature_dim=8).eval()


def tiny_kedmi_prior(k: int = 3) -> KedmiPrior:
    torch.manual_seed(1)
    return KedmiPrior(Generator(8, 16, 1, 4).eval(), KPlusOneDiscriminator(k, 16, 1, 4, 4, 3).eval())


# --- KED-MI -------------------------------------------------------------------------------------

def test_kplusone_discriminator_energy_is_minus_log_p_real() -> None:
    d = tiny_kedmi_prior().discriminator
    x = torch.randn(5, 1, 16, 16)
    feat, logits = d(x)
    assert feat.shape == (5, d.feature_dim) and logits.shape == (5, 3)
    # p(real) = sum_k e^{l_k} / (1 + sum_k e^{l_k}): the implicit fake logit is 0
    p_real = torch.logsumexp(logits, 1).sigmoid()
    assert torch.allclose(realness_energy(logits), -p_real.log(), atol=1e-5)
    assert torch.allclose(tiny_kedmi_prior().energy(x), realness_energy(logits), atol=1e-6)


def test_kedmi_gan_discriminator_learns_the_targets_soft_labels() -> None:
    torch.manual_seed(0)
    x = torch.rand(64, 1, 16, 16) * 2 - 1
    probs = F.one_hot(torch.arange(64) % 3, 3).float() * 0.9 + 0.1 / 3  # soft labels, as an oracle gives
    s = KedmiGanSettings(num_classes=3, steps=15, d_steps=1, batch_size=16, lr=5e-3, width=4, z_dim=8,
                         entropy_weight=1e-4, mbd_features=4, mbd_kernel=3)
    G, D, log = train_kedmi_gan(x, probs, s, device=torch.device("cpu"), gen=torch.Generator().manual_seed(0))
    assert not G.training and not D.training
    assert log[0]["step"] == 0 and log[-1]["step"] == 14
    with torch.no_grad():
        _, out = D(x)
    assert F.cross_entropy(out, probs.argmax(1)).item() < log[0]["loss_label"]  # D fitted the target's labels


class LinearGenerator(torch.nn.Module):
    """A one-layer generator whose images depend strongly on z (an untrained DCGAN's barely do)."""

    z_dim = 8

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(8, 256)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(z)).view(len(z), 1, 16, 16)


def sensitive_target(generator: torch.nn.Module) -> torch.nn.Module:
    """An untrained target answers almost the same to everything: calibrate its batch norms on the
    generator's images and sharpen its head so that its logits depend on them."""
    target = tiny_target()
    for m in target.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average over the calibration batch
    target.train()
    with torch.no_grad():
        target(generator(torch.randn(256, generator.z_dim) * 1.6))
        target.head.weight.mul_(5)
    return target.eval()


def test_kedmi_lowers_identity_loss_and_samples_each_distribution() -> None:
    torch.manual_seed(1)
    prior = KedmiPrior(LinearGenerator().eval(), KPlusOneDiscriminator(3, 16, 1, 4, 4, 3).eval())
    target = sensitive_target(prior.generator)
    oracle = make_oracle(target, ThreatModel.WHITE_BOX, 3, (1, 16, 16))

    def expected_ce(rec) -> float:  # identity loss over many samples of the learned distributions
        with torch.no_grad():
            return F.cross_entropy(target(rec.images), rec.labels).item()

    settings = {"lr": 0.1, "samples_per_step": 2, "init_log_var": -2.0}  # narrow start: a few steps move the mean far
    before = build_attack("kedmi", {**settings, "iterations": 1}).run(oracle, prior, [0, 2], 32, seed=0)
    rec = build_attack("kedmi", {**settings, "iterations": 30}).run(oracle, prior, [0, 2], 32, seed=0)
    assert rec.queries == 30 * 2 * 2  # iterations x classes x samples per step
    assert expected_ce(rec) < 0.7 * expected_ce(before)
    assert rec.images.shape == (64, 1, 16, 16) and rec.labels.tolist() == [0] * 32 + [2] * 32
    assert len(rec.extras["latent_std_by_class"]) == 2
    assert not torch.allclose(rec.latents[0], rec.latents[1])  # distinct samples of each distribution
    again = build_attack("kedmi", {**settings, "iterations": 30}).run(oracle, prior, [0, 2], 32, seed=0)
    assert torch.equal(again.images, rec.images)  # seeded by the generator it is given


def test_kedmi_clamp_bounds_latents() -> None:
    oracle = make_oracle(tiny_target(), ThreatModel.WHITE_BOX, 3, (1, 16, 16))
    rec = build_attack("kedmi", {"iterations": 3, "clamp": 0.5}).run(oracle, tiny_kedmi_prior(), [1], 4, seed=0)
    assert rec.latents.abs().max() <= 0.5


# --- shared helpers -------------------------------------------------------------------------------

def test_logits_and_features_read_the_head_input_through_a_counted_query() -> None:
    target = tiny_target()
    oracle = make_oracle(target, ThreatModel.WHITE_BOX, 3, (1, 16, 16))
    x = torch.randn(4, 1, 16, 16, requires_grad=True)
    logits, feats = logits_and_features(oracle, x)
    assert oracle.queries == 4
    assert torch.allclose(feats, target.features(x)) and torch.allclose(logits, target(x))
    feats.sum().backward()
    assert x.grad is not None
    assert not target.head._forward_pre_hooks  # hook removed


def test_distill_makes_a_surrogate_agree_with_the_target() -> None:
    target = tiny_target()
    oracle = make_oracle(target, ThreatModel.BLACK_BOX, 3, (1, 16, 16))
    torch.manual_seed(0)
    x = torch.rand(64, 1, 16, 16) * 2 - 1
    probs = soft_labels(oracle, x)
    assert oracle.queries == 64 and torch.allclose(probs.sum(1), torch.ones(64))
    student = build_classifier("resnet", num_classes=3, in_channels=1, resolution=16, width=4, feature_dim=8)
    log = distill(student, x, probs, epochs=6, batch_size=32, lr=1e-2, gen=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    assert log[-1]["kd_loss"] < log[0]["kd_loss"]
    assert not student.training


# --- LOMMA ----------------------------------------------------------------------------------------

def test_lomma_identity_term_is_mean_logit_loss_plus_target_p_reg() -> None:
    target = tiny_target()
    torch.manual_seed(3)
    surrogate = build_classifier("resnet", num_classes=3, in_channels=1, resolution=16, width=4, feature_dim=8).eval()
    mean = torch.randn(3, 8)
    prior = LommaPrior(tiny_kedmi_prior(), [surrogate], mean)
    oracle = make_oracle(target, ThreatModel.WHITE_BOX, 3, (1, 16, 16))
    x, y = torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 2, 1])
    attack = build_attack("lomma-kedmi", {"reg_weight": 0.5, "p_reg": "per-class"})
    got = attack.objective.term(oracle, prior, x, y)  # per sample: the attack loop reduces it
    want_t = -target(x).gather(1, y.view(-1, 1)).squeeze(1)
    want_s = -surrogate(x).gather(1, y.view(-1, 1)).squeeze(1)
    reg = (target.features(x) - mean[y]).pow(2).mean(1)
    assert got.shape == (4,)
    assert torch.allclose(got, (want_t + want_s) / 2 + 0.5 * reg, atol=1e-5)
    assert oracle.queries == 4  # one counted query of the target per image
    ce = build_attack("lomma-gmi", {"identity": "ce"}).objective.term(oracle, prior, x, y)
    want_ce = (F.cross_entropy(target(x), y, reduction="none") + F.cross_entropy(surrogate(x), y, reduction="none")) / 2
    assert torch.allclose(ce, want_ce, atol=1e-5)
    assert prior.energy is not None and prior.generator is prior.base.generator  # delegation to the base prior


def test_lomma_gmi_lowers_its_loss() -> None:
    torch.manual_seed(2)
    base = GanPrior(LinearGenerator().eval(), Critic(16, 1, 4).eval(), "wgan-gp")
    target = sensitive_target(base.generator)
    surrogate = build_classifier("resnet", num_classes=3, in_channels=1, resolution=16, width=4, feature_dim=8).eval()
    for p in surrogate.parameters():
        p.requires_grad_(False)
    prior = LommaPrior(base, [surrogate], torch.zeros(1, 8), [{"arch": "resnet"}])
    oracle = make_oracle(target, ThreatModel.WHITE_BOX, 3, (1, 16, 16))
    short = build_attack("lomma-gmi", {"iterations": 1}).run(oracle, prior, [0, 1], 2, seed=0)
    long = build_attack("lomma-gmi", {"iterations": 40}).run(oracle, prior, [0, 1], 2, seed=0)
    assert long.extras["final_identity_loss"] < short.extras["final_identity_loss"]
    assert long.queries == 40 * 4 and long.extras["surrogates"] == [{"arch": "resnet"}]


# --- prior caching (a real PriorStore on the tiny scenario) ------------------------------------

@pytest.fixture
def tiny_priors(tiny_scenario, tmp_path):
    from calor.prior_store import Priors
    from calor.workspace import Workspace

    def make() -> Priors:
        return Priors(tiny_scenario, 0, Workspace(cache=tmp_path / "cache"), target_hash="tgt0")

    return make


def test_kedmi_prior_is_cached_per_target_with_its_queries(tiny_priors, tiny_scenario, monkeypatch) -> None:
    import calor.attacks.kedmi as kedmi_mod

    calls = []
    real = kedmi_mod.train_kedmi_gan
    monkeypatch.setattr(kedmi_mod, "train_kedmi_gan", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    target = tiny_target()
    attack = build_attack("kedmi", {"gan_steps": 3})
    oracle = make_oracle(target, ThreatModel.WHITE_BOX, 3, (1, 16, 16))
    priors = tiny_priors()
    first = attack.prepare(oracle, priors)
    n_public = len(priors.public_images())
    assert calls == [1] and oracle.queries == n_public and priors.queries["kedmi-gan"] == n_public
    again = tiny_priors()
    second = attack.prepare(oracle, again)
    assert calls == [1] and oracle.queries == n_public  # loaded, not retrained, no new queries
    assert again.queries["kedmi-gan"] == n_public and first.target_queries == second.target_queries == n_public
    for a, b in zip(first.generator.state_dict().values(), second.generator.state_dict().values()):
        assert torch.equal(a.cpu(), b.cpu())
    # another target gets its own prior
    from calor.prior_store import Priors

    other = Priors(tiny_scenario, 0, again.ws, target_hash="tgt1")
    attack.prepare(oracle, other)
    assert calls == [1, 1]


def test_lomma_prior_caches_surrogates_and_p_reg(tiny_priors, monkeypatch) -> None:
    import calor.attacks.lomma as lomma_mod

    calls = []
    real = lomma_mod.distill
    monkeypatch.setattr(lomma_mod, "distill", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    oracle = make_oracle(tiny_target(), ThreatModel.WHITE_BOX, 3, (1, 16, 16))
    attack = build_attack("lomma-gmi", {"p_reg": "per-class"})
    priors = tiny_priors()
    prior = attack.prepare(oracle, priors)
    n = len(priors.public_images())
    # tiny scenario: target epochs 2 -> one surrogate of another architecture
    assert calls == [1] and [s["arch"] for s in prior.surrogate_specs] == ["resnet"]
    assert priors.queries["lomma-surrogates"] == n and priors.queries["lomma-preg"] == n
    assert prior.feature_mean.shape == (3, 8)  # per class x the target's feature_dim
    assert all(not p.requires_grad for s in prior.surrogates for p in s.parameters())
    queries = oracle.queries
    again = attack.prepare(oracle, tiny_priors())
    assert calls == [1] and oracle.queries == queries
    assert torch.equal(again.feature_mean, prior.feature_mean)


def test_lomma_surrogate_count_and_budget_follow_settings(tiny_priors) -> None:
    oracle = make_oracle(tiny_target(), ThreatModel.WHITE_BOX, 3, (1, 16, 16))
    prior = build_attack("lomma-kedmi", {"surrogates": 0, "identity": "ce", "gan_steps": 2}).prepare(oracle, tiny_priors())
    assert prior.surrogates == [] and prior.feature_mean is None


# --- configuration ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name, settings", [
    ("kedmi", {"lr": 0}), ("kedmi", {"samples_per_step": 0}), ("kedmi", {"clamp": -1}), ("kedmi", {"gan_steps": 0}),
    ("kedmi", {"entropy_weight": -1}), ("lomma-gmi", {"identity": "poincare"}), ("lomma-gmi", {"p_reg": "class"}),
    ("lomma-gmi", {"lr": -1}), ("lomma-kedmi", {"surrogates": -1}), ("lomma-kedmi", {"temperature": 0}),
    ("lomma-kedmi", {"distill_epochs": 0}),
])
def test_bad_settings_are_config_errors(name: str, settings: dict) -> None:
    with pytest.raises(ConfigError):
        build_attack(name, settings)


def test_defaults_follow_the_papers() -> None:
    k = build_attack("kedmi").config
    assert (k.lam, k.lr, k.init_log_var, k.clamp, k.samples_per_step) == (100.0, 0.02, 1.0, None, 1)
    lk = build_attack("lomma-kedmi").config
    assert (lk.identity, lk.reg_weight, lk.p_reg, lk.clamp, lk.temperature) == ("logit", 1.0, "global", 1.0, 1.0)
    lg = build_attack("lomma-gmi").config
    assert (lg.lam, lg.lr, lg.momentum, lg.identity) == (100.0, 0.02, 0.9, "logit")
    assert build_attack("kedmi", {"clamp": "none"}).config.clamp is None
