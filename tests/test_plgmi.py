"""PLG-MI and its shared helpers (max-margin loss, differentiable augmentation) on tiny models."""

import pytest
import torch
import torch.nn.functional as F

from calor import ConfigError, build_attack, build_classifier, make_oracle
from calor.attacks import ThreatModel
from calor.attacks import plgmi
from calor.attacks.augment import DiffAugment
from calor.attacks.losses import logit_loss, margin, max_margin_loss
from calor.attacks.plgmi import ConditionalPrior, top_n_pseudo_labels
from calor.models.cgan import ConditionalGenerator, ProjectionDiscriminator


def tiny_target(classes: int = 3):
    torch.manual_seed(0)
    return build_classifier("cnn", num_classes=classes, in_channels=1, resolution=16, width=4, feature_dim=8).eval()


def test_margin_matches_its_definition() -> None:
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 4.0], [1.0, 1.0, -1.0]])
    y = torch.tensor([0, 2, 1])
    assert margin(logits, y).tolist() == [1.0, -1.0, 0.0]  # z_y - max_{j != y} z_j
    assert max_margin_loss(logits, y).item() == pytest.approx(0.0)
    assert logit_loss(logits, y).item() == pytest.approx(-(3.0 + 4.0 + 1.0) / 3)


def test_max_margin_keeps_a_gradient_where_cross_entropy_saturates() -> None:
    logits = torch.tensor([[60.0, 0.0, 0.0]], requires_grad=True)
    y = torch.tensor([0])
    (g_ce,) = torch.autograd.grad(F.cross_entropy(logits, y), logits)
    (g_mm,) = torch.autograd.grad(max_margin_loss(logits, y), logits)
    assert g_ce.abs().max() < 1e-20
    assert g_mm[0, 0].item() == -1.0 and g_mm.abs().sum().item() == 2.0


def test_diff_augment_is_seeded_by_the_generator_and_differentiable() -> None:
    aug = DiffAugment(16)
    x = (torch.rand(4, 1, 16, 16) * 2 - 1).requires_grad_(True)
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    c = aug(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= -1 and a.max() <= 1
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    state = torch.get_rng_state()
    aug(x, torch.Generator().manual_seed(3))
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is untouched


def test_diff_augment_flip_is_an_option() -> None:
    x = torch.linspace(-1, 1, 16).view(1, 1, 1, 16).expand(8, 1, 16, 16).contiguous()
    still = DiffAugment(16, crop_scale=(1.0, 1.0), brightness=0, contrast=0, rotation=0, flip=False)
    assert torch.allclose(still(x, torch.Generator().manual_seed(0)), x, atol=1e-5)  # nothing random left
    flips = DiffAugment(16, crop_scale=(1.0, 1.0), brightness=0, contrast=0, rotation=0, flip=True)(x, torch.Generator().manual_seed(0))
    flipped = [torch.allclose(f, x[0].flip(-1), atol=1e-5) for f in flips]
    assert any(flipped) and not all(flipped)
    assert build_attack("plgmi").config.flip is False  # digits: a flip changes the class


def test_top_n_selection_ranks_each_class_column() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.5, 0.5]])
    idx, labels, conf = top_n_pseudo_labels(probs, 2)
    assert idx.tolist() == [0, 1, 2, 3] and labels.tolist() == [0, 0, 1, 1]
    assert conf.tolist() == pytest.approx([0.9, 0.6, 0.8, 0.5])
    with pytest.raises(ConfigError, match="top_n"):
        top_n_pseudo_labels(probs, 5)


def test_conditional_gan_uses_the_class() -> None:
    torch.manual_seed(0)
    G, D = ConditionalGenerator(3, 8, 16, 1, 4).eval(), ProjectionDiscriminator(3, 16, 1, 4).eval()
    with torch.no_grad():
        G.norms[0].beta.weight.normal_()  # distinct per-class shifts, as after training
        z = torch.randn(2, 8)
        x0, x1 = G(z, torch.tensor([0, 0])), G(z, torch.tensor([1, 1]))
        assert x0.shape == (2, 1, 16, 16) and not torch.allclose(x0, x1)
        assert D(x0, torch.tensor([0, 1])).shape == (2,)


def test_plgmi_attack_lowers_the_margin_loss_and_counts_queries() -> None:
    torch.manual_seed(0)
    G = ConditionalGenerator(3, 8, 16, 1, 4).eval()
    oracle = make_oracle(tiny_target(), ThreatModel.WHITE_BOX, 3, (1, 16, 16))
    rec = build_attack("plgmi", {"iterations": 20}).run(oracle, ConditionalPrior(G, ProjectionDiscriminator(3, 16, 1, 4)), [0, 2], 3, seed=0)
    assert rec.images.shape == (6, 1, 16, 16) and rec.labels.tolist() == [0, 0, 0, 2, 2, 2]
    assert rec.extras["final_identity_loss"] < rec.extras["initial_identity_loss"]
    assert rec.queries == 20 * 6 * 2 + 6  # two augmented views per step, plus the final record
    assert all(not p.requires_grad for p in G.parameters())


def test_plgmi_prior_is_cached_per_target_with_its_queries(tiny_scenario, tmp_path, monkeypatch) -> None:
    from calor.prior_store import Priors
    from calor.workspace import Workspace

    ws = Workspace(cache=tmp_path / "cache")
    oracle = make_oracle(tiny_target(), ThreatModel.WHITE_BOX, 3, (1, 16, 16))
    atk = build_attack("plgmi", {"gan_steps": 2, "n_dis": 1, "top_n": 5})
    calls = []
    real = plgmi.train_plg_cgan
    monkeypatch.setattr(plgmi, "train_plg_cgan", lambda *a, **k: calls.append(1) or real(*a, **k))
    store = Priors(tiny_scenario, 0, ws, target_hash="t1")
    first = atk.prepare(oracle, store)
    n_public = len(store.public_images())
    bs = min(tiny_scenario.prior.batch_size, 3 * 5)  # the batch never exceeds the 15 pseudo-labelled images
    assert calls == [1] and store.queries["plgmi-cgan"] == n_public + 2 * bs  # top-n selection + one batch per G step
    assert first.meta["top_n"] == 5 and first.meta["queries"] == store.queries["plgmi-cgan"]
    again = Priors(tiny_scenario, 0, ws, target_hash="t1")
    second = atk.prepare(oracle, again)
    assert calls == [1] and again.queries["plgmi-cgan"] == store.queries["plgmi-cgan"]  # loaded, not retrained
    for a, b in zip(first.generator.state_dict().values(), second.generator.state_dict().values()):
        assert torch.equal(a.cpu(), b.cpu())
    atk.prepare(oracle, Priors(tiny_scenario, 0, ws, target_hash="t2"))
    assert calls == [1, 1]  # another target: another prior


@pytest.mark.parametrize("bad", [{"top_n": 0}, {"alpha": -1.0}, {"n_dis": 0}, {"views": 0}, {"lr": 0.0},
                                 {"crop_min": 1.5}, {"gan_beta2": 1.0}, {"gan_batch_size": 1}, {"rotation": -5.0}])
def test_plgmi_config_validation(bad) -> None:
    with pytest.raises(ConfigError):
        build_attack("plgmi", bad)
