"""The Attack contract: declare a threat model, build a (cacheable) prior, then reconstruct classes."""

from __future__ import annotations

import dataclasses
import hashlib
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator, Protocol

import torch

from ..checkpoint import Checkpointer, no_checkpoints, resume_loop, snapshot_loop
from ..config import from_dict, to_dict
from ..errors import ThreatModelError
from ..registry import Registry
from ..scenario import AttackSpec, ClassifierSpec, PriorSpec
from .oracle import LabelOnlyOracle, ThreatModel

ATTACKS: Registry = Registry("attack")

# An attack's `iterations` left unset takes the run's budget (a scenario's attack.iterations, `calor.audit`'s
# `iterations`) when it is built with one, else this: the one default, the scenario budget's own.
DEFAULT_ITERATIONS = AttackSpec.iterations

# Latents per optimisation batch in the authors' evaluation code (GMI, KED-MI, LOMMA and PLG-MI attack 60
# identities per batch, one latent each, and average the loss over the batch). calor sums per-sample
# losses and divides by this constant instead of by the batch size, so every latent takes the paper's
# step whatever else shares its batch: asking for more reconstructions no longer weakens the attack.
REFERENCE_BATCH = 60


def batch_objective(per_sample: torch.Tensor, reference_batch: int = REFERENCE_BATCH) -> torch.Tensor:
    """sum_i loss_i / reference_batch: latent i's gradient is d loss_i / d z_i / reference_batch, independent of
    how many latents share the batch (a batch mean would scale it by 1 / batch size)."""
    if per_sample.dim() != 1:
        raise ValueError(f"batch_objective expects per-sample losses (N,), got shape {tuple(per_sample.shape)}")
    return per_sample.sum() / reference_batch


def sample_seed(seed: int, label: int, restart: int) -> int:
    """A 63-bit seed for reconstruction `restart` of class `label` in a run seeded `seed`."""
    digest = hashlib.sha256(f"calor-latent/{seed}/{label}/{restart}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def initial_latents(seed: int, classes: list[int], per_class: int, dim: int) -> torch.Tensor:
    """Standard-normal latents (len(classes) * per_class, dim), class-major, where the latent of restart j of
    class c depends only on (seed, c, j): a run with more classes or restarts starts its first latents where a
    smaller run does, and two defenses attacked with the same seed start from the same latents (paired)."""
    rows = [torch.randn(dim, generator=torch.Generator().manual_seed(sample_seed(seed, c, j)))
            for c in classes for j in range(per_class)]
    return torch.stack(rows) if rows else torch.empty(0, dim)


@dataclass
class Reconstructions:
    """What an attack returns: images (N, C, H, W) in [-1, 1] with the class each one targets."""

    images: torch.Tensor
    labels: torch.Tensor
    latents: torch.Tensor | None = None
    queries: int = 0
    seconds: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)
    # latents at evenly spaced steps of the optimisation, (snapshots, N, z_dim), with the generator that maps
    # them (latent-optimisation attacks only): what calor.diagnostics replays against targets
    trajectory: torch.Tensor | None = None
    decode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)  # (z, labels) -> images


@dataclass(frozen=True)
class AttackerBudget:
    """The only scenario settings an attack sees: the budgets that size its own training (a conditional GAN,
    surrogates) so that tiny test scenarios stay tiny. `target` is the architecture and training budget the
    attacker assumes for surrogates (the common "known architecture" assumption), never the target's weights."""

    prior: PriorSpec
    target: ClassifierSpec


class PriorStore(Protocol):
    """What an attack may use besides its oracle: the attacker's public images, the shared GAN prior, a
    cache for attack-specific priors, and its budget. Implemented by `AttackerStore`."""

    device: torch.device
    budget: AttackerBudget

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
class _StoreBackend:
    gan: Callable[[], Any]
    public_images: Callable[[], torch.Tensor]
    cached: Callable[..., tuple[dict[str, torch.Tensor], dict[str, Any]]]


_BACKENDS: "weakref.WeakKeyDictionary[AttackerStore, _StoreBackend]" = weakref.WeakKeyDictionary()


class AttackerStore:
    """The PriorStore handed to attacks. It holds no reference to the scenario, the workspace or the
    private data: its functions live outside the object (as the oracle's target does), so an attack finds
    nothing among its attributes but the device, the budget and the three methods."""

    __slots__ = ("device", "budget", "__weakref__")

    def __init__(self, *, device: torch.device, budget: AttackerBudget, gan: Callable[[], Any],
                 public_images: Callable[[], torch.Tensor], cached: Callable[..., Any]) -> None:
        self.device = device
        self.budget = budget
        _BACKENDS[self] = _StoreBackend(gan, public_images, cached)

    def gan(self) -> Any:
        return _BACKENDS[self].gan()

    def public_images(self) -> torch.Tensor:
        return _BACKENDS[self].public_images()

    def cached(self, name: str, config: dict[str, Any], build: Callable[[], tuple[dict[str, torch.Tensor], dict[str, Any]]],
               *, depends_on_target: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return _BACKENDS[self].cached(name, config, build, depends_on_target=depends_on_target)


@dataclass(frozen=True)
class NoConfig:
    pass


# extras key under which a resumed search reports the queries and seconds its interrupted run had spent
RESUMED = "resumed_from_checkpoint"


class SearchProgress:
    """The resumable part of a latent search, shared by GMI, KED-MI and PLG-MI: it restores `parts` (the
    latents or distributions and their optimiser) and the RNG from the checkpoint `Attack.run` was handed,
    yields the steps still to do, and snapshots before each of them when one is due, with the trajectory,
    the loop's own `extra` values and the queries and seconds spent so far."""

    def __init__(self, attack: "Attack", oracle: LabelOnlyOracle, parts: dict[str, Any], gen: torch.Generator,
                 iterations: int) -> None:
        self.ckpt, self.oracle, self.parts, self.gen, self.iterations = attack.checkpoint, oracle, parts, gen, iterations
        self.start, self.saved = resume_loop(self.ckpt, parts, gen)
        self.trajectory: list[torch.Tensor] = self.saved.get("trajectory", [])
        self.extra: dict[str, Any] = self.saved.get("extra", {})
        self._t0 = time.perf_counter() - self.saved.get("seconds", 0.0)
        self._q0 = oracle.queries - self.saved.get("queries", 0)

    def steps(self) -> Iterator[int]:
        for it in range(self.start, self.iterations):
            if it > self.start:
                snapshot_loop(self.ckpt, it, self.iterations, self.parts, self.gen,
                              {"trajectory": self.trajectory, "extra": self.extra, "seconds": time.perf_counter() - self._t0,
                               "queries": self.oracle.queries - self._q0})
            yield it

    def resumed(self) -> dict[str, Any]:
        """The extras entry of a search resumed from a snapshot (`Attack.run` adds its queries and seconds);
        {} for a fresh one."""
        if not self.saved:
            return {}
        return {RESUMED: {"queries": int(self.saved["queries"]), "seconds": float(self.saved["seconds"])}}


class Attack:
    """Base class. Subclasses set `name`, `threat_model`, `Config` and implement `prepare` and `_run`;
    the base enforces the threat model, seeds, and records queries and wall time."""

    name: ClassVar[str]
    threat_model: ClassVar[ThreatModel]
    Config: ClassVar[type] = NoConfig
    paper: ClassVar[str] = ""

    def __init__(self, config: Any = None) -> None:
        config = config if config is not None else self.Config()
        if dataclasses.is_dataclass(config) and getattr(config, "iterations", 0) is None:
            config = dataclasses.replace(config, iterations=DEFAULT_ITERATIONS)
        self.config = config
        self.checkpoint = no_checkpoints()  # the one `run` was handed, for the duration of the run

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

    def run(self, oracle: LabelOnlyOracle, prior: Any, classes: list[int], per_class: int, seed: int,
            checkpoint: Checkpointer | None = None) -> Reconstructions:
        """Reconstruct `per_class` images for every class in `classes`. With a `checkpoint`, an attack whose
        search is long snapshots it and resumes an interrupted run (its queries and seconds included)."""
        start_queries = oracle.queries
        gen = torch.Generator().manual_seed(seed)
        t0 = time.perf_counter()
        self.checkpoint = checkpoint or no_checkpoints()
        try:
            rec = self.reconstruct(oracle, prior, classes, per_class, gen)
        finally:
            self.checkpoint = no_checkpoints()
        earlier = rec.extras.pop(RESUMED, {"queries": 0, "seconds": 0.0})
        rec.seconds = time.perf_counter() - t0 + earlier["seconds"]
        rec.queries = oracle.queries - start_queries + earlier["queries"]
        return rec

    def reconstruct(self, oracle: LabelOnlyOracle, prior: Any, classes: list[int], per_class: int, gen: torch.Generator) -> Reconstructions:
        """The search itself, drawing from `gen`, after the access check: what `run` times and counts, and
        what an attack composed over another one (adaptive-bpda) calls to run its base attack."""
        self.check_access(oracle)
        return self._run(oracle, prior, classes, per_class, gen)

    def _run(self, oracle: Any, prior: Any, classes: list[int], per_class: int, gen: torch.Generator) -> Reconstructions:
        raise NotImplementedError


TRAJECTORY_SNAPSHOTS = 11  # latents recorded at steps 0, 10 %, ..., 100 % of an optimisation


def snapshot_steps(iterations: int, snapshots: int = TRAJECTORY_SNAPSHOTS) -> set[int]:
    """The optimisation steps (0 = before the first update, `iterations` = after the last) at which a
    latent-optimisation attack records its latents."""
    return {round(i * iterations / (snapshots - 1)) for i in range(snapshots)}


def build_attack(name: str, settings: dict[str, Any] | None = None, *, iterations: int | None = None) -> Attack:
    """The registered attack `name` with the user's `settings`. `iterations` is the run's budget: it sets the
    attack's `iterations` when the settings leave it unset (else `DEFAULT_ITERATIONS` does)."""
    cls = ATTACKS.get(name)
    settings = dict(settings or {})
    takes = dataclasses.is_dataclass(cls.Config) and "iterations" in {f.name for f in dataclasses.fields(cls.Config)}
    if iterations is not None and takes and settings.get("iterations") is None:
        settings["iterations"] = iterations
    return cls.from_settings(settings)


def describe(attack_cls: type[Attack]) -> dict[str, Any]:
    return {
        "name": attack_cls.name,
        "threat_model": attack_cls.threat_model.value,
        "paper": attack_cls.paper,
        "defaults": to_dict(attack_cls.Config()) if dataclasses.is_dataclass(attack_cls.Config) else {},
    }
