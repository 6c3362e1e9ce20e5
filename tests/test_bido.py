"""BiDO: kernels and HSIC estimators on hand-made inputs, layer choice, hooks, and the reduction."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from calor import ConfigError, Workspace, build_classifier, build_defense, train_target
from calor.defenses.base import Stage
from calor.defenses.bido import evenly_spaced, gaussian_kernel, hsic, hsic_biased, hsic_normalized, linear_kernel


def _model() -> torch.nn.Module:
    return build_classifier("cnn", num_classes=3, in_channels=1, resolution=16, width=4, feature_dim=8)


def test_gaussian_kernel_uses_dimension_scaled_bandwidth() -> None:
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0]])  # squared distance 4, n = 2 dims
    k = gaussian_kernel(x, sigma=1.0)
    assert k[0, 1].item() == pytest.approx(math.exp(-4 / (2 * 1 * 2)))
    assert torch.allclose(k.diagonal(), torch.ones(2))


def test_biased_hsic_with_linear_kernels_is_squared_covariance() -> None:
    x = torch.tensor([[1.0], [2.0], [4.0], [5.0]])
    y = torch.tensor([[2.0], [1.0], [3.0], [6.0]])
    cov = torch.cov(torch.cat([x, y], 1).T)[0, 1].item()  # unbiased sample covariance
    assert hsic_biased(linear_kernel(x), linear_kernel(y)).item() == pytest.approx(cov**2, rel=1e-5)


@pytest.mark.parametrize("estimator", ["normalized", "biased"])
def test_independent_inputs_score_low_identical_inputs_high(estimator: str) -> None:
    torch.manual_seed(0)
    x, noise = torch.randn(32, 1), torch.randn(32, 1)
    same = hsic(x, x, estimator=estimator).item()
    independent = hsic(x, noise, estimator=estimator).item()
    dependent = hsic(x, x + 0.1 * torch.randn(32, 1), estimator=estimator).item()
    assert independent >= -1e-6 and same > 5 * independent and dependent > 5 * independent
    if estimator == "normalized":
        assert hsic(x, noise).item() == pytest.approx(hsic(noise, x).item(), rel=1e-4)  # symmetric


def test_normalized_hsic_counts_shared_label_directions() -> None:
    # representations that encode the label share its (C - 1) centred directions; noise shares few
    torch.manual_seed(0)
    y = torch.arange(30) % 3
    onehot = F.one_hot(y, 3).float()
    informative = hsic(onehot + 0.05 * torch.randn(30, 3), onehot, y_kernel="linear").item()
    uninformative = hsic(torch.randn(30, 3), onehot, y_kernel="linear").item()
    assert informative == pytest.approx(2.0, abs=0.2) and informative > 2 * uninformative
    assert hsic_normalized(linear_kernel(onehot), linear_kernel(onehot)).item() == pytest.approx(2.0, abs=0.01)


def test_layer_choice() -> None:
    assert evenly_spaced(4, 3) == (0, 2, 3) and evenly_spaced(6, 3) == (0, 3, 5) and evenly_spaced(2, 3) == (0, 1)
    assert build_defense("bido").prepare(_model()) is not None
    d = build_defense("bido")
    d.prepare(_model())
    assert d.layer_indices == (0, 2, 3)  # the cnn has 4 blocks; the last gives the penultimate features
    d = build_defense("bido", {"layers": [1, 3]})
    d.prepare(_model())
    assert d.layer_indices == (1, 3)
    with pytest.raises(ConfigError, match="out of range"):
        build_defense("bido", {"layers": [4]}).prepare(_model())


@pytest.mark.parametrize("settings, message", [
    ({"layers": [-1]}, "layers"), ({"lambda_xz": -1}, "lambda_xz"), ({"sigma": 0}, "sigma"),
    ({"estimator": "coco"}, "estimator"), ({"label_kernel": "imq"}, "label_kernel"), ({"num_layers": 0}, "num_layers"),
])
def test_bad_settings(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_defense("bido", settings)


def test_forward_captures_flattened_hiddens_and_removes_hooks() -> None:
    torch.manual_seed(0)
    d = build_defense("bido")
    model = d.prepare(_model()).train()
    x, y = torch.randn(8, 1, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    logits, extras = d.forward(model, x)
    assert torch.allclose(logits, model(x))  # the hooks only observe
    assert [h.shape for h in extras["hiddens"]] == [(8, 4 * 8 * 8), (8, 16 * 2 * 2), (8, 8)]
    assert all(not layer._forward_hooks for layer in model.hidden_layers())
    loss = d.loss(Stage("train", 1), logits, y, extras)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert loss.item() != pytest.approx(F.cross_entropy(logits, y).item())
    summary = d.summary()
    assert summary["layers"] == [0, 2, 3] and summary["last_epoch_hsic_yz"] > 0


def test_zero_lambdas_train_exactly_like_none(tiny_scenario, tmp_path: Path) -> None:
    ws = Workspace(cache=tmp_path)
    none = train_target(tiny_scenario, "none", seed=0, ws=ws).model.state_dict()
    zero = train_target(tiny_scenario, "bido", seed=0, settings={"lambda_xz": 0.0, "lambda_yz": 0.0}, ws=ws).model.state_dict()
    assert none.keys() == zero.keys() and all(torch.equal(none[k], zero[k]) for k in none)
    full = train_target(tiny_scenario, "bido", seed=0, ws=ws).model.state_dict()
    assert not all(torch.equal(none[k], full[k]) for k in none)
