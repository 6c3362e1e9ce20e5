"""The one classifier training loop. Defenses enter through their stages, `forward`, `loss` and hooks."""

from __future__ import annotations

import time
from typing import Any, Callable

import torch
from torch import nn

from .defenses.base import Defense, Stage
from .data.transforms import random_shift
from .errors import ConfigError, TrainingError
from .progress import task
from .scenario import ClassifierSpec

MAX_SHIFT = 2  # pixels of random translation when a stage augments (digits are never flipped)


def train_classifier(
    model: nn.Module,
    defense: Defense,
    x: torch.Tensor,
    y: torch.Tensor,
    budget: ClassifierSpec,
    public: tuple[torch.Tensor, torch.Tensor] | None = None,
    *,
    device: torch.device,
    seed: int,
    description: str = "train",
    after_stage: Callable[[Stage, nn.Module], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Train `model` (already `defense.prepare`d) on the private (x, y) through every stage of
    `defense`; a stage with `data="public"` trains on `public` (labelled public data, e.g. TL-DMI's
    pre-training — the defender may own labels the attacker never sees).

    Returns one log row per epoch: stage, epoch, loss, train accuracy, learning rate, seconds, and
    whatever the defense's `on_epoch_start` hook reported (e.g. a schedule value). `after_stage`, if
    given, is called with the model in eval mode at the end of each stage; what it returns is logged
    as that stage's row with epoch=None (e.g. the confidence distribution before CA).
    """
    gen = torch.Generator().manual_seed(seed)
    model.to(device)
    history: list[dict[str, Any]] = []
    for stage in defense.stages(budget):
        if stage.data == "public":
            if public is None:
                raise ConfigError(f"stage {stage.name!r} trains on public data, but none was given")
            sx, sy = public
        elif stage.data == "private":
            sx, sy = x, y
        else:
            raise ConfigError(f"stage {stage.name!r}: data={stage.data!r} (private or public)")
        n = len(sx)
        defense.on_stage_start(stage, model)
        model.to(device)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = defense.make_optimizer(stage, model, params, n, budget.batch_size)
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
                    xb = sx[idx]
                    if stage.augment:
                        xb = random_shift(xb, MAX_SHIFT, gen)
                    xb, yb = xb.to(device), sy[idx].to(device)
                    logits, extras = defense.forward(model, xb)
                    loss = defense.loss(stage, logits, yb, extras)
                    if not torch.isfinite(loss):
                        raise TrainingError(f"{description} [{stage.name}] epoch {epoch}: loss became {loss.item()}; "
                                            "lower the learning rate or the loss weights")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    defense.after_step(stage, model, xb, yb)
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
