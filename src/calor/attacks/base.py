"""The Attack contract: declare a threat model, build a (cacheable) prior, then reconstruct classes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Protocol

import torch

from ..config import from_dict, to_dict
from ..errors import ThreatModelError
from ..registry import Registry
from .oracle import LabelOnlyOracle, ThreatModel

ATTACKS: Registry = Registry("attack")


@dataclass
class Reconstructions:
    """What an attack returns: images (N, C, H, W) in [-1, 1] with the class each one targets."""

    images: torch.Tensor
    labels: torch.Tensor
    latents: torch.Tensor | None = None
    queries: int = 0
    seconds: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)


class PriorStore(Protocol):
    """Gives attacks the priors they need, trained once and cached (implemented by calor.pipeline.Priors)."""

    device: torch.device
    scenario: Any  # the calor.scenario.Scenario being attacked (its budgets size attack-specific priors)

    def gan(self) -> Any:
        """The GanPrior trained on the public split (see calor.attacks.priors)."""
        ...

    def public_images(self) -> torch.Tensor:
        """The attacker's public images (no labels)."""
        ...

    def cached(self, name: str, config: dict[str, Any], build: Callable[[], tuple[dict[str, torch.Tensor], dict[str, Any]]],
               *, depends_on_target: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors + meta of an attack-specific prior, built by `build()` once per config (and target)."""
        ...


@dataclass(frozen=True)
class NoConfig:
    pass


class Attack:
    """Base class. Subclasses set `name`, `threat_model`, `Config` and implement `prepare` and `_run`;
    the base enforces the threat model, seeds, and records queries and wall time."""

    name: ClassVar[str]
    threat_model: ClassVar[ThreatModel]
    Config: ClassVar[type] = NoConfig
    paper: ClassVar[str] = ""

    def __init__(self, config: Any = None) -> None:
        self.config = config if config is not None else self.Config()

    @classmethod
    def from_settings(cls, settings: dict[str, Any] | None = None) -> "Attack":
        return cls(from_dict(cls.Config, dict(settings or {}), f"attack {cls.name!r}"))

    def config_dict(self) -> dict[str, Any]:
        return to_dict(self.config)

    def check_access(self, oracle: LabelOnlyOracle) -> None:
        if not oracle.threat_model.allows(self.threat_model):
            raise ThreatModelError(f"attack {self.name!r} needs {self.threat_model.value} access; oracle grants {oracle.threat_model.value}")

    def prepare(self, oracle: LabelOnlyOracle, priors: PriorStore) -> Any:
        """Build or fetch what the attack needs before reconstructing (GAN, surrogates...)."""
        return None

    def run(self, oracle: LabelOnlyOracle, prior: Any, classes: list[int], per_class: int, seed: int) -> Reconstructions:
        """Reconstruct `per_class` images for every class in `classes`."""
        import time

        self.check_access(oracle)
        start_queries = oracle.queries
        gen = torch.Generator().manual_seed(seed)
        t0 = time.perf_counter()
        rec = self._run(oracle, prior, classes, per_class, gen)
        rec.seconds = time.perf_counter() - t0
        rec.queries = oracle.queries - start_queries
        return rec

    def _run(self, oracle: Any, prior: Any, classes: list[int], per_class: int, gen: torch.Generator) -> Reconstructions:
        raise NotImplementedError


def build_attack(name: str, settings: dict[str, Any] | None = None) -> Attack:
    return ATTACKS.get(name).from_settings(settings)


def describe(attack_cls: type[Attack]) -> dict[str, Any]:
    return {
        "name": attack_cls.name,
        "threat_model": attack_cls.threat_model.value,
        "paper": attack_cls.paper,
        "defaults": to_dict(attack_cls.Config()) if dataclasses.is_dataclass(attack_cls.Config) else {},
    }
