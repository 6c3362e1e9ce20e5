"""LOKT — Label-Only Model Inversion Attacks via Knowledge Transfer (Nguyen et al., NeurIPS 2023).

Label-only. LOKT transfers the target's knowledge into surrogate classifiers trained on generated images
labelled by the target's top-1 prediction, then runs a white-box attack against the surrogates and
returns those reconstructions. In the paper the generator is a Target-assisted ACGAN (T-ACGAN: a
conditional GAN on public data whose discriminator's class head learns from the target's labels of
generated images); the surrogates (the T-ACGAN discriminator and separately trained models, alone or as
an ensemble) are trained on 500 generated images per class with random-resized-crop / colour-jitter /
flip / rotation augmentation; the white-box attack is then an existing one (e.g. PLG-MI, KED-MI).

What is implemented here, with its deviations from the paper (stated plainly):
1. **No T-ACGAN (simplification).** Training a conditional GAN is replaced by the shared *unconditional*
   GAN prior (priors.gan(), trained on public data): `samples_per_class x K` images are drawn from it and
   labelled by the target's `label` (one query each). Because an unconditional generator does not produce
   classes in equal numbers, the training set is made class-balanced by resampling every class the
   target predicted to `samples_per_class` images (with replacement when it has fewer). A class the target
   never predicted on the samples cannot be learned: it is listed in the prior's meta and in
   `extras["classes_without_samples"]`.
2. **Surrogates**: one per entry of `archs` (default a `cnn` and a `resnet`: different architectures, as
   LOKT's ensemble), trained with cross-entropy on the hard labels (the shared `surrogates.distill`
   routine with one-hot targets, whose KD loss at temperature 1 is exactly cross-entropy) and Adam.
   Augmentation: one fixed augmented copy of the set (random resized crop, area scale 0.8-1, and rotation
   +-5 degrees, as one affine resampling; no flip or colour jitter, which do not suit grayscale digits)
   instead of fresh augmentation per batch. Training length is sized from the scenario's GAN-prior budget
   (about prior.steps x prior.batch_size images seen) so that tiny test scenarios stay tiny.
3. **Attack on the surrogates**: GMI (calor.attacks.gmi: the shared GAN prior, CE identity loss, SGD) run
   against the ensemble's mean logits, wrapped in a WhiteBoxOracle — not PLG-MI on a T-ACGAN.
4. The reconstructions are labelled once by the target afterwards (label queries, counted), only to
   report how many the target itself assigns to the attacked class (`extras["target_agreement"]`);
   nothing is selected by it.

The surrogates are cached (priors.cached, depends_on_target=True) with the label queries spent on them
(meta "queries"; the pipeline reports them as prior_queries).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import to_dict
from ..checkpoint import Checkpointer
from ..errors import collect
from ..models.classifiers import CLASSIFIERS, build_classifier
from .base import ATTACKS, Attack, PriorStore, Reconstructions
from .gmi import GMI, GMIConfig
from .oracle import LabelOnlyOracle, ThreatModel, make_oracle
from .priors import GanPrior
from .surrogates import distill, budget_of


@dataclass(frozen=True)
class LOKTConfig:
    samples_per_class: int = 500  # generated images per class for surrogate training (paper: 500)
    archs: tuple[str, ...] = ("cnn", "resnet")  # one surrogate per entry (an ensemble when several)
    width: int | None = None  # surrogate width; None: half the scenario's prior.width (at least 4)
    feature_dim: int | None = None  # None: 4 x width
    epochs: int | None = None  # None: about prior.steps x prior.batch_size images seen
    batch_size: int = 64
    lr: float = 1e-3
    augment: bool = True
    # the white-box attack on the surrogates (GMI's settings)
    lam: float = 100.0
    attack_lr: float = 0.02
    momentum: float = 0.9
    clamp: float = 1.0
    iterations: int | None = None  # None: the scenario's attack.iterations

    def __post_init__(self) -> None:
        p = []
        if self.samples_per_class < 2:
            p.append(f"samples_per_class={self.samples_per_class}: must be >= 2")
        if not self.archs:
            p.append("archs: need at least one surrogate architecture")
        unknown = [a for a in self.archs if a not in CLASSIFIERS.names()]
        if unknown:
            p.append(f"archs {unknown}: unknown; choose from {', '.join(CLASSIFIERS.names())}")
        for name in ("width", "feature_dim", "epochs"):
            v = getattr(self, name)
            if v is not None and v < 1:
                p.append(f"{name}={v}: must be >= 1")
        if self.batch_size < 2:
            p.append(f"batch_size={self.batch_size}: must be >= 2 (BatchNorm)")
        if self.lr <= 0 or self.attack_lr <= 0:
            p.append("lr and attack_lr must be > 0")
        if self.lam < 0:
            p.append(f"lam={self.lam}: must be >= 0")
        if self.clamp <= 0:
            p.append(f"clamp={self.clamp}: must be > 0")
        if self.iterations is not None and self.iterations < 1:
            p.append(f"iterations={self.iterations}: must be >= 1")
        collect(p, "lokt settings")


class SurrogateEnsemble(nn.Module):
    """Mean logits of several surrogate classifiers (one surrogate: its logits)."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)


@dataclass
class LOKTPrior:
    gan: GanPrior
    surrogates: SurrogateEnsemble
    meta: dict[str, Any]


def augment_copy(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One randomly augmented copy of `images` in [-1, 1]: a random resized crop (area scale 0.8-1, square)
    and a rotation of +-5 degrees, as one affine resampling per image. Works in [0, 1] so that what comes
    in from outside the image is the -1 background, not mid-grey."""
    n = len(images)
    side = torch.empty(n).uniform_(0.8, 1.0, generator=gen).sqrt()  # crop side as a fraction of the image
    angle = torch.empty(n).uniform_(-5.0, 5.0, generator=gen) * torch.pi / 180
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * (1 - side).unsqueeze(1)  # crop stays inside the image
    cos, sin = angle.cos() * side, angle.sin() * side
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    with torch.no_grad():
        grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
        return F.grid_sample((images + 1) / 2, grid, align_corners=False, padding_mode="zeros") * 2 - 1


def balanced_indices(labels: torch.Tensor, num_classes: int, per_class: int, gen: torch.Generator) -> torch.Tensor:
    """`per_class` indices of every class present in `labels` (all of them, plus draws with replacement
    when a class has fewer; a random subset when it has more). Absent classes get none."""
    out = []
    for c in range(num_classes):
        idx = torch.nonzero(labels == c).view(-1)
        if len(idx) == 0:
            continue
        if len(idx) >= per_class:
            out.append(idx[torch.randperm(len(idx), generator=gen)[:per_class]])
        else:
            out.append(torch.cat([idx, idx[torch.randint(0, len(idx), (per_class - len(idx),), generator=gen)]]))
    return torch.cat(out)


@ATTACKS.register("lokt")
class LOKT(Attack):
    name = "lokt"
    threat_model = ThreatModel.LABEL_ONLY
    paper = "Nguyen et al., Label-Only Model Inversion Attacks via Knowledge Transfer, NeurIPS 2023"
    Config = LOKTConfig

    def surrogate_spec(self, priors: PriorStore, k: int) -> dict[str, int]:
        """Surrogate width, feature size and epochs: from the config, else from the scenario's GAN-prior
        budget (width: half the prior's; epochs: about prior.steps x prior.batch_size images seen)."""
        cfg = self.config
        prior_spec = budget_of(priors).prior if cfg.width is None or cfg.epochs is None else None
        width = cfg.width or max(4, prior_spec.width // 2)
        n_train = cfg.samples_per_class * k * (2 if cfg.augment else 1)
        epochs = cfg.epochs or max(1, round(prior_spec.steps * prior_spec.batch_size / n_train))
        return {"width": width, "feature_dim": cfg.feature_dim or 4 * width, "epochs": epochs}

    def prepare(self, oracle: LabelOnlyOracle, priors: PriorStore) -> LOKTPrior:
        cfg = self.config
        gan = priors.gan()
        G = gan.generator
        device = next(G.parameters()).device
        k = oracle.num_classes
        c, r = oracle.image_shape[0], oracle.image_shape[-1]
        spec = self.surrogate_spec(priors, k)
        epochs = spec["epochs"]
        key = {"samples_per_class": cfg.samples_per_class, "archs": list(cfg.archs), "width": spec["width"],
               "feature_dim": spec["feature_dim"], "epochs": epochs, "batch_size": cfg.batch_size, "lr": cfg.lr,
               "augment": cfg.augment, "gan": gan.name or "unsaved", "num_classes": k}

        def build(checkpoint: Checkpointer | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
            gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,))))
            start = oracle.queries
            images, labels = [], []
            with torch.no_grad():
                for i in range(0, cfg.samples_per_class * k, 256):
                    z = torch.randn(min(256, cfg.samples_per_class * k - i), G.z_dim, generator=gen).to(device)
                    x = G(z)
                    labels.append(oracle.label(x).cpu())
                    images.append(x.cpu())
            x_all, y_all = torch.cat(images), torch.cat(labels)
            queries = oracle.queries - start
            counts = torch.bincount(y_all, minlength=k).tolist()
            idx = balanced_indices(y_all, k, cfg.samples_per_class, gen)
            x_tr, y_tr = x_all[idx], y_all[idx]
            if cfg.augment:
                x_tr, y_tr = torch.cat([x_tr, augment_copy(x_tr, gen)]), torch.cat([y_tr, y_tr])
            targets = F.one_hot(y_tr, k).float()  # KD at T = 1 against one-hot targets = cross-entropy
            tensors: dict[str, torch.Tensor] = {}
            histories = []
            for j, arch in enumerate(cfg.archs):
                model = build_classifier(arch, num_classes=k, in_channels=c, resolution=r, width=spec["width"], feature_dim=spec["feature_dim"])
                hist = distill(model, x_tr, targets, epochs=epochs, batch_size=cfg.batch_size, lr=cfg.lr, gen=gen, device=device,
                               description=f"LOKT surrogate {j} ({arch})",
                               checkpoint=checkpoint.sub(f"surrogate-{j}") if checkpoint else None)
                histories.append({"arch": arch, "history": hist})
                tensors |= {f"s{j}.{name}": t.detach().cpu() for name, t in model.state_dict().items()}
            meta = {"queries": queries, "label_counts": counts, "classes_without_samples": [i for i, n in enumerate(counts) if n == 0],
                    "train_images": len(x_tr), "epochs": epochs, "surrogates": histories}
            return tensors, meta

        tensors, meta = priors.cached("lokt-surrogates", key, build, depends_on_target=True)
        members = []
        for j, arch in enumerate(cfg.archs):
            model = build_classifier(arch, num_classes=k, in_channels=c, resolution=r, width=spec["width"], feature_dim=spec["feature_dim"])
            model.load_state_dict({name[len(f"s{j}."):]: t for name, t in tensors.items() if name.startswith(f"s{j}.")})
            members.append(model.to(device).eval())
        return LOKTPrior(gan, SurrogateEnsemble(members).to(device).eval(), meta)

    def _run(self, oracle: LabelOnlyOracle, prior: LOKTPrior, classes: list[int], per_class: int, gen: torch.Generator) -> Reconstructions:
        cfg = self.config
        # white-box access to our OWN surrogates only; the target stays behind the label-only oracle
        surrogate_oracle = make_oracle(prior.surrogates, ThreatModel.WHITE_BOX, oracle.num_classes, oracle.image_shape)
        gmi = GMI(GMIConfig(lam=cfg.lam, lr=cfg.attack_lr, momentum=cfg.momentum, iterations=cfg.iterations, clamp=cfg.clamp))
        rec = gmi.run(surrogate_oracle, prior.gan, classes, per_class, seed=int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        device = next(prior.gan.generator.parameters()).device
        with torch.no_grad():
            target_labels = torch.cat([oracle.label(part.to(device)).cpu() for part in rec.images.split(4096)])
        agreement = (target_labels == rec.labels).float().mean().item()
        rec.extras = {**rec.extras, "surrogate_queries": rec.queries, "prior_label_queries": int(prior.meta.get("queries", 0)),
                      "target_agreement": agreement, "classes_without_samples": prior.meta.get("classes_without_samples", []),
                      "label_counts": prior.meta.get("label_counts"), "surrogate_archs": list(cfg.archs),
                      "gmi_config": to_dict(gmi.config)}
        return rec
