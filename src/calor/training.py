"""The one classifier training loop. Defenses enter through their stages, `forward`, `loss` and hooks."""

from __future__ import annotations

import math
import time
import warnings
from typing import Any, Callable

import torch
from torch import nn

from . import parallel
from .checkpoint import Checkpointer, no_checkpoints, rng_state, set_rng_state
from .defenses.base import Defense, Stage
from .data.transforms import random_flip, random_shift
from .runtime import autocast, grad_scaler, memory_format
from .errors import ConfigError, DataError, TrainingError
from .progress import task
from .scenario import ClassifierSpec

MAX_SHIFT = 2  # pixels of random translation when a stage augments (digits are never flipped)
PROGRESS_EVERY = 20  # batches between progress-text updates (each one reads the loss from the device)


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
    checkpoint: Checkpointer | None = None,
) -> list[dict[str, Any]]:
    """Train `model` (already `defense.prepare`d) on the private (x, y) through every stage of
    `defense`; a stage with `data="public"` trains on `public` (labelled public data, e.g. TL-DMI's
    pre-training — the defender may own labels the attacker never sees).

    Returns one log row per epoch: stage, epoch, loss, train accuracy, learning rate, seconds, and
    whatever the defense's `on_epoch_start` hook reported (e.g. a schedule value). `after_stage`, if
    given, is called with the model in eval mode at the end of each stage; what it returns is logged
    as that stage's row with epoch=None (e.g. the confidence distribution before CA).

    With a `checkpoint`, a snapshot (model, optimiser, RNG states, history) is written between epochs when
    due, and a snapshot of an interrupted run is resumed: the stages before it replay only their
    `on_stage_start` (head swaps, freezing), then training continues at the saved epoch.
    """
    gen = torch.Generator().manual_seed(seed)
    model.to(device)
    history: list[dict[str, Any]] = []
    ckpt = checkpoint if checkpoint is not None and defense.resumable else no_checkpoints()
    resumed = ckpt.load()
    resume_stage, resume_epoch = (resumed[0]["stage"], resumed[0]["epoch"]) if resumed else (0, 0)
    # Data-parallel (torchrun): every process draws the same global batch and keeps its share (parallel.py).
    dp = parallel.current()
    if dp is not None and not defense.data_parallel:
        raise ConfigError(f"defense {defense.name!r} keeps per-process state or a batch-level loss and cannot train "
                          "data-parallel; run it in a single process")
    world = dp.world if dp is not None else 1
    with parallel.global_batch_norm(model):
        _train_stages(model, defense, x, y, budget, public, device=device, gen=gen, description=description,
                      after_stage=after_stage, ckpt=ckpt, resumed=resumed, resume_stage=resume_stage, history=history,
                      dp=dp, world=world)
    model.eval()
    return history


def _train_stages(model: nn.Module, defense: Defense, x: torch.Tensor, y: torch.Tensor, budget: ClassifierSpec,
                  public: tuple[torch.Tensor, torch.Tensor] | None, *, device: torch.device, gen: torch.Generator,
                  description: str, after_stage: Callable[[Stage, nn.Module], dict[str, Any]] | None, ckpt: Checkpointer,
                  resumed: Any, resume_stage: int, history: list[dict[str, Any]], dp: parallel.DataParallel | None,
                  world: int) -> None:
    for stage_index, stage in enumerate(defense.stages(budget)):
        if stage_index < resume_stage:
            defense.on_stage_start(stage, model)
            continue
        if stage.data == "public":
            if public is None:
                raise ConfigError(f"stage {stage.name!r} trains on public data, but none was given")
            sx, sy = public
        elif stage.data == "private":
            sx, sy = x, y
        else:
            raise ConfigError(f"stage {stage.name!r}: data={stage.data!r} (private or public)")
        n = len(sx)
        if len(sy) != n or sy.dtype not in (torch.int64, torch.int32) or (n and int(sy.min()) < 0):
            raise DataError(f"stage {stage.name!r}: need one non-negative integer label per image "
                            f"({n} images, {len(sy)} labels of dtype {sy.dtype})")
        if budget.batch_size < 2 * world:
            raise ConfigError(f"batch_size={budget.batch_size} is the global batch: it must be at least 2 per process "
                              f"({world} processes)")
        if device.type == "cuda":  # the split fits in GPU memory: copy it once instead of every batch
            sx, sy = sx.pin_memory().to(device, non_blocking=True), sy.to(device)
            model.to(memory_format=memory_format())
        defense.on_stage_start(stage, model)
        model.to(device)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = defense.make_optimizer(stage, model, params, n, budget.batch_size)
        scaler = grad_scaler(device)
        steps = sorted({max(1, round(m * stage.epochs)) for m in stage.milestones})
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=steps, gamma=stage.lr_decay)
        batches = (n + budget.batch_size - 1) // budget.batch_size
        first_epoch = 0
        if resumed is not None and stage_index == resume_stage:
            state = resumed[0]
            model.load_state_dict(state["model"])
            with warnings.catch_warnings():  # stepping a fresh scheduler to the saved epoch, before any optimiser step
                warnings.simplefilter("ignore", UserWarning)
                for _ in range(state["epoch"]):
                    sched.step()
            opt.load_state_dict(state["optimizer"])
            set_rng_state(state["rng"], gen)
            history[:], first_epoch = state["history"], state["epoch"]
        with task(f"{description} [{stage.name}]", stage.epochs * batches) as advance:
            advance(first_epoch * batches)
            for epoch in range(first_epoch, stage.epochs):
                if epoch > first_epoch and ckpt.due() and parallel.is_writer():
                    ckpt.save(f"stage {stage.name} epoch {epoch}/{stage.epochs}",
                              {"stage": stage_index, "epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                               "rng": rng_state(gen), "history": history}, order=stage_index * 100_000 + epoch)
                logged = defense.on_epoch_start(stage, epoch)
                model.train()
                t0 = time.perf_counter()
                perm = torch.randperm(n, generator=gen)
                # Sums stay on the device: reading a value (`.item()`, `if tensor`) waits for the device,
                # so the loop reads them once per epoch and the progress text every PROGRESS_EVERY steps.
                total_loss = torch.zeros((), dtype=torch.float64, device=device)
                correct = torch.zeros((), dtype=torch.long, device=device)
                seen = 0
                for b in range(batches):
                    idx = perm[b * budget.batch_size : (b + 1) * budget.batch_size]
                    if len(idx) < 2 * world:  # batch norm cannot train on a single sample (per process)
                        advance()
                        continue
                    xb = sx[idx.to(sx.device)]
                    if stage.augment:
                        xb = random_shift(xb, MAX_SHIFT, gen)
                        if budget.flip:
                            xb = random_flip(xb, gen)
                    yb = sy[idx.to(sy.device)]
                    if dp is not None:  # augmented as one global batch (same random draws), then this process's part
                        part = dp.share(len(idx))
                        xb, yb = xb[part], yb[part]
                    # One memory layout for every stage: channels-last convolutions ran 1.36x faster here
                    # (BENCHMARKS.md), and with one channel a shifted batch already had those strides while an
                    # un-augmented one (a fine-tune stage) did not. (`.contiguous(memory_format=...)` would
                    # keep a one-channel batch's strides; `.to(memory_format=...)` sets them.)
                    xb = xb.to(device, memory_format=memory_format())
                    yb = yb.to(device)
                    with autocast(device):
                        logits, extras = defense.forward(model, xb)
                        if b == 0 and epoch == first_epoch and int(sy.max()) >= logits.shape[1]:
                            raise DataError(f"stage {stage.name!r}: labels go up to {int(sy.max())}, but the model predicts "
                                            f"{logits.shape[1]} classes (labels must be 0..{logits.shape[1] - 1})")
                        loss = defense.loss(stage, logits, yb, extras)
                    opt.zero_grad(set_to_none=True)
                    # Each process's mean loss weighted by its share of the global batch: the summed gradients
                    # are those of the global batch's mean loss.
                    scaler.scale(loss * (len(xb) / len(idx))).backward()
                    if dp is not None:
                        scaler.unscale_(opt)
                        parallel.sum_gradients(params, dp)
                    scaler.step(opt)
                    scaler.update()
                    defense.after_step(stage, model, xb, yb)
                    total_loss += loss.detach() * len(xb)
                    correct += (logits.detach().argmax(1) == yb).sum()
                    seen += len(xb)
                    advance(info=f"loss {loss.item():.4f}" if b % PROGRESS_EVERY == 0 else None)
                if dp is not None:  # the epoch's figures over every process
                    sums = parallel.all_reduce_(torch.stack([total_loss, correct.double(),
                                                             torch.tensor(float(seen), dtype=torch.float64, device=device)]))
                    total_loss, correct, seen = sums[0], sums[1], int(sums[2].item())
                epoch_loss = total_loss.item() / max(seen, 1)
                if not math.isfinite(epoch_loss):
                    raise TrainingError(f"{description} [{stage.name}] epoch {epoch}: the loss became {epoch_loss}; "
                                        "lower the learning rate or the loss weights")
                history.append({
                    "stage": stage.name, "epoch": epoch, "loss": epoch_loss,
                    "train_acc": float(correct.item()) / max(seen, 1), "lr": opt.param_groups[0]["lr"],
                    "seconds": time.perf_counter() - t0, **logged,
                })
                sched.step()
        if after_stage is not None:
            model.eval()
            history.append({"stage": stage.name, "epoch": None, **after_stage(stage, model)})
