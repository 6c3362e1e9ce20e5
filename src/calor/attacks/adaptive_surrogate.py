"""adaptive-surrogate — GMI against a surrogate distilled from the defended model's outputs (transfer).

Adaptive attack against CALoR's **back-propagation and low-rank levers** (Yu et al., arXiv 2410.05814,
2024). The defended model's gradients are starved by the saturating tanh bottleneck; its *outputs* are
not hidden. The attacker distils a surrogate — a classifier with a plain linear head, i.e. without the
low-rank tanh head — from the defended model's output probabilities on its public images and on samples
of its GAN prior (the region where GMI searches), then runs GMI with white-box gradients of the
*surrogate* and returns those reconstructions (a transfer attack). If CALoR's protection lies in the
gradient path rather than in what the outputs reveal, the surrogate recovers it.

Only probabilities are needed, so the declared threat model is **black-box**: the target is queried
through `BlackBoxOracle.probs` for the distillation set (cached per target with its query count) and
once more on the final reconstructions, to record how many of them the target itself assigns to the
attacked class (`extras["target_agreement"]`); no target gradient is ever used.

Distillation (shared `surrogates.distill`, Hinton KD at temperature 1 with Adam): architecture
`surrogate_arch` (default: the scenario's target architecture, width and feature size, i.e. the common
"known architecture" assumption, with a plain linear head), `distill_epochs`/`distill_lr`/`distill_batch`
default to the scenario's target training budget. GAN samples use latents uniform in [-clamp, clamp]
(GMI's latent box). Then GMI unchanged (Zhang et al., CVPR 2020: lam = 100, SGD lr 0.02 m 0.9); this
attack only swaps GMI's identity strategy (`SurrogateIdentity`: surrogate logits instead of the target's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..checkpoint import Checkpointer
from ..errors import collect
from ..models.classifiers import CLASSIFIERS, build_classifier
from .base import ATTACKS, PriorStore, Reconstructions
from .gmi import GMI, GMIConfig
from .identity import Identity
from .oracle import BlackBoxOracle, ThreatModel
from .priors import GanPrior
from .surrogates import distill, budget_of, soft_labels


@dataclass(frozen=True)
class SurrogateConfig(GMIConfig):
    surrogate_arch: str | None = None  # None: the scenario's target architecture
    surrogate_width: int | None = None  # None: the scenario's target width
    surrogate_feature_dim: int | None = None  # None: the scenario's target feature_dim
    distill_epochs: int | None = None  # None: the scenario's target epochs
    distill_lr: float | None = None  # None: the scenario's target lr
    distill_batch: int | None = None  # None: the scenario's target batch_size
    gan_samples: int | None = None  # GAN samples added to the distillation set; None: as many as public images

    def __post_init__(self) -> None:
        super().__post_init__()
        p = []
        if self.surrogate_arch is not None and self.surrogate_arch not in CLASSIFIERS.names():
            p.append(f"surrogate_arch={self.surrogate_arch!r}: choose one of {', '.join(CLASSIFIERS.names())}")
        for name in ("surrogate_width", "surrogate_feature_dim", "distill_epochs"):
            v = getattr(self, name)
            if v is not None and v < 1:
                p.append(f"{name}={v}: must be >= 1")
        if self.distill_batch is not None and self.distill_batch < 2:
            p.append(f"distill_batch={self.distill_batch}: must be >= 2 (batch norm)")
        if self.distill_lr is not None and self.distill_lr <= 0:
            p.append(f"distill_lr={self.distill_lr}: must be > 0")
        if self.gan_samples is not None and self.gan_samples < 0:
            p.append(f"gan_samples={self.gan_samples}: must be >= 0")
        collect(p, "adaptive-surrogate settings")


@dataclass
class SurrogatePrior(GanPrior):
    """The shared GAN prior plus the distilled surrogate classifier."""

    surrogate: nn.Module | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class SurrogateIdentity(Identity):
    """The identity loss of a surrogate distilled from the black-box target's probabilities: its gradient
    stands in for the target's, which a black-box attacker does not have."""

    def prepare(self, oracle: BlackBoxOracle, priors: PriorStore, base: Any) -> SurrogatePrior:
        cfg = self.config
        sc = budget_of(priors)
        spec = sc.target
        gan = base
        public = priors.public_images()
        c, r = oracle.image_shape[0], oracle.image_shape[-1]
        arch = {"arch": cfg.surrogate_arch or spec.arch, "width": cfg.surrogate_width or spec.width,
                "feature_dim": cfg.surrogate_feature_dim or spec.feature_dim}
        n_gan = cfg.gan_samples if cfg.gan_samples is not None else len(public)
        key = {**arch, "epochs": cfg.distill_epochs or spec.epochs, "lr": cfg.distill_lr or spec.lr,
               "batch_size": cfg.distill_batch or spec.batch_size, "gan_samples": n_gan, "latent_box": cfg.clamp,
               "gan_prior": gan.name if n_gan else None, "temperature": 1.0}
        device = priors.device

        def make() -> nn.Module:
            return build_classifier(arch["arch"], num_classes=oracle.num_classes, in_channels=c, resolution=r,
                                    width=arch["width"], feature_dim=arch["feature_dim"])

        def build(checkpoint: Checkpointer | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
            q0 = oracle.queries
            gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))  # global RNG seeded by the store
            images = public
            if n_gan:
                with torch.no_grad():
                    z = (torch.rand(n_gan, gan.generator.z_dim, generator=gen) * 2 - 1) * cfg.clamp
                    fakes = torch.cat([gan.generator(z[i:i + 256].to(device)).cpu() for i in range(0, n_gan, 256)])
                images = torch.cat([public, fakes])
            probs = soft_labels(oracle, images)
            student = make()
            log = distill(student, images, probs, epochs=key["epochs"], batch_size=key["batch_size"], lr=key["lr"],
                          gen=gen, device=device, description="distil surrogate", checkpoint=checkpoint)
            return {k: v.detach().cpu() for k, v in student.state_dict().items()}, {"queries": oracle.queries - q0, "history": log}

        tensors, meta = priors.cached("adaptive-surrogate", key, build, depends_on_target=True)
        surrogate = make()
        surrogate.load_state_dict(tensors)
        surrogate.to(device).eval()
        for p in surrogate.parameters():
            p.requires_grad_(False)
        summary = {"config": key, "queries": int(meta["queries"]), "final_distill": meta["history"][-1] if meta["history"] else {}}
        return SurrogatePrior(gan.generator, gan.critic, gan.kind, gan.path, surrogate=surrogate, meta=summary)

    def term(self, oracle: BlackBoxOracle, prior: SurrogatePrior, images: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss(prior.surrogate(images), y)  # the surrogate's gradient, never the target's

    def finish(self, oracle: BlackBoxOracle, prior: SurrogatePrior, rec: Reconstructions) -> None:
        with torch.no_grad():  # does the transfer fool the defended model itself? (N black-box queries)
            p = oracle.probs(rec.images).cpu()
        rec.extras |= {"target_agreement": (p.argmax(1) == rec.labels).float().mean().item(),
                       "target_true_confidence_mean": p.gather(1, rec.labels.view(-1, 1)).mean().item(),
                       "surrogate": prior.meta}


@ATTACKS.register("adaptive-surrogate")
class AdaptiveSurrogate(GMI):
    name = "adaptive-surrogate"
    threat_model = ThreatModel.BLACK_BOX
    paper = ("adaptive attack on CALoR (Yu et al., arXiv 2410.05814): GMI (Zhang et al., CVPR 2020) transferred "
             "from a surrogate distilled from the defended model's probabilities")
    Config = SurrogateConfig
    identity = SurrogateIdentity
