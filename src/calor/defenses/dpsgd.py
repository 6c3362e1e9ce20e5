"""DP-SGD: differentially private training with per-sample gradient clipping and Gaussian noise.

Abadi et al., "Deep Learning with Differential Privacy", CCS 2016, through Opacus 1.6
(Yousefpour et al., "Opacus: User-Friendly Differential Privacy Library in PyTorch", 2021). Model-inversion
papers (GMI, Zhang et al. CVPR 2020) use it as a baseline and found it "of little avail" against
inversion at a usable accuracy.

Each step: per-sample gradients (opacus `GradSampleModule`), each clipped to L2 norm <= max_grad_norm,
summed, Gaussian noise N(0, (noise_multiplier * max_grad_norm)^2 I) added, divided by the batch size
(opacus `DPOptimizer` wrapping the stage's Adam/SGD). The privacy budget epsilon at delta (default 1/N,
N = private training-set size) is tracked by an opacus accountant (RDP by default, PRV optional) with
sample rate q = batch_size / N and one accountant step per optimiser step, and recorded by `summary`.

Choices and deviations, stated:
- BatchNorm mixes samples of a batch, so per-sample gradients and DP are undefined with it: `prepare`
  replaces every BatchNorm with GroupNorm (deterministically, so a saved target is rebuilt identically)
  and checks the result with opacus' `ModuleValidator.validate`. BatchNorm2d -> GroupNorm(gcd(32, C), C),
  opacus' own default; BatchNorm1d on flat features -> GroupNorm(1, C) (layer norm), unlike opacus'
  `ModuleValidator.fix`, whose gcd(32, C) groups hold a single feature each when C <= 32 and then
  output a constant. In-place ReLUs become out-of-place (opacus' backward hooks forbid in-place
  changes of a hooked layer's output); that changes no weights or results.
- The accountant assumes Poisson sampling with rate q; the training loop draws shuffled fixed-size
  batches (every sample once per epoch). Reporting epsilon this way is common practice, but it is
  an approximation of the guarantee, not a proof for this exact sampler.
- The optimiser is the stage's (the scenario budget's Adam and learning rate), wrapped by DPOptimizer;
  the post-processing property makes the choice of optimiser irrelevant to the accounting.
- With noise_multiplier = 0 there is no privacy guarantee: `summary` reports epsilon = None (infinite).
- Opacus' per-sample-gradient hooks stay attached to the in-memory model after training but are disabled
  between optimiser steps, so later forward/backward passes (attacks, metrics) are plain PyTorch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, collect
from .base import DEFENSES, Defense, Stage, build_optimizer

ACCOUNTANTS = ("rdp", "prv")


def _group_norm_for(bn: nn.modules.batchnorm._BatchNorm) -> nn.GroupNorm:
    c = bn.num_features
    # Conv maps: opacus' default gcd(32, C) groups. Flat features (BatchNorm1d on (N, C)): one group, i.e.
    # layer norm over the features -- with gcd(32, C) groups of C/32 values, a small feature layer would
    # get groups of a single value, which GroupNorm maps to a constant.
    groups = 1 if isinstance(bn, nn.BatchNorm1d) else math.gcd(32, c)
    return nn.GroupNorm(groups, c, eps=bn.eps, affine=bn.affine)


def _replace_batchnorm(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, _group_norm_for(child))
        else:
            _replace_batchnorm(child)


def make_dp_compatible(model: nn.Module) -> nn.Module:
    """BatchNorm -> GroupNorm (see `_group_norm_for`), in-place ReLUs made out-of-place, checked with
    opacus' `ModuleValidator`; raises ConfigError if anything DP-incompatible is left."""
    from opacus.validators import ModuleValidator

    _replace_batchnorm(model)
    for m in model.modules():
        # Opacus' full backward hooks forbid modifying a hooked layer's output in place.
        if isinstance(m, nn.ReLU):
            m.inplace = False
    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise ConfigError("dpsgd: the model has layers DP-SGD cannot train: " + "; ".join(str(e) for e in errors))
    return model


def make_accountant(kind: str) -> Any:
    from opacus.accountants import PRVAccountant, RDPAccountant

    return {"rdp": RDPAccountant, "prv": PRVAccountant}[kind]()


@dataclass(frozen=True)
class DPSGDConfig:
    """noise_multiplier sigma and max_grad_norm C (common defaults 1.0 / 1.0); delta None = 1/N;
    accountant: rdp (default) or prv."""

    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    delta: float | None = None
    accountant: str = "rdp"

    def __post_init__(self) -> None:
        p = []
        if self.noise_multiplier < 0:
            p.append(f"noise_multiplier={self.noise_multiplier}: must be >= 0 (0 = clipping only, no privacy)")
        if self.max_grad_norm <= 0:
            p.append(f"max_grad_norm={self.max_grad_norm}: per-sample clipping bound, must be > 0")
        if self.delta is not None and not 0 < self.delta < 1:
            p.append(f"delta={self.delta}: must be in (0, 1) (or none for 1/N)")
        if self.accountant not in ACCOUNTANTS:
            p.append(f"accountant={self.accountant!r}: choose one of {list(ACCOUNTANTS)}")
        collect(p, "dpsgd settings")


@DEFENSES.register("dpsgd")
class DPSGD(Defense):
    """Per-sample clipping + Gaussian noise with Opacus; reports (epsilon, delta)."""

    name = "dpsgd"
    data_parallel = False  # per-sample clipping and the privacy accountant are per process
    resumable = False  # the privacy accountant lives outside the model and optimiser a checkpoint holds
    paper = "Abadi et al., Deep Learning with Differential Privacy, CCS 2016 (via Opacus 1.6)"
    Config = DPSGDConfig

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self._gsm: Any = None  # opacus GradSampleModule around the model being trained
        self.accountant: Any = None
        self.sample_rate: float | None = None
        self.num_samples: int | None = None

    def prepare(self, model: nn.Module) -> nn.Module:
        return make_dp_compatible(model)

    def make_optimizer(self, stage: Stage, model: nn.Module, params: list[nn.Parameter], num_samples: int, batch_size: int) -> torch.optim.Optimizer:
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer

        if self._gsm is None or self._gsm._module is not model:
            self._gsm = GradSampleModule(model, batch_first=True, loss_reduction="mean", strict=True)
        self._gsm.disable_hooks()  # enabled only around a training step (see forward / after_step)
        self.num_samples = num_samples
        self.sample_rate = min(1.0, batch_size / num_samples)
        if self.accountant is None:  # one privacy ledger across stages
            self.accountant = make_accountant(self.config.accountant)
        opt = DPOptimizer(build_optimizer(stage, params), noise_multiplier=self.config.noise_multiplier,
                          max_grad_norm=self.config.max_grad_norm, expected_batch_size=batch_size, loss_reduction="mean")
        opt.attach_step_hook(self.accountant.get_optimizer_hook_fn(sample_rate=self.sample_rate))
        return opt

    def forward(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        if self._gsm is None:
            raise ConfigError("dpsgd: forward before make_optimizer; train through calor.training.train_classifier")
        self._gsm.enable_hooks()
        return self._gsm(x), {}

    def after_step(self, stage: Stage, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        # Outside a training step the hooks must be inert (an attack's backward pass has no stored activations).
        self._gsm.disable_hooks()
        for p in model.parameters():
            p.grad_sample = None  # free the per-sample gradients of the finished step

    @property
    def steps(self) -> int:
        # accountants merge consecutive identical steps into one (sigma, q, count) history entry
        return sum(int(h[2]) for h in self.accountant.history) if self.accountant is not None else 0

    def epsilon(self) -> float | None:
        """Epsilon spent so far at `delta` (None when infinite, i.e. noise_multiplier = 0)."""
        if self.accountant is None or self.num_samples is None or self.steps == 0:
            return 0.0
        if self.config.noise_multiplier == 0:
            return None
        eps = float(self.accountant.get_epsilon(delta=self.delta()))
        return eps if eps != float("inf") else None

    def delta(self) -> float:
        if self.config.delta is not None:
            return self.config.delta
        if not self.num_samples:
            raise ConfigError("dpsgd: delta = 1/N needs the training-set size; train first or set delta")
        return 1.0 / self.num_samples

    def summary(self) -> dict[str, Any]:
        return {
            "epsilon": self.epsilon(),
            "delta": self.delta() if (self.config.delta is not None or self.num_samples) else None,
            "accountant": self.config.accountant,
            "steps": self.steps,
            "sample_rate": self.sample_rate,
            "num_samples": self.num_samples,
            "noise_multiplier": self.config.noise_multiplier,
            "max_grad_norm": self.config.max_grad_norm,
            "sampling": "shuffled fixed-size batches; epsilon assumes Poisson sampling at sample_rate",
        }
