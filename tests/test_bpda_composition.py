"""adaptive-bpda composed with every white-box search: the same computation without saturating units, other
gradients through a saturated tanh, the base's own settings passed through, its priors built on the target."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from calor import ConfigError, build_attack, build_classifier, make_oracle
from calor.attacks import GanPrior, ThreatModel, plgmi
from calor.attacks import adaptive_pstar
from calor.attacks.adaptive_bpda import white_box_bases
from calor.attacks.base import AttackerBudget
from calor.attacks.losses import margin
from calor.attacks.oracle import DerivedWhiteBoxOracle
from calor.bench import parse_attack_spec
from calor.models import Critic, Generator
from calor.models.heads import LowRankHead
from calor.prior_store import MemoryPriors
from calor.scenario import ClassifierSpec, PriorSpec

pytestmark = pytest.mark.timeout(120)

CLASSES, PER_CLASS, ITERATIONS = [0, 2], 2, 3


def tiny_target(low_rank: bool = False, saturated: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_classifier("cnn", num_classes=3, in_channels=1, resolution=16, width=4, feature_dim=8)
    if low_rank:
        model.head = LowRankHead(8, 2, 3)
        if saturated:
            with torch.no_grad():
                model.head.down.weight.mul_(1e4)  # drive the tanh bottleneck deep into saturation
    return model.eval()


def oracle_of(model: torch.nn.Module):
    return make_oracle(model, ThreatModel.WHITE_BOX, 3, (1, 16, 16))


def tiny_store() -> MemoryPriors:
    """GAN prior, 24 public images and budgets small enough that KED-MI's GAN, PLG-MI's cGAN and LOMMA's
    surrogate train in a fraction of a second."""
    torch.manual_seed(1)
    gan = GanPrior(Generator(8, 16, 1, 4).eval(), Critic(16, 1, 4).eval(), "dcgan")
    public = torch.rand(24, 1, 16, 16) * 2 - 1
    budget = AttackerBudget(prior=PriorSpec(kind="dcgan", width=4, z_dim=8, steps=2, batch_size=8),
                            target=ClassifierSpec(arch="cnn", width=4, feature_dim=8, epochs=1, batch_size=8, lr=0.003))
    return MemoryPriors(gan, public, budget)


# every white-box base with settings of its own (GMI under each update rule); the p_t of adaptive-pstar estimated
BASES: list[tuple[str, dict[str, Any]]] = [
    ("gmi", {"update": "sgd"}), ("gmi", {"update": "normalized"}), ("gmi", {"update": "adam", "lr": 0.05}),
    ("adaptive-logit", {"kind": "logit"}), ("adaptive-pstar", {"update": "normalized"}),
    ("lomma-gmi", {"update": "adam"}), ("lomma-kedmi", {"p_reg": "per-class"}),
    ("kedmi", {"samples_per_step": 2}), ("plgmi", {"views": 1, "gan_steps": 1}),
]


def test_the_cases_cover_every_white_box_base() -> None:
    assert {b for b, _ in BASES} == set(white_box_bases())


@pytest.mark.parametrize("base,settings", BASES, ids=[f"{b}-{'-'.join(map(str, s.values()))}" for b, s in BASES])
def test_without_saturating_units_bpda_is_bit_identical_to_its_base(base: str, settings: dict[str, Any]) -> None:
    oracle = oracle_of(tiny_target())
    store = tiny_store().for_attacker()
    plain = build_attack(base, settings, iterations=ITERATIONS)
    bpda = build_attack("adaptive-bpda", {"base": base, **settings}, iterations=ITERATIONS)
    assert bpda.base_attack().config == plain.config  # the base's own settings, passed through
    ref = plain.run(oracle, plain.prepare(oracle, store), CLASSES, PER_CLASS, seed=1)
    prior = bpda.prepare(oracle, store)  # the same store: its priors come from the plain run's cache entries
    rec = bpda.run(oracle, prior, CLASSES, PER_CLASS, seed=1)
    assert prior.swapped == 0 and rec.extras["base"] == base and rec.extras["prior_built_against"] == "target"
    assert torch.equal(rec.images, ref.images) and torch.equal(rec.latents, ref.latents)
    assert torch.equal(rec.trajectory, ref.trajectory) and rec.queries == ref.queries


def search_term(base: str, attack: Any, oracle: Any, prior: Any, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The per-sample identity term a base's search differentiates (PLG-MI's without its augmentation)."""
    if base == "plgmi":
        return -margin(oracle.logits(prior.generator(z, y)), y)
    return attack.objective.term(oracle, prior, prior.generator(z), y)


# settings under which the base's identity gradient runs through the target alone (LOMMA's surrogates and
# feature regulariser would carry a gradient of their own past the tanh)
ONLY_TARGET = {"lomma-gmi": {"surrogates": 0, "reg_weight": 0.0}, "lomma-kedmi": {"surrogates": 0, "reg_weight": 0.0},
               "adaptive-pstar": {"p_target": 0.6}, "plgmi": {"gan_steps": 1}}


@pytest.mark.parametrize("base", sorted(white_box_bases()))
def test_through_a_saturated_tanh_only_bpda_has_a_latent_gradient(base: str) -> None:
    oracle = oracle_of(tiny_target(low_rank=True, saturated=True))
    store = tiny_store().for_attacker()
    settings = ONLY_TARGET.get(base, {})
    plain = build_attack(base, settings, iterations=ITERATIONS)
    plain_prior = plain.prepare(oracle, store)
    bpda = build_attack("adaptive-bpda", {"base": base, **settings}, iterations=ITERATIONS).prepare(oracle, store)
    assert bpda.swapped == 1 and isinstance(bpda.oracle, DerivedWhiteBoxOracle)
    y = torch.tensor(CLASSES)
    grads = []
    for attack, orc, prior in ((plain, oracle, plain_prior), (bpda.base, bpda.oracle, bpda.prior)):
        z = torch.randn(len(y), prior.generator.z_dim, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
        (g,) = torch.autograd.grad(search_term(base, attack, orc, prior, z, y).sum(), z)
        grads.append(g)
    assert grads[0].abs().max() < 1e-6 < grads[1].abs().max()  # the base's gradient vanishes, BPDA's does not


def test_bpda_search_moves_where_the_base_search_stalls() -> None:
    oracle = oracle_of(tiny_target(low_rank=True, saturated=True))
    store = tiny_store().for_attacker()
    plain = build_attack("gmi", {"update": "normalized"}, iterations=ITERATIONS)
    bpda = build_attack("adaptive-bpda", {"update": "normalized"}, iterations=ITERATIONS)
    ref = plain.run(oracle, plain.prepare(oracle, store), CLASSES, PER_CLASS, seed=1)
    rec = bpda.run(oracle, bpda.prepare(oracle, store), CLASSES, PER_CLASS, seed=1)
    assert rec.extras["bpda_swapped"] == 1 and not torch.equal(rec.latents, ref.latents)
    assert rec.queries == ref.queries  # the copy's forwards are counted on the real target


def test_plgmi_prior_under_bpda_is_plain_plgmis_artifact_built_on_the_target(monkeypatch) -> None:
    target = tiny_target(low_rank=True, saturated=True)
    oracle = oracle_of(target)
    built_with = []
    real = plgmi.train_plg_cgan
    monkeypatch.setattr(plgmi, "train_plg_cgan", lambda orc, *a, **k: built_with.append(orc) or real(orc, *a, **k))
    memory = tiny_store()
    spent: dict[str, float] = {}
    store = memory.for_attacker(spent=spent)
    settings = {"gan_steps": 1, "top_n": 4}
    bpda = build_attack("adaptive-bpda", {"base": "plgmi", **settings}, iterations=2)
    prior = bpda.prepare(oracle, store)  # first: builds the cGAN
    assert len(built_with) == 1 and built_with[0] is oracle and built_with[0].module is target  # the real target
    assert not isinstance(built_with[0], DerivedWhiteBoxOracle)
    plain = build_attack("plgmi", settings, iterations=2).prepare(oracle, store)
    assert len(built_with) == 1 and len(memory._built) == 1  # one cache entry, found by the plain attack
    for a, b in zip(prior.prior.generator.state_dict().values(), plain.generator.state_dict().values()):
        assert torch.equal(a, b)
    assert prior.prior.meta == plain.meta and spent["queries"] == 2 * plain.meta["queries"]
    rec = bpda.run(oracle, prior, [1], 2, seed=0)
    assert rec.extras["prior_built_against"] == "target" and rec.extras["cgan"] == plain.meta


def test_base_settings_pass_through_and_bad_ones_are_refused() -> None:
    name, pairs = parse_attack_spec("adaptive-bpda[base=lomma-gmi,update=adam,reg_weight=0.5,iterations=7]")
    atk = build_attack(name, dict(pairs))
    base = atk.base_attack()
    assert base.name == "lomma-gmi" and base.config.update == "adam" and base.config.reg_weight == 0.5
    assert base.config.iterations == 7
    assert atk.config_dict() == {"base": "lomma-gmi", "iterations": 7, "base_settings": {"update": "adam", "reg_weight": 0.5}}
    # flat strings (a command line) and a typed mapping are one config
    assert atk.config == build_attack("adaptive-bpda", {"base": "lomma-gmi", "iterations": 7,
                                                        "base_settings": {"update": "adam", "reg_weight": 0.5}}).config
    assert build_attack("adaptive-bpda", {"update": "normalized"}).base_attack().config.update == "normalized"  # base gmi
    assert build_attack("adaptive-bpda", {"base": "plgmi", "views": "1"}).base_attack().config.views == 1
    assert build_attack("adaptive-bpda", {"base": "kedmi", "lam": 50.0}).base_attack().config.lam == 50.0
    with pytest.raises(ConfigError, match=r"kedmi.*unknown key\(s\) update; valid keys: .*samples_per_step"):
        build_attack("adaptive-bpda", {"base": "kedmi", "update": "adam"})  # KED-MI's search is Adam only
    with pytest.raises(ConfigError, match="unknown key.*no_such"):
        build_attack(*parse_attack_spec("adaptive-bpda[base=plgmi,no_such=1]"))
    with pytest.raises(ConfigError, match="update='rmsprop'"):
        build_attack("adaptive-bpda", {"base": "adaptive-pstar", "update": "rmsprop"})
    with pytest.raises(ConfigError, match="both flat and in base_settings"):
        build_attack("adaptive-bpda", {"lam": 1.0, "base_settings": {"lam": 2.0}})
    with pytest.raises(ConfigError, match="own setting"):
        build_attack("adaptive-bpda", {"base_settings": {"iterations": 3}})
    with pytest.raises(ConfigError, match="white-box"):
        build_attack("adaptive-bpda", {"base": "lokt"})


def test_confidence_cap_and_bpda_levers_compose(monkeypatch) -> None:
    """adaptive-pstar (aims at the estimated p_t with normalised updates) through BPDA's straight-through copy."""
    oracle = oracle_of(tiny_target(low_rank=True, saturated=True))
    estimated_with = []
    real = adaptive_pstar.soft_labels
    monkeypatch.setattr(adaptive_pstar, "soft_labels", lambda orc, *a, **k: estimated_with.append(orc) or real(orc, *a, **k))
    memory = tiny_store()
    spent: dict[str, float] = {}
    store = memory.for_attacker(spent=spent)
    n_public = len(memory.public)
    atk = build_attack(*parse_attack_spec("adaptive-bpda[base=adaptive-pstar,update=normalized]"), iterations=4)
    assert atk.base_attack().config.update == "normalized" and atk.base_attack().config.p_target is None
    prior = atk.prepare(oracle, store)
    assert estimated_with == [oracle] and spent["queries"] == n_public  # p_t estimated once, on the real target
    p_t = prior.prior.p_target
    assert 0 < p_t < 1
    rec = atk.run(oracle, prior, CLASSES, PER_CLASS, seed=0)
    assert rec.images.shape == (4, 1, 16, 16) and rec.queries == 4 * 4 + 4  # 4 steps + the final confidence check
    assert rec.extras["base"] == "adaptive-pstar" and rec.extras["bpda_swapped"] == 1
    assert rec.extras["p_target"] == p_t and rec.extras["p_target_estimate"]["source"] == "public-top-k-median"
    assert 0 <= rec.extras["final_true_confidence_mean"] <= 1
    # the plain confidence-cap attack finds the same p_t in the cache; its search, without BPDA, differs
    plain = build_attack("adaptive-pstar", {"update": "normalized"}, iterations=4)
    plain_prior = plain.prepare(oracle, store)
    assert plain_prior.p_target == p_t and len(estimated_with) == 1
    ref = plain.run(oracle, plain_prior, CLASSES, PER_CLASS, seed=0)
    assert not torch.equal(ref.latents, rec.latents)
    sgd = build_attack("adaptive-pstar", {}, iterations=4)
    assert not torch.equal(sgd.run(oracle, plain_prior, CLASSES, PER_CLASS, seed=0).latents, ref.latents)  # normalised != sgd


def test_a_bpda_search_resumes_bit_identical_from_its_checkpoint(tmp_path, monkeypatch) -> None:
    """The run's checkpoint reaches the base's search, so an interrupted BPDA run resumes instead of restarting."""
    from calor.checkpoint import Checkpointer
    from tests.test_checkpoint import Crash, crash_after_snapshots, spy_resumes

    store = tiny_store().for_attacker()
    oracle = oracle_of(tiny_target(low_rank=True, saturated=True))
    atk = build_attack("adaptive-bpda", {"update": "adam"}, iterations=12)
    prior = atk.prepare(oracle, store)
    reference = atk.run(oracle, prior, CLASSES, PER_CLASS, seed=3)
    crash_after_snapshots(monkeypatch, 7)
    with pytest.raises(Crash):
        atk.run(oracle, prior, CLASSES, PER_CLASS, seed=3, checkpoint=Checkpointer(tmp_path / "ck", {"a": 1}, every_seconds=0))
    monkeypatch.undo()
    resumes = spy_resumes(monkeypatch)
    resumed = atk.run(oracle, prior, CLASSES, PER_CLASS, seed=3, checkpoint=Checkpointer(tmp_path / "ck", {"a": 1}, every_seconds=0))
    assert resumes == ["7"] and "resumed_from_checkpoint" not in resumed.extras
    assert torch.equal(resumed.images, reference.images) and torch.equal(resumed.trajectory, reference.trajectory)
    assert resumed.queries == reference.queries == 12 * 4
