import math

import pytest
import torch

from calor.defenses import ca_target_confidence, confidence_adaptation_loss


def logits_for(p: float, classes: int = 2) -> torch.Tensor:
    """Logits of a 2-class problem whose class-0 probability is p."""
    return torch.tensor([[math.log(p), math.log(1 - p)]])


@pytest.mark.parametrize("gamma", [4.0, 8.0])
def test_minimum_at_p_star(gamma: float) -> None:
    ps = torch.linspace(0.01, 0.999, 2000)
    values = torch.stack([confidence_adaptation_loss(logits_for(p.item()), torch.tensor([0]), 0.25, gamma) for p in ps])
    p_min = ps[values.argmin()].item()
    assert p_min == pytest.approx(math.exp(-1 / gamma), abs=2e-3)
    assert ca_target_confidence(gamma) == pytest.approx(math.exp(-1 / gamma))
    assert ca_target_confidence(8.0) == pytest.approx(0.8825, abs=1e-4)


@pytest.mark.parametrize("p, sign", [(0.5, -1), (0.8, -1), (0.95, 1), (0.99, 1)])
def test_gradient_pushes_confidence_towards_p_star(p: float, sign: int) -> None:
    # gamma 8: p* = 0.8825. Below it the loss decreases as the true logit grows (gradient < 0), above it increases.
    z = logits_for(p).requires_grad_(True)
    confidence_adaptation_loss(z, torch.tensor([0]), 0.25, 8.0).backward()
    assert torch.sign(z.grad[0, 0]).item() == sign


def test_hand_computed_value() -> None:
    # p = 0.5, alpha 0.25, gamma 8: 0.25 * 0.5^8 * ln 0.5 = -0.000676...
    expected = 0.25 * 0.5**8 * math.log(0.5)
    assert confidence_adaptation_loss(logits_for(0.5), torch.tensor([0])).item() == pytest.approx(expected, rel=1e-5)
    # batch mean of two samples with p = 0.5 and p = 0.9
    z = torch.cat([logits_for(0.5), logits_for(0.9)])
    both = (expected + 0.25 * 0.9**8 * math.log(0.9)) / 2
    assert confidence_adaptation_loss(z, torch.tensor([0, 0])).item() == pytest.approx(both, rel=1e-5)


def test_true_logit_gradient_formula() -> None:
    # d L / d z_y = alpha p^gamma (1 + gamma ln p)(1 - p) for a single sample
    p, alpha, gamma = 0.7, 0.25, 8.0
    z = logits_for(p).requires_grad_(True)
    confidence_adaptation_loss(z, torch.tensor([0]), alpha, gamma).backward()
    expected = alpha * p**gamma * (1 + gamma * math.log(p)) * (1 - p)
    assert z.grad[0, 0].item() == pytest.approx(expected, rel=1e-4)
