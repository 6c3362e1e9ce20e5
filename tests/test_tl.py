"""TL-DMI: public pre-training, front blocks frozen (weights, gradients and BN statistics), private head."""

import pytest
import torch

from calor import ConfigError, DataError
from calor.defenses import build_defense
from calor.defenses.tl import frozen_block_count
from calor.models.classifiers import build_classifier
from calor.models.heads import LinearHead
from calor.scenario import ClassifierSpec
from calor.training import train_classifier

BUDGET = ClassifierSpec(arch="cnn", width=4, feature_dim=8, epochs=1, batch_size=8, lr=0.01, augment=False)


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return build_classifier("cnn", num_classes=3, in_channels=1, resolution=16, width=4, feature_dim=8)


def _data(n: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 16, 16, generator=g) * 2 - 1, torch.arange(n) % classes


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_frozen_block_count_rounds_half_up() -> None:
    assert frozen_block_count(4, 0.7) == 3  # cnn: 2.8 -> 3
    assert frozen_block_count(6, 0.7) == 4  # resnet: 4.2 -> 4
    assert frozen_block_count(4, 0.625) == 3  # 2.5 -> 3 (not banker's 2)
    assert frozen_block_count(4, 0.0) == 0 and frozen_block_count(4, 1.0) == 4


def test_defaults_and_validation() -> None:
    d = build_defense("tl")
    assert d.config.freeze_fraction == 0.7
    stages = d.stages(BUDGET)
    assert [(s.name, s.data) for s in stages] == [("pretrain", "public"), ("finetune", "private")]
    for bad in ({"freeze_fraction": 1.2}, {"freeze_fraction": -0.1}, {"public_classes": -1}, {"finetune_epochs": 0}, {"pretrain_lr": 0}):
        with pytest.raises(ConfigError):
            build_defense("tl", bad)


def test_front_is_frozen_back_and_head_are_trained() -> None:
    d = build_defense("tl", {"public_classes": 4})
    model = d.prepare(_model())
    x, y = _data(16, 3, 0)
    public = _data(16, 4, 1)
    after: dict[str, dict[str, torch.Tensor]] = {}
    heads: dict[str, int] = {}

    def snap(stage, m):
        after[stage.name] = _snapshot(m)
        heads[stage.name] = m.head.out_features
        return {}

    train_classifier(model, d, x, y, BUDGET, public, device=torch.device("cpu"), seed=0, after_stage=snap)
    assert heads == {"pretrain": 4, "finetune": 3}  # public head during pre-training, private head after
    assert d.n_frozen == 3
    pre, final = after["pretrain"], _snapshot(model)
    for i, block in enumerate(model.blocks):
        keys = [k for k in final if k.startswith(f"blocks.{i}.")]
        if i < d.n_frozen:
            assert all(not p.requires_grad and p.grad is None for p in block.parameters())
            # weights and BatchNorm running statistics: exactly what pre-training left
            assert all(torch.equal(final[k], pre[k]) for k in keys), f"frozen block {i} changed"
        else:
            assert all(p.requires_grad for p in block.parameters())
            assert any(not torch.equal(final[k], pre[k]) for k in keys), f"trainable block {i} did not change"
    # the final module is the prepared architecture: loads back with strict=True, no public head left
    assert isinstance(model.head, LinearHead) and model.head.out_features == 3
    rebuilt = d.prepare(_model(1))
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert torch.allclose(rebuilt.eval()(x[:4]), model.eval()(x[:4]), atol=1e-6)


def test_frozen_blocks_run_in_eval_mode_during_finetune() -> None:
    d = build_defense("tl")
    model = d.prepare(_model())
    d.freeze_front(model)
    model.train()
    model(torch.randn(4, 1, 16, 16))
    assert [b.training for b in model.blocks] == [False, False, False, True]


def test_public_head_too_small_is_a_clear_error() -> None:
    d = build_defense("tl")  # public_classes 0 -> as many as the 3 private classes
    model = d.prepare(_model())
    x, y = _data(8, 3, 0)
    with pytest.raises(DataError, match="stage 'pretrain': labels go up to 4, but the model predicts 3 classes"):
        train_classifier(model, d, x, y, BUDGET, _data(8, 5, 1), device=torch.device("cpu"), seed=0)
