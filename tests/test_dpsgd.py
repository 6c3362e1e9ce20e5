"""DP-SGD via Opacus: BatchNorm replaced, per-sample clipping as theory says, a finite epsilon reported."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from calor import ConfigError
from calor.defenses import build_defense
from calor.defenses.base import Stage
from calor.models.classifiers import build_classifier
from calor.scenario import ClassifierSpec
from calor.training import train_classifier


def _model(arch: str = "cnn", seed: int = 0):
    torch.manual_seed(seed)
    return build_classifier(arch, num_classes=3, in_channels=1, resolution=16, width=4, feature_dim=8)


def _data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 16, 16, generator=g) * 2 - 1, torch.arange(n) % 3


def test_defaults_and_validation() -> None:
    d = build_defense("dpsgd")
    assert (d.config.noise_multiplier, d.config.max_grad_norm, d.config.accountant) == (1.0, 1.0, "rdp")
    for bad in ({"noise_multiplier": -1}, {"max_grad_norm": 0}, {"delta": 1.5}, {"accountant": "gdp-ish"}):
        with pytest.raises(ConfigError):
            build_defense("dpsgd", bad)


@pytest.mark.parametrize("arch", ["cnn", "resnet"])
def test_prepare_replaces_batchnorm_deterministically(arch: str) -> None:
    d = build_defense("dpsgd")
    a, b = d.prepare(_model(arch, 0)), d.prepare(_model(arch, 1))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in a.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in a.modules())
    b.load_state_dict(a.state_dict(), strict=True)  # a rebuilt target has the same structure


def test_per_sample_gradients_are_clipped() -> None:
    clip, lr, batch = 1e-3, 1.0, 4
    d = build_defense("dpsgd", {"noise_multiplier": 0.0, "max_grad_norm": clip})
    model = d.prepare(_model()).train()
    ref = copy.deepcopy(model)  # same weights, no opacus hooks: per-sample gradients one sample at a time
    stage = Stage("train", 1, optimizer="sgd", lr=lr, momentum=0.0)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = d.make_optimizer(stage, model, params, num_samples=40, batch_size=batch)
    x, y = _data(batch)
    before = [p.detach().clone() for p in params]
    logits, extras = d.forward(model, x)
    loss = d.loss(stage, logits, y, extras)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    d.after_step(stage, model, x, y)
    update = [p.detach() - b for p, b in zip(params, before)]

    # GroupNorm normalises each sample on its own, so sample i's gradient is that of the model on x[i] alone.
    clipped_sum = [torch.zeros_like(p) for p in params]
    norms = []
    for i in range(batch):
        ref.zero_grad()
        F.cross_entropy(ref(x[i : i + 1]), y[i : i + 1]).backward()
        g = [p.grad.detach().clone() for p in ref.parameters()]
        norm = math.sqrt(sum(float(t.pow(2).sum()) for t in g))
        norms.append(norm)
        factor = min(1.0, clip / (norm + 1e-6))
        clipped_sum = [s + factor * t for s, t in zip(clipped_sum, g)]
    assert min(norms) > 100 * clip  # the bound really binds, so this test measures clipping
    expected = [-lr * s / batch for s in clipped_sum]
    for u, e in zip(update, expected):
        assert torch.allclose(u, e, atol=1e-7, rtol=1e-4)
    update_norm = math.sqrt(sum(float(u.pow(2).sum()) for u in update))
    assert update_norm <= lr * clip * (1 + 1e-4)  # ||mean of clipped per-sample gradients|| <= C


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_training_reports_a_finite_epsilon(accountant: str) -> None:
    from calor.defenses.dpsgd import make_accountant

    d = build_defense("dpsgd", {"accountant": accountant})
    model = d.prepare(_model())
    x, y = _data(12)
    budget = ClassifierSpec(arch="cnn", width=4, feature_dim=8, epochs=1, batch_size=4, lr=0.01, augment=False)
    train_classifier(model, d, x, y, budget, device=torch.device("cpu"), seed=0)
    s = d.summary()
    assert s["steps"] == 3 and s["sample_rate"] == pytest.approx(4 / 12) and s["delta"] == pytest.approx(1 / 12)
    assert s["epsilon"] is not None and 0 < s["epsilon"] < float("inf")
    acc = make_accountant(accountant)
    for _ in range(3):
        acc.step(noise_multiplier=1.0, sample_rate=4 / 12)
    assert s["epsilon"] == pytest.approx(acc.get_epsilon(delta=1 / 12))
    assert s["accountant"] == accountant
    # after training the opacus hooks are inert: an attack-style input-gradient pass works
    model.eval()
    xi = x[:2].clone().requires_grad_(True)
    model(xi)[:, 0].sum().backward()
    assert xi.grad is not None and xi.grad.abs().sum() > 0


def test_more_steps_spend_more_budget_and_no_noise_means_no_guarantee() -> None:
    from opacus.accountants import RDPAccountant

    eps = []
    for steps in (1, 10):
        acc = RDPAccountant()
        for _ in range(steps):
            acc.step(noise_multiplier=1.0, sample_rate=0.1)
        eps.append(acc.get_epsilon(delta=1e-3))
    assert eps[0] < eps[1]
    d = build_defense("dpsgd", {"noise_multiplier": 0.0})
    model = d.prepare(_model())
    x, y = _data(8)
    budget = ClassifierSpec(arch="cnn", width=4, feature_dim=8, epochs=1, batch_size=4, lr=0.01, augment=False)
    train_classifier(model, d, x, y, budget, device=torch.device("cpu"), seed=0)
    assert d.summary()["epsilon"] is None and d.summary()["steps"] == 2
