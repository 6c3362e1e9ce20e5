import torch

from calor import build_attack, build_classifier, make_oracle
from calor.attacks import GanPrior, ThreatModel
from calor.models import Critic, Generator


def test_gmi_lowers_identity_loss_and_counts_queries() -> None:
    torch.manual_seed(0)
    target = build_classifier("cnn", num_classes=3, in_channels=1, resolution=16, width=4, feature_dim=8).eval()
    prior = GanPrior(Generator(8, 16, 1, 4).eval(), Critic(16, 1, 4).eval(), "wgan-gp")
    oracle = make_oracle(target, ThreatModel.WHITE_BOX, 3, (1, 16, 16))
    short = build_attack("gmi", {"iterations": 1}).run(oracle, prior, [0, 2], 3, seed=0)
    long = build_attack("gmi", {"iterations": 60}).run(oracle, prior, [0, 2], 3, seed=0)
    assert long.extras["final_identity_loss"] < short.extras["final_identity_loss"]
    assert long.images.shape == (6, 1, 16, 16) and long.labels.tolist() == [0, 0, 0, 2, 2, 2]
    assert long.queries == 60 * 6
    assert long.latents.abs().max() <= 1.0  # latents clamped to [-1, 1]


def test_prior_energy_matches_kind() -> None:
    g, c = Generator(8, 16, 1, 4).eval(), Critic(16, 1, 4).eval()
    x = torch.randn(3, 1, 16, 16)
    out = c(x)
    assert torch.allclose(GanPrior(g, c, "wgan-gp").energy(x), -out)
    assert torch.allclose(GanPrior(g, c, "dcgan").energy(x), torch.nn.functional.softplus(-out))
