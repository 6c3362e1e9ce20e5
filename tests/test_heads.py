import pytest
import torch

from calor import ConfigError, LowRankHead, build_classifier, build_defense


def test_low_rank_head_shapes_and_layers() -> None:
    head = LowRankHead(32, 4, 10)
    assert head(torch.randn(8, 32)).shape == (8, 10)
    assert isinstance(head.norm, torch.nn.BatchNorm1d) and head.down.out_features == 4 and isinstance(head.act, torch.nn.Tanh)


def test_logit_map_has_rank_at_most_r() -> None:
    torch.manual_seed(0)
    head = LowRankHead(64, 3, 10).eval()
    z = head(torch.randn(500, 64))
    centred = z - head.up.bias  # logits lie in the column space of W2 (10 x 3)
    assert torch.linalg.matrix_rank(centred, atol=1e-4).item() <= 3
    assert torch.linalg.matrix_rank(z - z.mean(0), atol=1e-4).item() == 3


def test_tanh_bottleneck_bounds_logits() -> None:
    torch.manual_seed(0)
    head = LowRankHead(16, 4, 5).eval()
    z = head(1e6 * torch.randn(200, 16))
    assert torch.all(z.abs() <= head.logit_bound() + 1e-4)
    assert torch.isinf(LowRankHead(16, 4, 5, activation="relu").logit_bound()).all()


def test_bad_rank_and_activation_are_errors() -> None:
    with pytest.raises(ConfigError, match="rank"):
        LowRankHead(8, 9, 3)
    with pytest.raises(ConfigError, match="activation"):
        LowRankHead(8, 2, 3, activation="swish")
    model = build_classifier("cnn", num_classes=3, in_channels=1, resolution=16, width=4, feature_dim=8)
    with pytest.raises(ConfigError, match="feature_dim"):
        build_defense("calor", {"rank": 20}).prepare(model)


def test_calor_replaces_only_the_head() -> None:
    model = build_classifier("cnn", num_classes=3, in_channels=1, resolution=16, width=4, feature_dim=8)
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("head")}
    build_defense("calor", {"rank": 2}).prepare(model)
    assert isinstance(model.head, LowRankHead)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model(torch.randn(4, 1, 16, 16)).shape == (4, 3)
    assert model.features(torch.randn(4, 1, 16, 16)).shape == (4, 8)
