"""LOMMA — Re-thinking Model Inversion Attacks Against Deep Neural Networks (Nguyen et al., CVPR 2023).

White-box add-on to GMI and KED-MI (registered as `lomma-gmi` and `lomma-kedmi`; one attack, two base
attacks, hence one file). It changes only the identity loss of the base attack:

- **Logit loss with p_reg**: L = -logit_y(T(x)) + reg_weight * mean_j (phi_j(x) - p_reg_j)^2, where
  phi is the target's penultimate feature (the input of its head, read through the white-box oracle
  with a forward pre-hook during the same counted query that yields the logits) and p_reg the mean
  feature of public images. As in the authors' code, the regulariser applies to the target only,
  reg_weight = 1 (their attack configs) and the squared difference is averaged over batch and
  feature dimensions. `p_reg: global` (default) is the authors' choice: one mean over all public
  images; `p_reg: per-class` instead uses, for class y, the mean over the public images the target
  labels y (falling back to the global mean for a class that labels none) — not in the paper.
- **Model augmentation**: surrogate classifiers of architectures other than the target's, distilled
  from the target on the public images (KL to the target's soft labels, temperature 1); the identity
  loss is the mean of the per-model losses (target and surrogates) plus the target's regulariser.
  The surrogates depend on the target, so they are cached per target; the prior's meta records the
  queries spent on soft labels (one per public image).

`identity: ce` keeps the base attack's cross-entropy (the paper's "L_aug only" ablation).

Deviations (CPU budget and this codebase):
- Surrogates: the authors distil 3 EfficientNet-B0/B1/B2 (SGD lr 0.01-0.02, momentum 0.9, weight decay
  1e-4, 20 epochs). Here they are registered calor architectures other than the target's (cycled in
  name order), of growing width 0.25, 0.375, 0.5, ... x the target's width (smaller than the target,
  as EfficientNet-B0..B2 are smaller than the authors' VGG16 / IR-152 targets); distilled with Adam at the
  target's learning rate and batch size for the target's number of epochs, on the public images only,
  without augmentation. Their number defaults to min(3, max(1, target epochs // 2)), so the tiny test
  scenario distils one.
- p_reg is the mean feature only; the authors also compute a per-dimension spread, but their
  reparameterised sample is overwritten by the mean before use, so the mean is what they apply.
- `lomma-kedmi` clamps sampled latents to [-1, 1] by default, as LOMMA's KED-MI code does (plain
  `kedmi` does not, as the original KED-MI code).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import Checkpointer
from ..errors import collect
from ..models.classifiers import CLASSIFIERS, build_classifier
from ..models.faces import FACE_ARCHS
from .base import ATTACKS, PriorStore, Reconstructions
from .gmi import GMI, GMIConfig
from .identity import Identity
from .kedmi import KEDMI, KEDMIConfig
from .losses import neg_true_logit
from .oracle import ThreatModel, WhiteBoxOracle
from .surrogates import distill, logits_and_features, public_features, budget_of, soft_labels


@dataclass
class LommaPrior:
    """The base attack's prior plus LOMMA's parts. It offers the base prior's generator, critic or
    discriminator and energy by name, so the base attack's search uses it unchanged."""

    base: Any
    surrogates: list[nn.Module]
    feature_mean: torch.Tensor | None  # (1, d) global or (K, d) per class; None without the logit loss
    surrogate_specs: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def generator(self) -> nn.Module:
        return self.base.generator

    @property
    def critic(self) -> nn.Module:  # GMI's GAN prior (lomma-gmi)
        return self.base.critic

    @property
    def discriminator(self) -> nn.Module:  # KED-MI's inversion-specific GAN (lomma-kedmi)
        return self.base.discriminator

    def energy(self, images: torch.Tensor) -> torch.Tensor:
        return self.base.energy(images)


@dataclass(frozen=True)
class LommaOptions:
    """LOMMA's settings, shared by lomma-gmi and lomma-kedmi."""

    identity: str = "logit"  # logit (LOMMA) | ce (the base attack's cross-entropy)
    reg_weight: float = 1.0  # weight of the p_reg feature regulariser (logit loss only)
    p_reg: str = "global"  # global (authors) | per-class
    surrogates: int | None = None  # None: min(3, max(1, target epochs // 2)); 0: no model augmentation
    distill_epochs: int | None = None  # None: the scenario's target epochs
    distill_lr: float | None = None  # Adam; None: the scenario's target lr
    temperature: float = 1.0  # KD temperature (authors: 1)

    def lomma_problems(self) -> list[str]:
        p = []
        if self.identity not in ("logit", "ce"):
            p.append(f"identity={self.identity!r}: choose logit or ce")
        if self.reg_weight < 0:
            p.append(f"reg_weight={self.reg_weight}: must be >= 0")
        if self.p_reg not in ("global", "per-class"):
            p.append(f"p_reg={self.p_reg!r}: choose global or per-class")
        if self.surrogates is not None and self.surrogates < 0:
            p.append(f"surrogates={self.surrogates}: must be >= 0")
        if self.distill_epochs is not None and self.distill_epochs < 1:
            p.append(f"distill_epochs={self.distill_epochs}: must be >= 1")
        if self.distill_lr is not None and self.distill_lr <= 0:
            p.append(f"distill_lr={self.distill_lr}: must be > 0")
        if self.temperature <= 0:
            p.append(f"temperature={self.temperature}: must be > 0")
        return p


@dataclass(frozen=True)
class LommaGMIConfig(GMIConfig, LommaOptions):
    def __post_init__(self) -> None:
        super().__post_init__()
        collect(self.lomma_problems(), "lomma-gmi settings")


@dataclass(frozen=True)
class LommaKEDMIConfig(KEDMIConfig, LommaOptions):
    clamp: float | None = 1.0  # LOMMA's KED-MI code clamps sampled latents to [-1, 1]

    def problems(self) -> list[str]:
        return super().problems() + self.lomma_problems()


def surrogate_specs(scenario: Any, count: int) -> list[dict[str, Any]]:
    """Architectures and sizes of the surrogates: registered architectures other than the target's (all
    of them if there is no other), cycled in name order, widths 0.25, 0.375, 0.5, ... x the target's (a
    calor ResNet at a quarter of the CNN target's width already has about a fifth of its parameters).
    Surrogates come from the target's family: face networks for a face target (LOMMA's augmented models
    for a VGG16 target are face ResNets), calor's small models otherwise."""
    t = scenario.target
    family = [a for a in CLASSIFIERS.names() if (a in FACE_ARCHS) == (t.arch in FACE_ARCHS)]
    pool = [a for a in family if a != t.arch] or family
    return [{"arch": pool[i % len(pool)], "width": max(2, round(t.width * (2 + i) / 8)), "feature_dim": t.feature_dim}
            for i in range(count)]


class LommaIdentity(Identity):
    """LOMMA as an identity strategy for GMI's or KED-MI's search: the prior gains surrogates (and p_reg),
    the identity term becomes the mean over target and surrogates (plus p_reg)."""

    def prepare(self, oracle: WhiteBoxOracle, priors: PriorStore, base: Any) -> LommaPrior:
        cfg = self.config
        sc = budget_of(priors)
        count = cfg.surrogates if cfg.surrogates is not None else min(3, max(1, sc.target.epochs // 2))
        specs = surrogate_specs(sc, count)
        surrogates = self._surrogates(oracle, priors, sc, specs) if specs else []
        feature_mean = self._feature_mean(oracle, priors) if cfg.identity == "logit" else None
        return LommaPrior(base, surrogates, feature_mean, specs)

    def _surrogates(self, oracle: WhiteBoxOracle, priors: PriorStore, sc: Any, specs: list[dict[str, Any]]) -> list[nn.Module]:
        cfg, t = self.config, sc.target
        x_public = priors.public_images()
        channels, resolution = x_public.shape[1], x_public.shape[-1]
        shape = {"num_classes": oracle.num_classes, "in_channels": channels, "resolution": resolution}
        settings = {"specs": specs, **shape, "epochs": cfg.distill_epochs or t.epochs, "lr": cfg.distill_lr or t.lr,
                    "batch_size": t.batch_size, "temperature": cfg.temperature}

        def build(checkpoint: Checkpointer | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
            before = oracle.queries
            probs = soft_labels(oracle, x_public)
            gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,)).item()))  # PriorStore seeded the global RNG
            tensors: dict[str, torch.Tensor] = {}
            history = []
            for i, spec in enumerate(specs):
                student = build_classifier(spec["arch"], width=spec["width"], feature_dim=spec["feature_dim"], **shape)
                log = distill(student, x_public, probs, epochs=settings["epochs"], batch_size=settings["batch_size"],
                              lr=settings["lr"], gen=gen, device=priors.device, temperature=cfg.temperature,
                              description=f"LOMMA surrogate {i} ({spec['arch']})",
                              checkpoint=checkpoint.sub(f"surrogate-{i}") if checkpoint else None)
                history.append({**spec, "log": log})
                tensors |= {f"s{i}.{k}": v.detach().cpu() for k, v in student.state_dict().items()}
            return tensors, {"queries": oracle.queries - before, "history": history}

        tensors, _meta = priors.cached("lomma-surrogates", settings, build, depends_on_target=True)
        models: list[nn.Module] = []
        for i, spec in enumerate(specs):
            model = build_classifier(spec["arch"], width=spec["width"], feature_dim=spec["feature_dim"], **shape)
            model.load_state_dict({k[len(f"s{i}."):]: v for k, v in tensors.items() if k.startswith(f"s{i}.")})
            model.to(priors.device).eval()
            for p in model.parameters():
                p.requires_grad_(False)
            models.append(model)
        return models

    def _feature_mean(self, oracle: WhiteBoxOracle, priors: PriorStore) -> torch.Tensor:
        mode, k = self.config.p_reg, oracle.num_classes
        x_public = priors.public_images()

        def build() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
            before = oracle.queries
            feats, labels = public_features(oracle, x_public)
            mean = feats.mean(0, keepdim=True)
            counts = torch.bincount(labels, minlength=k)
            if mode == "per-class":
                per_class = mean.repeat(k, 1)  # classes the target gives no public image keep the global mean
                for c in range(k):
                    if counts[c] > 0:
                        per_class[c] = feats[labels == c].mean(0)
                mean = per_class
            return {"mean": mean}, {"queries": oracle.queries - before, "public_label_counts": counts.tolist()}

        tensors, _meta = priors.cached("lomma-preg", {"mode": mode, "num_classes": k}, build, depends_on_target=True)
        return tensors["mean"].to(priors.device)

    def finish(self, oracle: WhiteBoxOracle, prior: LommaPrior, rec: Reconstructions) -> None:
        rec.extras["surrogates"] = prior.surrogate_specs

    def term(self, oracle: WhiteBoxOracle, prior: LommaPrior, images: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample (N,): mean over target and surrogates of the per-model identity loss, plus the target's
        p_reg term (mean squared feature deviation of each sample)."""
        cfg = self.config
        if cfg.identity == "logit":
            logits, feats = logits_and_features(oracle, images)
            per_model = [neg_true_logit(logits, y)] + [neg_true_logit(s(images), y) for s in prior.surrogates]
            mean = prior.feature_mean
            reg = (feats - (mean[y] if len(mean) > 1 else mean)).pow(2).flatten(1).mean(1)
            return torch.stack(per_model).mean(0) + cfg.reg_weight * reg
        per_model = [F.cross_entropy(oracle.logits(images), y, reduction="none")]
        per_model += [F.cross_entropy(s(images), y, reduction="none") for s in prior.surrogates]
        return torch.stack(per_model).mean(0)


@ATTACKS.register("lomma-gmi")
class LommaGMI(GMI):
    name = "lomma-gmi"
    threat_model = ThreatModel.WHITE_BOX
    paper = "Nguyen et al., Re-thinking Model Inversion Attacks Against Deep Neural Networks, CVPR 2023 (on GMI)"
    Config = LommaGMIConfig
    identity = LommaIdentity


@ATTACKS.register("lomma-kedmi")
class LommaKEDMI(KEDMI):
    name = "lomma-kedmi"
    threat_model = ThreatModel.WHITE_BOX
    paper = "Nguyen et al., Re-thinking Model Inversion Attacks Against Deep Neural Networks, CVPR 2023 (on KED-MI)"
    Config = LommaKEDMIConfig
    identity = LommaIdentity
