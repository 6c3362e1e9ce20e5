"""Harden a classifier calor did not define, then audit what it and its plain self leak.

    python examples/harden_and_audit.py            # 32x32 digits, a few minutes on a laptop CPU
    python examples/harden_and_audit.py --tiny     # 16x16, seconds (what the tests run)

The model below is an ordinary PyTorch module taking [0, 1] images. calor never sees its class: `harden`
finds its last linear layer, and `audit` reaches it only through the oracles of each attack's threat model.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import calor
from calor.scenario import ClassifierSpec, PriorSpec


class SmallNet(nn.Module):
    """A user's digit classifier for one-channel [0, 1] images."""

    def __init__(self, classes: int = 5, width: int = 16) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
            nn.Flatten(), nn.Linear(8 * width, 64), nn.ReLU())
        self.head = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int = 0) -> nn.Module:
    """Plain cross-entropy training, as a user would write it."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def main(tiny: bool = False) -> calor.AuditResult:
    scenario = calor.load_scenario("mnist")  # the embedded digits: 0-4 private, 5-9 public
    if tiny:
        scenario = scenario.with_overrides({"resolution": "16", "data.max_per_class": "40"})
    data = calor.load_data(scenario)
    unit = lambda t: (t + 1) / 2  # noqa: E731  calor holds images in [-1, 1]; this model takes [0, 1]
    train_set, test_set = (unit(data.x_train), data.y_train), (unit(data.x_test), data.y_test)
    public = (unit(data.x_public), data.y_public)
    epochs = 2 if tiny else 6

    plain = train(SmallNet(width=8 if tiny else 16), *train_set, epochs=epochs)
    hardened = train(SmallNet(width=8 if tiny else 16), *train_set, epochs=epochs)
    hardened, record = calor.harden(hardened, train_set, rank=8, gamma=2.0, epochs=1 if tiny else 3, lr=1e-3,
                                    ca_epochs=1 if tiny else 3, ca_lr=1e-3, ca_optimizer="adam", test_data=test_set)
    print(f"hardened {record.layer}: test accuracy {record.before['test']['accuracy']:.3f} -> {record.after['test']['accuracy']:.3f}, "
          f"mean train confidence {record.before['train']['confidence']['mean']:.3f} -> {record.after['train']['confidence']['mean']:.3f}")

    budget = dict(judge=ClassifierSpec(arch="resnet", width=4, feature_dim=16, epochs=2),
                  prior=PriorSpec(kind="dcgan", width=8, z_dim=16, steps=20), per_class=2, iterations=10) if tiny else \
        dict(judge=ClassifierSpec(arch="resnet", width=32, feature_dim=128, epochs=8),
             prior=PriorSpec(kind="dcgan", width=32, z_dim=100, steps=1500), per_class=10, iterations=300)
    result = calor.audit({"plain": plain, "hardened": hardened}, train_set, public, ["gmi"], test_data=test_set,
                         input_range=(0.0, 1.0), **budget)
    print(result.to_markdown())
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="16x16 images and tiny budgets (seconds)")
    main(parser.parse_args().tiny)
