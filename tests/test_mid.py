"""MID / VIB head: closed-form KL, test-time behaviour, loss wiring, artifact round trip."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from calor import ConfigError, Workspace, build_classifier, build_defense, load_classifier, train_target
from calor.defenses.base import Stage
from calor.defenses.mid import VIBHead, gaussian_kl


def test_kl_of_a_known_gaussian_matches_the_closed_form() -> None:
    mu, std = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, 2.0]])
    # 0.5 * [(1 + 0.25 - 1 - 2 ln 0.5) + (4 + 4 - 1 - 2 ln 2)] = 0.5 * 7.25 = 3.625
    assert gaussian_kl(mu, std).item() == pytest.approx(3.625, rel=1e-6)
    assert gaussian_kl(torch.zeros(3, 4), torch.ones(3, 4)).item() == pytest.approx(0.0, abs=1e-7)
    # batch mean, sum over dimensions: agrees with torch.distributions
    torch.manual_seed(0)
    mu, std = torch.randn(5, 3), torch.rand(5, 3) + 0.1
    q, p = torch.distributions.Normal(mu, std), torch.distributions.Normal(0.0, 1.0)
    expected = torch.distributions.kl_divergence(q, p).sum(1).mean()
    assert gaussian_kl(mu, std).item() == pytest.approx(expected.item(), rel=1e-5)
    assert math.isfinite(gaussian_kl(torch.zeros(1, 1), torch.zeros(1, 1)).item())  # std clamped inside the log


def test_std_is_softplus_shifted_by_five() -> None:
    head = VIBHead(4, 2, 3)
    with torch.no_grad():
        head.encoder.weight.zero_()
        head.encoder.bias.copy_(torch.tensor([0.3, -0.2, 0.0, 7.0]))
    mu, std = head.statistics(torch.randn(2, 4))
    assert torch.allclose(mu, torch.tensor([0.3, -0.2]).expand(2, 2))
    assert torch.allclose(std, F.softplus(torch.tensor([-5.0, 2.0])).expand(2, 2))


def test_eval_is_the_mean_by_default_and_stochastic_with_sample_at_test() -> None:
    torch.manual_seed(0)
    h = torch.randn(6, 8)
    head = VIBHead(8, 4, 3)
    with torch.no_grad():
        head.encoder.bias[4:] = 8.0  # std ~ 3: sampling is clearly visible
    head.eval()
    a, b = head(h), head(h)
    assert torch.equal(a, b)
    mu, _ = head.statistics(h)
    assert torch.allclose(a, head.classifier(mu))
    head.train()
    assert not torch.allclose(head(h), head(h))
    sampling = VIBHead(8, 4, 3, sample_at_test=True)
    sampling.load_state_dict(head.state_dict())
    sampling.eval()
    assert not torch.allclose(sampling(h), sampling(h))


def test_prepare_forward_and_loss() -> None:
    model = build_classifier("cnn", num_classes=3, in_channels=1, resolution=16, width=4, feature_dim=8)
    d = build_defense("mid")
    model = d.prepare(model)
    assert isinstance(model.head, VIBHead) and model.head.k == 4 and model.head.classifier.out_features == 3
    assert isinstance(build_defense("mid", {"k": 3}).prepare(model).head, VIBHead)
    model = d.prepare(build_classifier("cnn", num_classes=3, in_channels=1, resolution=16, width=4, feature_dim=8))
    x, y = torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 2, 0])
    logits, extras = d.forward(model.train(), x)
    assert logits.shape == (4, 3) and extras["kl"].ndim == 0 and extras["kl"].item() >= 0
    stage = Stage("train", 1)
    expected = F.cross_entropy(logits, y) + 0.003 * extras["kl"]
    assert d.loss(stage, logits, y, extras).item() == pytest.approx(expected.item(), rel=1e-6)
    assert build_defense("mid", {"beta": 0.0}).loss(stage, logits, y, extras).item() == pytest.approx(F.cross_entropy(logits, y).item())


@pytest.mark.parametrize("settings, message", [({"beta": -1}, "beta"), ({"k": 0}, "k=0")])
def test_bad_settings(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_defense("mid", settings)


def test_trained_artifact_reloads_and_is_deterministic(tiny_scenario, tmp_path: Path) -> None:
    trained = train_target(tiny_scenario, "mid", seed=0, ws=Workspace(cache=tmp_path))
    loaded = load_classifier(trained.path)
    x = torch.randn(5, 1, 16, 16)
    assert isinstance(loaded.model.head, VIBHead)
    assert torch.equal(loaded.model(x), loaded.model(x))
    assert torch.allclose(loaded.model(x), trained.model.eval()(x), atol=1e-6)
