"""The one classifier training loop. Defenses enter through their stages, `forward`, `loss` and hooks."""

from __future__ import annotations

import time
from typing import Any, Callable

import torch
from torch import nn

from .defenses.base import Defense, Stage
from .data.transforms import random_shift
from .errors import ConfigError
from .progress import task
from .scenario import ClassifierSpec

MAX_SHIFT = 2  # pixels of random translation when a stage augments (digits are never flipped)


def make_optimizer(stage: Stage, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if stage.optimizer == "adam":
        return torch.optim.Adam(params, lr=stage.lr, weight_decay=stage.weight_decay)
    if stage.optimizer == "sgd":
        return torch.optim.SGD(params, lr=stage.lr, momentum=stage.momentum, weight_decay=stage.weight_decay)
    raise ConfigError(f"stage {stage.name!r}: unknown optimizer {stage.optimizer!r} (adam or sgd)")


def train_classifier(
    model: nn.Module,
    defense: Defense,
    x: torch.Tensor,
    y: torch.Tensor,
    budget: ClassifierSpec,
    *,
    device: torch.device,
    seed: int,
    description: str = "train",
    after_stage: Callable[[Stage, nn.Module], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Train `model` (already `defense.prepare`d) on (x, y) through every stage of `defense`.

    Returns one log row per epoch: stage, epoch, loss, train accuracy, learning rate, seconds, and
    whatever the defense's `on_epoch_start` hook reported (e.g. a schedule value). `after_stage`, if
    given, is called with the model in eval mode at the end of each stage; what it returns is logged
    as that stage's row with epoch=None (e.g. the confidence distribution before CA).
    """
    gen = torch.Generator().manual_seed(seed)
    model.to(device)
    history: list[dict[str, Any]] = []
    n = len(x)
    for stage in defense.stages(budget):
        params = [p for p in model.parameters() if p.requires_grad]
        opt = make_optimizer(stage, params)
        steps = sorted({max(1, round(m * stage.epochs)) for m in stage.milestones})
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=steps, gamma=stage.lr_decay)
        batches = (n + budget.batch_size - 1) // budget.batch_size
        with task(f"{description} [{stage.name}]", stage.epochs * batches) as advance:
            for epoch in range(stage.epochs):
                logged = defense.on_epoch_start(stage, epoch)
                model.train()
                t0 = time.perf_counter()
                perm = torch.randperm(n, generator=gen)
                total_loss, correct, seen = 0.0, 0, 0
                for b in range(batches):
                    idx = perm[b * budget.batch_size : (b + 1) * budget.batch_size]
                    if len(idx) < 2:  # batch norm cannot train on a single sample
                        advance()
                        continue
                    xb = x[idx]
                    if stage.augment:
                        xb = random_shift(xb, MAX_SHIFT, gen)
                    xb, yb = xb.to(device), y[idx].to(device)
                    logits, extras = defense.forward(model, xb)
                    loss = defense.loss(stage, logits, yb, extras)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"{description} [{stage.name}] epoch {epoch}: loss is {loss.item()}")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total_loss += loss.item() * len(idx)
                    correct += (logits.argmax(1) == yb).sum().item()
                    seen += len(idx)
                    advance(info=f"loss {loss.item():.4f}")
                history.append({
                    "stage": stage.name, "epoch": epoch, "loss": total_loss / max(seen, 1),
                    "train_acc": correct / max(seen, 1), "lr": opt.param_groups[0]["lr"],
                    "seconds": time.perf_counter() - t0, **logged,
                })
                sched.step()
        if after_stage is not None:
            model.eval()
            history.append({"stage": stage.name, "epoch": None, **after_stage(stage, model)})
    model.eval()
    return history
