"""The attacker's priors for a scenario: the shared GAN prior trained on the public split, and a cache of
attack-specific priors (surrogates, conditional GANs). Attacks see it only through
`Priors.for_attacker()`, which hands them no scenario, workspace or private data."""

from __future__ import annotations

import inspect
import time
from typing import Any, Callable

import torch

from .artifacts import Artifact, config_hash
from .checkpoint import no_checkpoints
from .attacks.base import AttackerBudget, AttackerStore
from .attacks.priors import GanPrior, train_gan
from .config import to_dict
from .errors import ArtifactError, ConfigError
from .models.gan import Critic, Generator
from .progress import log
from .runtime import compute_key, seed_everything
from .scenario import ClassifierSpec, PriorSpec, Scenario, prior_key
from .scenario_data import data_key, load_data, split_summary
from .versioning import code_versions, module_file
from .workspace import ARTIFACT_FORMAT, COMMON_CODE, Workspace, gan_code


def gan_key(scenario: Scenario, seed: int) -> tuple[dict[str, Any], str]:
    """The cache key and relative location of the scenario's shared GAN prior for `seed`."""
    key = {"format": ARTIFACT_FORMAT, "kind": "prior-gan", **data_key(scenario), **compute_key(), "prior": prior_key(scenario.prior), "seed": seed}
    return key, f"priors/{scenario.prior.kind}-{config_hash(key)}"


def train_prior(x_public: torch.Tensor, spec: PriorSpec, *, device: torch.device, seed: int,
                checkpoint: Any = None) -> tuple[GanPrior, list[dict[str, Any]]]:
    """Train the shared GAN prior of `spec.kind` on public images: `attacks.priors.train_gan` (wgan-gp, dcgan)
    or `attacks.stylegan_prior.train_stylegan2` (stylegan2, one process). Dispatched here so that the code
    versions of a DCGAN prior do not depend on the StyleGAN modules, nor the reverse."""
    if spec.kind != "stylegan2":
        return train_gan(x_public, spec, device=device, seed=seed, checkpoint=checkpoint)
    from .attacks.stylegan_prior import train_stylegan2
    from .parallel import current

    if current() is not None:
        raise ConfigError("prior.kind=stylegan2 trains in one process: build the prior first (calor bench without torchrun)")
    G, D, log = train_stylegan2(x_public, spec, device=device, seed=seed, checkpoint=checkpoint)
    return GanPrior(G, D, spec.kind), log  # type: ignore[arg-type]


def run_build(build: Callable[..., Any], checkpoint: Any) -> Any:
    """Call an attack-specific prior's `build`; one that takes a `checkpoint` (a long per-target GAN)
    snapshots inside its loop and resumes from it."""
    return build(checkpoint=checkpoint) if "checkpoint" in inspect.signature(build).parameters else build()


def _strip(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


class Priors:
    """The PriorStore behind an attack: the attacker's public images, the shared GAN prior, and a
    generic cache for attack-specific priors (surrogates, conditional GANs), keyed by config and —
    when the prior depends on the target — by the target's hash too."""

    def __init__(self, scenario: Scenario, seed: int, ws: Workspace, target_hash: str | None = None) -> None:
        self.scenario, self.seed, self.ws, self.target_hash = scenario, seed, ws, target_hash
        self.used: dict[str, str] = {}
        self.queries: dict[str, int] = {}  # target queries spent building each prior (its meta's "queries")
        self.seconds: dict[str, float] = {}  # time it took to build each prior, whether built now or loaded

    @property
    def device(self) -> torch.device:
        return self.ws.device

    @property
    def budget(self) -> AttackerBudget:
        return AttackerBudget(prior=self.scenario.prior, target=self.scenario.target)

    def for_attacker(self) -> AttackerStore:
        """The view of this store an attack receives: public images, the GAN prior, the prior cache and the
        budget; not the scenario, the workspace or anything private."""
        return AttackerStore(device=self.device, budget=self.budget, gan=self.gan, public_images=self.public_images,
                             cached=self.cached)

    def public_images(self) -> torch.Tensor:
        """The attacker's public images (never their labels)."""
        return load_data(self.scenario).x_public

    def cached(self, name: str, config: dict[str, Any], build: Callable[..., tuple[dict[str, torch.Tensor], dict[str, Any]]],
               *, depends_on_target: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Return the tensors and meta of prior `name` for `config`, running `build()` (which returns
        (tensors, extra meta)) only when no finished artifact exists for that key."""
        if depends_on_target and self.target_hash is None:
            raise ArtifactError(f"prior {name!r} depends on the target, but no target was given")
        key = {"format": ARTIFACT_FORMAT, "kind": f"prior-{name}", **data_key(self.scenario), **compute_key(), "config": config, "seed": self.seed,
               "target": self.target_hash if depends_on_target else None}
        rel = f"priors/{name}-{config_hash(key)}"
        # the prior depends on the module whose `build` makes it (and its imports), not on which attack asks:
        # KED-MI's GAN is the same artifact for kedmi and lomma-kedmi
        code = code_versions([*COMMON_CODE, *filter(None, [module_file(build.__module__)])])

        def run(ckpt: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, torch.Tensor]]:
            t0 = time.perf_counter()
            seed_everything(self.seed)
            tensors, extra = run_build(build, ckpt)
            seconds = time.perf_counter() - t0
            log(f"prior {name}: {seconds:.1f}s -> {self.ws.cache / rel}")
            return tensors, {"seed": self.seed, **extra, "train_seconds": seconds}, tensors

        tensors, meta, path = self.ws.cached(rel, key, code, build=run, load=lambda art: art.tensors, what=f"prior {name}")
        self.used[name] = str(path)
        self.queries[name] = int(meta.get("queries", 0))
        self.seconds[name] = float(meta.get("train_seconds", 0.0))
        return tensors, meta

    def gan(self) -> GanPrior:
        """The shared GAN prior of this seed, trained on the public split (or loaded)."""
        sc, ws = self.scenario, self.ws
        data = load_data(sc)
        key, rel = gan_key(sc, self.seed)
        c, r, _ = data.image_shape

        def load(art: Artifact) -> GanPrior:
            if sc.prior.kind == "stylegan2":
                from .attacks.stylegan_prior import build_networks

                G, D = build_networks(sc.prior, r, c)
                prior = GanPrior(G, D, sc.prior.kind)  # type: ignore[arg-type]
            else:
                prior = GanPrior(Generator(sc.prior.z_dim, r, c, sc.prior.width), Critic(r, c, sc.prior.width), sc.prior.kind)
            try:
                prior.generator.load_state_dict(_strip(art.tensors, "generator."))
                prior.critic.load_state_dict(_strip(art.tensors, "critic."))
            except RuntimeError as exc:
                raise ArtifactError(f"{art.path}: weights do not match the prior config ({exc})") from None
            return prior

        def build(ckpt: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any], GanPrior]:
            t0 = time.perf_counter()
            prior, history = train_prior(data.x_public, sc.prior, device=ws.device, seed=self.seed, checkpoint=ckpt)
            tensors = {**{f"generator.{k}": v for k, v in prior.generator.state_dict().items()},
                       **{f"critic.{k}": v for k, v in prior.critic.state_dict().items()}}
            seconds = time.perf_counter() - t0
            log(f"GAN prior ({sc.prior.kind}): {seconds:.1f}s -> {ws.cache / rel}")
            extra = {"stylegan2_config": prior.generator.cfg.to_dict()} if sc.prior.kind == "stylegan2" else {}
            return tensors, {"seed": self.seed, "history": history, "train_seconds": seconds, "data_split": split_summary(data),
                             **extra}, prior

        prior, meta, path = ws.cached(rel, key, gan_code(sc.prior.kind), build=build, load=load, what="GAN prior")
        self.seconds["gan"] = float(meta.get("train_seconds", 0.0))
        self.used["gan"] = str(path)
        prior.path = str(path)
        prior.generator.to(ws.device).eval()
        prior.critic.to(ws.device).eval()
        return prior


class MemoryPriors:
    """The attacker's store without a workspace (`calor.audit`, tests): a given GAN prior and public images,
    and attack-specific priors built once per (config, seed, target) and kept in memory."""

    def __init__(self, gan: GanPrior, public: torch.Tensor, budget: AttackerBudget | None = None,
                 device: torch.device | str = "cpu") -> None:
        self.gan, self.public = gan, public
        self.budget = budget or AttackerBudget(prior=PriorSpec(), target=ClassifierSpec())
        self.device = torch.device(device)
        self._built: dict[str, tuple[dict[str, torch.Tensor], dict[str, Any]]] = {}

    def for_attacker(self, seed: int = 0, target: str = "target", spent: dict[str, float] | None = None) -> AttackerStore:
        """The store an attack on `target` receives; `spent` (if given) collects the queries and seconds of
        the attack-specific priors it uses, whether built now or earlier in this store."""
        spent = spent if spent is not None else {}

        def cached(name: str, config: dict[str, Any], build: Callable[..., Any], *, depends_on_target: bool) -> Any:
            key = config_hash({"prior": name, "config": config, "seed": seed, "target": target if depends_on_target else None})
            if key not in self._built:
                t0 = time.perf_counter()
                seed_everything(seed)
                tensors, extra = run_build(build, no_checkpoints())
                self._built[key] = (tensors, {**extra, "train_seconds": time.perf_counter() - t0})
            tensors, meta = self._built[key]
            spent["queries"] = spent.get("queries", 0) + int(meta.get("queries", 0))
            spent["seconds"] = spent.get("seconds", 0.0) + float(meta["train_seconds"])
            return tensors, meta

        return AttackerStore(device=self.device, budget=self.budget, gan=lambda: self.gan, public_images=lambda: self.public,
                             cached=cached)
