"""`calor.harden`: CALoR for a classifier calor did not define.

The model's final linear layer (or the one named) is replaced by the low-rank head BN -> Linear(d, r) ->
tanh -> Linear(r, C); the model is trained through it with cross-entropy (every weight, or the head only),
then fine-tuned with the confidence-adaptation loss that pulls each training sample's true-class
confidence to p* = exp(-1/gamma). Training runs through calor's one training loop with the `calor`
defense's stages and losses, so the result is what `calor train --defense calor` would do to a calor model.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .data.inputs import as_tensors
from .defenses import build_defense, ca_target_confidence
from .errors import ConfigError
from .metrics.confidence import confidence_summary
from .models.heads import LowRankHead
from .runtime import resolve_device, seed_everything
from .scenario import ClassifierSpec
from .training import train_classifier

DEFAULT_RANK = 50  # the authors' bottleneck for 512-d face features; capped at half the feature size below


@dataclass
class HardenRecord:
    """What `harden` did: the layer it replaced, the head's shape, p*, and accuracy and mean true-class
    confidence before and after (on the training data, and on `test_data` when given)."""

    layer: str
    in_features: int
    rank: int
    num_classes: int
    target_confidence: float
    train: str
    activation: str = "tanh"
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def final_linear(model: nn.Module, layer: str | None = None, num_outputs: int | None = None) -> tuple[str, nn.Linear]:
    """The layer to replace: `layer` (a dotted name from `model.named_modules()`), else the last registered
    nn.Linear with `num_outputs` outputs (the model's logits; registration order alone can mislead: a
    model may register its head before its trunk), else the last nn.Linear."""
    modules = dict(model.named_modules())
    if layer is not None:
        if layer not in modules:
            raise ConfigError(f"layer {layer!r} is not in the model; its linear layers: "
                              f"{', '.join(n for n, m in modules.items() if isinstance(m, nn.Linear)) or 'none'}")
        if not isinstance(modules[layer], nn.Linear):
            raise ConfigError(f"layer {layer!r} is a {type(modules[layer]).__name__}, not an nn.Linear")
        return layer, modules[layer]
    linears = [(n, m) for n, m in modules.items() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(f"{type(model).__name__} has no nn.Linear layer to replace; name one with layer=")
    if num_outputs is not None:
        heads = [(n, m) for n, m in linears if m.out_features == num_outputs]
        if not heads:
            raise ConfigError(f"no nn.Linear of {type(model).__name__} has {num_outputs} outputs like its logits; "
                              f"name the layer to replace with layer= (its linear layers: {', '.join(n for n, _ in linears)})")
        return heads[-1]
    return linears[-1]


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    parent.add_module(child, new)  # replaces the child of that name


@torch.no_grad()
def _measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, batch_size: int = 256) -> dict[str, Any]:
    model.eval()
    probs = torch.cat([model(x[i:i + batch_size].to(device)).softmax(1).cpu() for i in range(0, len(x), batch_size)])
    conf = probs.gather(1, y.view(-1, 1)).squeeze(1)
    return {"accuracy": (probs.argmax(1) == y).float().mean().item(), "confidence": confidence_summary(conf)}


def _eval_mode_hook(module: nn.Module, _inputs: Any) -> None:
    module.eval()  # a frozen backbone keeps its BatchNorm statistics


def harden(model: nn.Module, train_data: Any, *, rank: int | None = None, gamma: float = 8.0, alpha: float = 0.25,
           activation: str = "tanh", layer: str | None = None, train: str = "all", epochs: int = 5, lr: float = 1e-3,
           batch_size: int = 64, ca_epochs: int = 5, ca_lr: float = 2e-5, ca_optimizer: str = "sgd",
           test_data: Any = None, seed: int = 0, device: str | torch.device = "cpu") -> tuple[nn.Module, HardenRecord]:
    """Harden `model` (any image classifier ending in an nn.Linear) with CALoR; returns it (changed in place)
    and a `HardenRecord`.

    `train_data` / `test_data`: (images, labels) tensors, a Dataset or a DataLoader (images as the model
    expects them). `rank`: the bottleneck (default min(50, d // 2)); `gamma`, `alpha`: the CA loss (p* =
    exp(-1/gamma)); `train`: "all" trains every weight through the new head (the paper), "head" only the head
    (the backbone frozen, its BatchNorm statistics kept); `epochs`/`lr`: the CE stage (Adam); `ca_*`: the CA
    fine-tune (0 epochs: low-rank head only)."""
    if train not in ("all", "head"):
        raise ConfigError(f"train={train!r}: choose 'all' (every weight) or 'head' (the new head only)")
    dev = resolve_device(str(device)) if not isinstance(device, torch.device) else device
    x, y = as_tensors(train_data, "train_data")
    test = as_tensors(test_data, "test_data") if test_data is not None else None
    model.to(dev).eval()
    with torch.no_grad():
        num_outputs = model(x[:2].to(dev)).shape[1]
    name, old = final_linear(model, layer, num_outputs)
    d, c = old.in_features, old.out_features
    r = rank if rank is not None else max(1, min(DEFAULT_RANK, d // 2))
    if not 1 <= r < d:
        raise ConfigError(f"rank={r} must be between 1 and the layer's in_features - 1 = {d - 1}")
    if int(y.max()) >= c or int(y.min()) < 0:
        raise ConfigError(f"labels range {int(y.min())}..{int(y.max())}, but layer {name!r} has {c} outputs")
    defense = build_defense("calor", {"rank": r, "gamma": gamma, "alpha": alpha, "activation": activation,
                                       "ca_epochs": ca_epochs, "ca_lr": ca_lr, "ca_optimizer": ca_optimizer})
    before = {"train": _measure(model, x, y, dev), **({"test": _measure(model, *test, dev)} if test else {})}
    seed_everything(seed)
    head = LowRankHead(d, r, c, activation).to(dev)
    _replace(model, name, head)
    hooks = []
    if train == "all":  # every weight trains, even if the model arrives frozen (e.g. from an oracle)
        for p in model.parameters():
            p.requires_grad_(True)
    else:
        for module in model.modules():
            if not any(module is m for m in head.modules()):
                for p in module.parameters(recurse=False):
                    p.requires_grad_(False)
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    hooks.append(module.register_forward_pre_hook(_eval_mode_hook))
    budget = ClassifierSpec(arch="user", width=1, feature_dim=d, epochs=epochs, batch_size=batch_size, lr=lr, augment=False)
    t0 = time.perf_counter()
    try:
        history = train_classifier(model, defense, x, y, budget, device=dev, seed=seed, description="harden")
    finally:
        for h in hooks:
            h.remove()
    seconds = time.perf_counter() - t0
    after = {"train": _measure(model, x, y, dev), **({"test": _measure(model, *test, dev)} if test else {})}
    model.eval()
    record = HardenRecord(name, d, r, c, ca_target_confidence(gamma), train, activation, before, after, history, seconds)
    return model, record


def restore_head(model: nn.Module, layer: str, rank: int, activation: str = "tanh") -> nn.Module:
    """Give a freshly built `model` the structure `harden` left it with (layer `layer` replaced by a rank-`rank`
    low-rank head), so that a hardened checkpoint's weights load into it. Returns the model (changed in place)."""
    name, old = final_linear(model, layer)
    _replace(model, name, LowRankHead(old.in_features, rank, old.out_features, activation))
    return model
