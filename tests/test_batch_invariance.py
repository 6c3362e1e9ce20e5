"""Latent-optimisation attacks must not change with the number of reconstructions asked for: restart j of
class c starts from the same latent and takes the same steps whatever else shares its batch."""

import pytest
import torch

from calor import build_attack, build_classifier, make_oracle
from calor.attacks import GanPrior, ThreatModel
from calor.attacks.base import REFERENCE_BATCH, batch_objective, initial_latents
from calor.attacks.kedmi import KedmiPrior, KPlusOneDiscriminator
from calor.models import Critic, Generator

CLASSES = [0, 2]


def _target():
    torch.manual_seed(0)
    return build_classifier("cnn", num_classes=3, in_channels=1, resolution=16, width=4, feature_dim=8).eval()


def _first_rows(per_class: int, keep: int) -> list[int]:
    """Rows of restarts 0..keep-1 of every class in a class-major batch of `per_class` restarts each."""
    return [i * per_class + j for i in range(len(CLASSES)) for j in range(keep)]


def _run(attack: str, settings: dict, prior, per_class: int):
    oracle = make_oracle(_target(), ThreatModel.WHITE_BOX, 3, (1, 16, 16))
    return build_attack(attack, settings).run(oracle, prior, CLASSES, per_class, seed=7)


def test_initial_latents_depend_only_on_seed_class_and_restart() -> None:
    small = initial_latents(3, [0, 2], 2, 8)
    big = initial_latents(3, [1, 0, 2], 8, 8)
    assert torch.equal(small[0:2], big[8:10]) and torch.equal(small[2:4], big[16:18])
    assert not torch.equal(initial_latents(4, [0, 2], 2, 8), small)  # another seed, other latents
    assert not torch.equal(small[0], small[1])


def test_batch_objective_gives_each_sample_its_own_gradient_over_the_reference_batch() -> None:
    z = torch.randn(5, requires_grad=True)
    batch_objective((z ** 2)).backward()
    assert torch.allclose(z.grad, 2 * z.detach() / REFERENCE_BATCH)
    with pytest.raises(ValueError):
        batch_objective(torch.zeros(2, 2))


@pytest.mark.parametrize("attack,settings", [
    ("gmi", {}),
    ("gmi", {"update": "normalized", "lr": 0.005}),
    ("gmi", {"update": "adam"}),
    ("adaptive-logit", {}),
])
def test_gmi_family_trajectories_do_not_depend_on_per_class(attack: str, settings: dict) -> None:
    torch.manual_seed(1)
    prior = GanPrior(Generator(8, 16, 1, 4).eval(), Critic(16, 1, 4).eval(), "wgan-gp")
    small = _run(attack, {"iterations": 20, **settings}, prior, 2)
    big = _run(attack, {"iterations": 20, **settings}, prior, 8)
    assert small.trajectory.shape[0] == big.trajectory.shape[0] >= 2
    ref = big.trajectory[:, _first_rows(8, 2)]
    assert torch.allclose(small.trajectory, ref, atol=1e-5), (small.trajectory - ref).abs().max()
    assert not torch.allclose(small.trajectory[0], small.trajectory[-1])  # the latents did move
    assert torch.allclose(small.images, big.images[_first_rows(8, 2)], atol=1e-4)


def test_kedmi_reconstructions_do_not_depend_on_per_class() -> None:
    torch.manual_seed(1)
    prior = KedmiPrior(Generator(8, 16, 1, 4).eval(), KPlusOneDiscriminator(3, 16, 1, 4, 4, 3).eval())
    small = _run("kedmi", {"iterations": 10}, prior, 2)
    big = _run("kedmi", {"iterations": 10}, prior, 8)
    assert torch.allclose(small.latents, big.latents[_first_rows(8, 2)], atol=1e-5)
    assert torch.allclose(small.trajectory, big.trajectory[:, _first_rows(8, 2)], atol=1e-5)


def test_same_seed_attacks_on_two_targets_start_from_the_same_latents() -> None:
    """Paired comparisons need the same latent initialisation against every defense."""
    torch.manual_seed(1)
    prior = GanPrior(Generator(8, 16, 1, 4).eval(), Critic(16, 1, 4).eval(), "wgan-gp")
    torch.manual_seed(5)
    other = build_classifier("cnn", num_classes=3, in_channels=1, resolution=16, width=4, feature_dim=8).eval()
    a = _run("gmi", {"iterations": 3}, prior, 2)
    b = build_attack("gmi", {"iterations": 3}).run(make_oracle(other, ThreatModel.WHITE_BOX, 3, (1, 16, 16)), prior, CLASSES, 2, seed=7)
    assert torch.equal(a.trajectory[0], b.trajectory[0])
    assert not torch.allclose(a.trajectory[-1], b.trajectory[-1])
