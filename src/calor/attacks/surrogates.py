"""Shared helpers for attacks that use the target's outputs on public data: soft labels, knowledge
distillation of surrogate classifiers, and the target's penultimate features.

Every helper reaches the target only through an oracle, so queries are counted; `distill` never sees
the target at all (it gets the soft labels), so it serves black-box attacks too.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import Checkpointer, no_checkpoints, resume_loop, snapshot_loop
from ..errors import ConfigError, ThreatModelError
from ..models.classifiers import Classifier
from ..progress import task
from .oracle import BlackBoxOracle, WhiteBoxOracle


@torch.no_grad()
def soft_labels(oracle: BlackBoxOracle, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The target's softmax outputs on `images` (N, K), on the CPU; costs len(images) queries."""
    return torch.cat([oracle.probs(images[i:i + batch_size]).cpu() for i in range(0, len(images), batch_size)])


def soft_cross_entropy(logits: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Batch mean of -sum_k p_k log softmax(logits)_k (cross-entropy against soft labels)."""
    return -(probs * F.log_softmax(logits, dim=1)).sum(1).mean()


def distillation_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Hinton KD: KL(teacher_T || student_T) * T^2, batch mean. `teacher_probs` are the teacher's softmax at
    temperature 1 (what an oracle returns); they are re-tempered through their logarithms."""
    t = temperature
    teacher = F.softmax(torch.log(teacher_probs.clamp_min(1e-12)) / t, dim=1) if t != 1.0 else teacher_probs
    return F.kl_div(F.log_softmax(student_logits / t, dim=1), teacher, reduction="batchmean") * t * t


def distill(student: nn.Module, images: torch.Tensor, teacher_probs: torch.Tensor, *, epochs: int, batch_size: int,
            lr: float, gen: torch.Generator, device: torch.device, temperature: float = 1.0,
            description: str = "distill surrogate", checkpoint: Checkpointer | None = None) -> list[dict[str, Any]]:
    """Train `student` (in place) to match `teacher_probs` on `images` with the KD loss and Adam.

    Returns one log row per epoch (mean KD loss and top-1 agreement with the teacher). The student is
    left in eval mode. With a `checkpoint`, snapshots between epochs and at the end (so that a build training
    several surrogates in a row resumes after the finished ones), and resumes an interrupted run."""
    student.to(device).train()
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    n, bs = len(images), min(batch_size, len(images))
    ckpt = checkpoint or no_checkpoints()
    parts = {"student": student, "opt": opt}
    start, saved = resume_loop(ckpt, parts, gen)
    log: list[dict[str, Any]] = saved.get("log", [])
    with task(description, epochs) as advance:
        advance(start)
        for epoch in range(start, epochs):
            if epoch > start:
                snapshot_loop(ckpt, epoch, epochs, parts, gen, {"log": log})
            order = torch.randperm(n, generator=gen)
            total, agree = 0.0, 0
            for i in range(0, n - bs + 1, bs):  # drop the ragged last batch (BatchNorm needs > 1 sample)
                idx = order[i:i + bs]
                x, p = images[idx].to(device), teacher_probs[idx].to(device)
                logits = student(x)
                loss = distillation_loss(logits, p, temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
                agree += (logits.argmax(1) == p.argmax(1)).sum().item()
            seen = (n // bs) * bs
            log.append({"epoch": epoch, "kd_loss": total / max(seen, 1), "agreement": agree / max(seen, 1)})
            advance(info=f"KD {log[-1]['kd_loss']:.3f}")
    if start < epochs:
        snapshot_loop(ckpt, epochs, epochs, parts, gen, {"log": log}, force=True)
    student.eval()
    return log


def logits_and_features(oracle: WhiteBoxOracle, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The target's logits and penultimate features for `images` in one forward pass through the oracle
    (so the images are counted as queries): the features are the input of the classifier's `head`,
    captured by a forward pre-hook. Differentiable when `images` is."""
    module = oracle.module
    head = getattr(module, "head", None)
    if not isinstance(module, Classifier) or not isinstance(head, nn.Module):
        raise ThreatModelError(f"target {type(module).__name__} exposes no classifier head: its features are unavailable")
    captured: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(lambda _m, inputs: captured.append(inputs[0]))
    try:
        logits = oracle.logits(images)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise ThreatModelError(f"target head ran {len(captured)} times in one forward pass; cannot read its features")
    return logits, captured[0]


@torch.no_grad()
def public_features(oracle: WhiteBoxOracle, images: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The target's penultimate features and predicted labels on `images` (CPU); len(images) queries."""
    feats, labels = [], []
    for i in range(0, len(images), batch_size):
        logits, f = logits_and_features(oracle, images[i:i + batch_size])
        feats.append(f.cpu())
        labels.append(logits.argmax(1).cpu())
    return torch.cat(feats), torch.cat(labels)


def budget_of(priors: Any) -> Any:
    """The AttackerBudget of a PriorStore: attack-specific priors size their training from its `prior` and
    `target` budgets so that tiny test scenarios stay tiny."""
    budget = getattr(priors, "budget", None)
    if budget is None:
        raise ConfigError(f"{type(priors).__name__} carries no budget: cannot size this attack's prior training")
    return budget
