import pytest
import torch

from calor import ThreatModelError, build_attack, build_classifier, make_oracle
from calor.attacks import BlackBoxOracle, LabelOnlyOracle, ThreatModel, WhiteBoxOracle


def tiny_model():
    torch.manual_seed(0)
    return build_classifier("cnn", num_classes=3, in_channels=1, resolution=16, width=4, feature_dim=8).eval()


def test_black_box_oracle_exposes_no_module_and_no_gradients() -> None:
    oracle = make_oracle(tiny_model(), ThreatModel.BLACK_BOX, 3, (1, 16, 16))
    assert isinstance(oracle, BlackBoxOracle) and not isinstance(oracle, WhiteBoxOracle)
    assert not hasattr(oracle, "module") and not hasattr(oracle, "logits") and not hasattr(oracle, "_module")
    x = torch.randn(5, 1, 16, 16, requires_grad=True)
    p = oracle.probs(x)
    assert not p.requires_grad and p.grad_fn is None
    assert torch.allclose(p.sum(1), torch.ones(5))
    assert oracle.queries == 5


def test_label_only_oracle_answers_only_labels() -> None:
    oracle = make_oracle(tiny_model(), ThreatModel.LABEL_ONLY, 3, (1, 16, 16))
    assert type(oracle) is LabelOnlyOracle and not hasattr(oracle, "probs")
    y = oracle.label(torch.randn(4, 1, 16, 16))
    assert y.dtype == torch.long and y.shape == (4,) and oracle.queries == 4


def test_white_box_oracle_counts_queries_and_gives_gradients() -> None:
    oracle = make_oracle(tiny_model(), ThreatModel.WHITE_BOX, 3, (1, 16, 16))
    x = torch.randn(6, 1, 16, 16, requires_grad=True)
    oracle.logits(x).sum().backward()
    assert x.grad is not None and oracle.queries == 6
    assert all(not p.requires_grad for p in oracle.module.parameters())  # target frozen


def test_attack_refuses_an_oracle_with_less_access() -> None:
    oracle = make_oracle(tiny_model(), ThreatModel.BLACK_BOX, 3, (1, 16, 16))
    with pytest.raises(ThreatModelError, match="white-box"):
        build_attack("gmi").run(oracle, None, [0], 1, 0)


def test_oracle_rejects_wrong_image_shape() -> None:
    oracle = make_oracle(tiny_model(), ThreatModel.LABEL_ONLY, 3, (1, 16, 16))
    with pytest.raises(ThreatModelError, match="shape"):
        oracle.label(torch.randn(2, 1, 8, 8))
