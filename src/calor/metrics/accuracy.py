"""Natural accuracy of a target and attack accuracy judged by the evaluation model."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import MetricError


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 256, features: bool = False) -> torch.Tensor:
    """Logits (or penultimate features) of `model` on `x`, in eval mode, batched, on the model's device."""
    if len(x) == 0:
        raise MetricError("cannot evaluate a model on zero images")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    fn = model.features if features else model
    out = torch.cat([fn(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return out


def topk_accuracy(logits: torch.Tensor, y: torch.Tensor, k: int = 1) -> float:
    """Fraction of rows whose true label is among the k largest logits."""
    if len(logits) == 0 or len(logits) != len(y):
        raise MetricError(f"top-{k} accuracy: {len(logits)} predictions for {len(y)} labels")
    if k > logits.shape[1]:
        raise MetricError(f"top-{k} accuracy is meaningless with {logits.shape[1]} classes")
    top = logits.topk(k, dim=1).indices
    return (top == y.view(-1, 1)).any(1).float().mean().item()


def natural_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of `model` on (x, y) — the private test split for a target."""
    return topk_accuracy(predict(model, x), y, 1)


def attack_accuracy(eval_model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Attack accuracy @1 (and @5 when there are more than 5 classes) by the evaluation model."""
    logits = predict(eval_model, images)
    out = {"attack_acc@1": topk_accuracy(logits, labels, 1)}
    if logits.shape[1] > 5:
        out["attack_acc@5"] = topk_accuracy(logits, labels, 5)
    return out
