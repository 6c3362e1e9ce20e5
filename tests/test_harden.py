"""calor.harden on a classifier calor did not define: its last linear layer becomes CALoR's low-rank head,
it is trained through it and fine-tuned with the CA loss, which pulls confidence towards p*."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import calor
from calor.errors import ConfigError, DataError
from calor.models.heads import LowRankHead


class TinyNet(nn.Module):
    """A user's own model: not a calor Classifier, its head buried in a Sequential."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.classifier = nn.Sequential(nn.Linear(128, 32), nn.ReLU(), nn.Linear(32, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(x))


def toy_data(n: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, 1, 8, 8, generator=g) * 0.3
    x[:, 0, :, :] += (y.float() - 1).view(-1, 1, 1)  # separable by brightness
    return x, y


def trained(x: torch.Tensor, y: torch.Tensor) -> TinyNet:
    torch.manual_seed(0)
    model = TinyNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def test_harden_replaces_the_last_linear_and_adapts_confidence() -> None:
    x, y = toy_data()
    model = trained(x, y)
    hardened, record = calor.harden(model, (x, y), rank=4, gamma=2.0, epochs=20, lr=1e-2, ca_epochs=8, ca_lr=0.05,
                                    test_data=toy_data(48, seed=1))
    assert record.layer == "classifier.2" and (record.in_features, record.rank, record.num_classes) == (32, 4, 3)
    assert isinstance(hardened.classifier[2], LowRankHead)
    assert record.before["train"]["confidence"]["mean"] > 0.9  # the plain model is over-confident
    p_star = record.target_confidence
    assert p_star == pytest.approx(torch.tensor(-0.5).exp().item())
    # the CA fine-tune pulls the mean confidence towards p* = 0.61 from above, keeping the accuracy
    after = record.after["train"]
    assert abs(after["confidence"]["mean"] - p_star) < abs(record.before["train"]["confidence"]["mean"] - p_star)
    assert after["accuracy"] >= 0.9 and record.after["test"]["accuracy"] >= 0.9
    assert [h["stage"] for h in record.history if h["epoch"] is not None] == ["lor"] * 20 + ["ca"] * 8


def test_harden_all_trains_a_model_that_arrives_frozen() -> None:
    x, y = toy_data(24)
    model = TinyNet()
    before = {k: v.clone() for k, v in model.body.state_dict().items()}
    for p in model.parameters():
        p.requires_grad_(False)  # as calor.make_oracle leaves a target
    hardened, _ = calor.harden(model, (x, y), rank=4, epochs=1, ca_epochs=0)
    assert not torch.equal(before["0.weight"], hardened.body.state_dict()["0.weight"])


def test_harden_head_only_keeps_the_backbone() -> None:
    x, y = toy_data()
    model = trained(x, y)
    body_before = {k: v.clone() for k, v in model.body.state_dict().items()}
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    hardened, record = calor.harden(model, loader, layer="classifier.0", rank=8, train="head", epochs=2, ca_epochs=1)
    assert record.layer == "classifier.0" and isinstance(hardened.classifier[0], LowRankHead)
    assert all(torch.equal(body_before[k], v) for k, v in hardened.body.state_dict().items())  # BN stats too
    assert all(p.requires_grad is False for p in hardened.body.parameters())


@pytest.mark.parametrize("kwargs, error, message", [
    ({"layer": "nope"}, ConfigError, "layer 'nope' is not in the model; its linear layers: classifier.0, classifier.2"),
    ({"layer": "body.0"}, ConfigError, "is a Conv2d, not an nn.Linear"),
    ({"rank": 32}, ConfigError, "rank=32 must be between 1 and the layer's in_features - 1 = 31"),
    ({"train": "some"}, ConfigError, "train='some'"),
])
def test_harden_refuses_bad_settings(kwargs, error, message) -> None:
    x, y = toy_data(12)
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        calor.harden(TinyNet(), (x, y), epochs=1, ca_epochs=0, **kwargs)


def test_harden_refuses_bad_data() -> None:
    with pytest.raises(DataError, match="images must be"):
        calor.harden(TinyNet(), (torch.randn(4, 64), torch.zeros(4, dtype=torch.long)))
    with pytest.raises(ConfigError, match="labels range 0..5, but layer 'classifier.2' has 3 outputs"):
        calor.harden(TinyNet(), (torch.randn(6, 1, 8, 8), torch.arange(6)))


def test_the_cli_hardens_a_safetensors_checkpoint_of_a_user_module(tiny_yaml, tmp_path, capsys, user_package) -> None:
    import json

    from safetensors.torch import load_file, save_file

    from calor.cli import main

    net = user_package.Net()
    save_file(net.state_dict(), str(tmp_path / "net.safetensors"))
    out = tmp_path / "hardened.safetensors"
    argv = ["harden", "--checkpoint", str(tmp_path / "net.safetensors"), "--module", "usermodels:Net", "--scenario", str(tiny_yaml),
            "--rank", "4", "--epochs", "2", "--ca-epochs", "1", "--out", str(out), "--quiet", "--cache", str(tmp_path / "c")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "replaced fc (128 -> 3) by a rank-4 head" in printed and "test   accuracy" in printed
    weights = load_file(str(out))
    assert {"fc.down.weight", "fc.up.weight", "fc.norm.running_mean"} <= set(weights)
    record = json.loads(out.with_suffix(".json").read_text())["record"]
    assert record["layer"] == "fc" and record["rank"] == 4
    # a checkpoint that does not fit the class, and a module that does not exist: one message each
    assert main([*argv[:3], "--module", "usermodels:Net", "--module-kwargs", '{"classes": 5}', *argv[5:]]) == 2
    assert "the weights do not fit Net" in capsys.readouterr().err
    assert main([*argv[:3], "--module", "nowhere.models:Net", *argv[5:]]) == 2
    assert "--module nowhere.models:Net: cannot import it" in capsys.readouterr().err


def test_the_head_is_found_by_its_outputs_not_by_registration_order() -> None:
    class HeadFirst(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(16, 3)  # registered before the trunk's own linear layer
            self.trunk = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.trunk(x))

    x, y = toy_data(24)
    _, record = calor.harden(HeadFirst(), (x, y), rank=4, epochs=1, ca_epochs=0)
    assert record.layer == "head"
