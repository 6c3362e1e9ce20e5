"""`bido`: bilateral dependency optimisation with the HSIC bottleneck.

Peng, Liu, Zhang, Lan, Ye, Liu, Han, "Bilateral Dependency Optimization: Defending Against
Model-inversion Attacks", KDD 2022 (arXiv 2206.05483). On a few hidden layers Z_j (outputs of chosen
entries of `model.hidden_layers()`, flattened per sample) the loss is

    CE + lambda_xz * sum_j nHSIC(X, Z_j) - lambda_yz * sum_j nHSIC(Y, Z_j)

with X the flattened input batch and Y the one-hot labels: keep little of the input in the
representations (what an inverter exploits) while keeping what predicts the label.
As in the authors' code (BiDO/engine.py calls hsic.hsic_objective with sigma = 5; hsic.py itself, taken
from the HSIC-bottleneck code, was read in public copies of it, not in the BiDO repository):
- Gaussian kernel k(a, b) = exp(-|a - b|^2 / (2 sigma^2 n)), sigma = 5, n = the flattened dimension
  (the bandwidth is scaled by the dimension); the label kernel is linear (Y Y^T), the default
  `--ktype=linear` of their train_HSIC.py (`label_kernel = gaussian` switches it).
- normalised HSIC ("hsic_normalized_cca"): Kc = K H (H the centring matrix),
  R = Kc (Kc + eps m I)^-1 with eps = 1e-5, nHSIC = sum(Rx * Ry^T) = tr(Rx Ry).
  `estimator = biased` uses the biased estimator tr(Kx H Ky H) / (m - 1)^2 instead.
Defaults (lambda_xz, lambda_yz) = (0.05, 0.5) are the paper's CelebA/HSIC setting; MNIST used the COCO
variant with (1, 50) (COCO is not implemented here). Layers: three evenly spaced hidden layers by
default, including the penultimate block (their MNIST net regularises all three of its conv blocks).
Deviation: the estimators are computed in float64 (a solve instead of an explicit inverse) for
stability; the kernels are the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, collect
from .base import DEFENSES, Defense, Stage

NORMALISED_EPS = 1e-5  # ridge of the normalised estimator, as in the authors' code


def gaussian_kernel(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """exp(-|x_i - x_j|^2 / (2 sigma^2 n)) for the rows of x (m, n) — BiDO's dimension-scaled bandwidth."""
    sq = x.pow(2).sum(1, keepdim=True)
    dist = (sq + sq.T - 2.0 * x @ x.T).clamp_min(0.0)  # explicit form: cdist's sqrt has no gradient at 0
    return torch.exp(-dist / (2.0 * sigma * sigma * x.shape[1]))


def linear_kernel(x: torch.Tensor) -> torch.Tensor:
    return x @ x.T


def _centring(m: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(m, dtype=like.dtype, device=like.device) - 1.0 / m


def hsic_factor(k: torch.Tensor, estimator: str = "normalized") -> torch.Tensor:
    """F(K) with HSIC(a, b) = sum(F(Ka) * F(Kb)^T) = tr(F(Ka) F(Kb)), in float64.

    normalized (authors' code): F = K H (K H + eps m I)^-1 — K H and its shifted inverse commute, so
    this is solve(K H + eps m I, K H); biased: F = K H / (m - 1), giving tr(Ka H Kb H) / (m - 1)^2.
    Factoring lets BiDO compute the input's and the labels' factors once per batch, not once per layer.
    """
    m = k.shape[0]
    kc = k.double() @ _centring(m, k.double())
    if estimator == "biased":
        return kc / (m - 1)
    ridge = NORMALISED_EPS * m * torch.eye(m, dtype=kc.dtype, device=kc.device)
    return torch.linalg.solve(kc + ridge, kc)


def hsic_from_factors(fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
    return (fa * fb.T).sum()


def hsic_biased(kx: torch.Tensor, ky: torch.Tensor) -> torch.Tensor:
    """Biased HSIC estimator tr(Kx H Ky H) / (m - 1)^2 from two m x m kernel matrices."""
    return hsic_from_factors(hsic_factor(kx, "biased"), hsic_factor(ky, "biased"))


def hsic_normalized(kx: torch.Tensor, ky: torch.Tensor) -> torch.Tensor:
    """Normalised HSIC of the authors' code: tr(Rx Ry), R = K H (K H + eps m I)^-1.

    Roughly the number of centred kernel directions the two share: close to the rank of the smaller
    (centred) kernel when one determines the other, small when they are unrelated.
    """
    return hsic_from_factors(hsic_factor(kx), hsic_factor(ky))


def _kernel(x: torch.Tensor, kind: str, sigma: float) -> torch.Tensor:
    return gaussian_kernel(x, sigma) if kind == "gaussian" else linear_kernel(x)


def hsic(x: torch.Tensor, y: torch.Tensor, *, sigma: float = 5.0, y_kernel: str = "gaussian", estimator: str = "normalized") -> torch.Tensor:
    """HSIC between the rows of x and y (flattened per sample): Gaussian kernel on x, `y_kernel` on y."""
    x, y = x.flatten(1), y.flatten(1)
    if len(x) != len(y):
        raise ValueError(f"hsic: {len(x)} and {len(y)} samples")
    fx = hsic_factor(gaussian_kernel(x, sigma), estimator)
    fy = hsic_factor(_kernel(y, y_kernel, sigma), estimator)
    return hsic_from_factors(fx, fy).to(x.dtype)


def evenly_spaced(n: int, k: int) -> tuple[int, ...]:
    """k indices spread evenly over 0..n-1, first and last included (n = 4, k = 3 -> 0, 2, 3)."""
    if k <= 1 or n <= 1:
        return (n - 1,)
    return tuple(sorted({int(math.floor(i * (n - 1) / (k - 1) + 0.5)) for i in range(min(k, n))}))


@dataclass(frozen=True)
class BiDOConfig:
    """layers: indices into `model.hidden_layers()` (None = `num_layers` evenly spaced ones)."""

    lambda_xz: float = 0.05
    lambda_yz: float = 0.5
    sigma: float = 5.0
    layers: tuple[int, ...] | None = None
    num_layers: int = 3
    label_kernel: str = "linear"
    estimator: str = "normalized"

    def __post_init__(self) -> None:
        p = []
        if self.lambda_xz < 0 or self.lambda_yz < 0:
            p.append(f"lambda_xz={self.lambda_xz}, lambda_yz={self.lambda_yz}: must be >= 0 (the signs are in the loss)")
        if self.sigma <= 0:
            p.append(f"sigma={self.sigma}: must be > 0")
        if self.layers is not None and (not self.layers or any(i < 0 for i in self.layers) or len(set(self.layers)) != len(self.layers)):
            p.append(f"layers={self.layers}: distinct indices >= 0 into model.hidden_layers() (or unset)")
        if self.num_layers < 1:
            p.append(f"num_layers={self.num_layers}: must be >= 1")
        if self.label_kernel not in ("linear", "gaussian"):
            p.append(f"label_kernel={self.label_kernel!r}: choose linear or gaussian")
        if self.estimator not in ("normalized", "biased"):
            p.append(f"estimator={self.estimator!r}: choose normalized or biased")
        collect(p, "bido settings")


@DEFENSES.register("bido")
class BiDO(Defense):
    """CE plus HSIC bottleneck terms on chosen hidden layers (captured with forward hooks)."""

    name = "bido"
    data_parallel = False  # HSIC is a batch-level statistic, not a mean over samples
    paper = "Peng et al., KDD 2022 (arXiv 2206.05483)"
    Config = BiDOConfig

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.layer_indices: tuple[int, ...] = ()
        self._sums = torch.zeros(2, dtype=torch.float64)
        self._batches = 0

    def prepare(self, model: nn.Module) -> nn.Module:
        hidden = getattr(model, "hidden_layers", None)
        if hidden is None:
            raise ConfigError("bido: the model does not expose hidden_layers()")
        n = len(hidden())
        if self.config.layers is None:
            self.layer_indices = evenly_spaced(n, self.config.num_layers)
        else:
            bad = [i for i in self.config.layers if i >= n]
            if bad:
                raise ConfigError(f"bido: layers {bad} out of range; the model has {n} hidden layers (0..{n - 1})")
            self.layer_indices = tuple(self.config.layers)
        return model

    @property
    def active(self) -> bool:
        return self.config.lambda_xz > 0 or self.config.lambda_yz > 0

    def forward(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        if not self.active:  # strength 0: exactly plain training, no HSIC cost
            return model(x), {}
        if not self.layer_indices:
            raise ConfigError("bido: forward before prepare (no hidden layers chosen)")
        layers = model.hidden_layers()
        captured: dict[int, torch.Tensor] = {}
        handles = [layers[i].register_forward_hook(lambda _m, _inp, out, i=i: captured.__setitem__(i, out))
                   for i in self.layer_indices]
        try:
            logits = model(x)
        finally:
            for h in handles:
                h.remove()
        return logits, {"inputs": x, "hiddens": [captured[i].flatten(1) for i in self.layer_indices]}

    def on_epoch_start(self, stage: Stage, epoch: int) -> dict[str, float]:
        self._sums, self._batches = torch.zeros(2, dtype=torch.float64), 0
        return {}

    def loss(self, stage: Stage, logits: torch.Tensor, y: torch.Tensor, extras: dict[str, Any]) -> torch.Tensor:
        ce = F.cross_entropy(logits, y)
        if not self.active:
            return ce
        cfg = self.config
        with torch.no_grad():  # the input's and the labels' sides are constants of the batch
            f_data = hsic_factor(gaussian_kernel(extras["inputs"].flatten(1), cfg.sigma), cfg.estimator)
            onehot = F.one_hot(y, logits.shape[1]).to(logits.dtype)
            f_label = hsic_factor(_kernel(onehot, cfg.label_kernel, cfg.sigma), cfg.estimator)
        hxz = logits.new_zeros((), dtype=torch.float64)
        hyz = logits.new_zeros((), dtype=torch.float64)
        for z in extras["hiddens"]:
            f_z = hsic_factor(gaussian_kernel(z, cfg.sigma), cfg.estimator)
            hxz = hxz + hsic_from_factors(f_z, f_data)
            hyz = hyz + hsic_from_factors(f_z, f_label)
        self._sums += torch.stack([hxz.detach(), hyz.detach()]).cpu()
        self._batches += 1
        return ce + (cfg.lambda_xz * hxz - cfg.lambda_yz * hyz).to(ce.dtype)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"layers": list(self.layer_indices)}
        if self._batches:
            mean = (self._sums / self._batches).tolist()
            out.update({"last_epoch_hsic_xz": mean[0], "last_epoch_hsic_yz": mean[1]})
        return out
