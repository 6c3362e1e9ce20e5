"""Trap-MID: blend formula, loss, trigger updates, and triggers that survive save/load."""

import math

import pytest
import torch
import torch.nn.functional as F

from calor import ConfigError
from calor.artifacts import save_artifact
from calor.defenses import build_defense
from calor.defenses.base import Stage
from calor.defenses.trapmid import TrapdoorTriggers, blend
from calor.models.classifiers import build_classifier
from calor.targets import load_classifier

SPEC = {"arch": "cnn", "num_classes": 3, "in_channels": 1, "resolution": 16, "width": 4, "feature_dim": 8}
STAGE = Stage("train", 1)


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return build_classifier(SPEC["arch"], **{k: v for k, v in SPEC.items() if k != "arch"})


def test_defaults_and_validation() -> None:
    d = build_defense("trapmid")
    assert (d.config.alpha, d.config.beta) == (0.02, 0.2)
    for bad in ({"alpha": 0.0}, {"alpha": 1.0}, {"beta": -0.1}, {"beta": 1.0}, {"trigger_step": -1}):
        with pytest.raises(ConfigError):
            build_defense("trapmid", bad)


def test_blend_is_the_formula() -> None:
    x = torch.tensor([2.0, 0.0, -1.0])
    k = torch.tensor([-1.0, 1.0, 1.0])
    assert torch.allclose(blend(x, k, 0.25), torch.tensor([1.25, 0.25, -0.5]))
    assert torch.allclose(blend(torch.zeros(3), torch.ones(3), 0.02), torch.full((3,), 0.02))


def test_forward_feeds_clean_and_trapdoor_batch() -> None:
    d = build_defense("trapmid")
    model = d.prepare(_model()).eval()
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].detach().clone()))
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    logits, extras = d.forward(model, x)
    trig = model.trapdoor.triggers
    assert trig.shape == (3, 1, 16, 16) and trig.min() >= -1 and trig.max() <= 1
    fed = seen[0]
    t = extras["trap_targets"]
    assert torch.equal(fed[:4], x)
    assert torch.allclose(fed[4:], 0.98 * x + 0.02 * trig[t])
    assert logits.shape == extras["trap_logits"].shape == (4, 3)
    assert torch.allclose(logits, model(x), atol=1e-6)  # eval mode: same as the plain forward


def test_loss_weights_clean_and_trapdoor_terms() -> None:
    d = build_defense("trapmid", {"beta": 0.2})
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    trap_logits = torch.tensor([[0.0, 0.0, 0.0]])
    loss = d.loss(STAGE, logits, torch.tensor([0]), {"trap_logits": trap_logits, "trap_targets": torch.tensor([1])})
    ce_clean = -math.log(math.exp(2) / (math.exp(2) + 2))
    assert loss.item() == pytest.approx(0.8 * ce_clean + 0.2 * math.log(3), rel=1e-6)


def test_trigger_step_is_a_signed_gradient_step() -> None:
    d = build_defense("trapmid", {"trigger_step": 0.05})
    model = d.prepare(_model()).train()
    x = torch.rand(6, 1, 16, 16) * 2 - 1
    d.forward(model, x)
    targets = d._targets
    before = model.trapdoor.triggers.clone()
    k = before.clone().requires_grad_(True)
    model.eval()
    expected_grad = torch.autograd.grad(F.cross_entropy(model(blend(x, k[targets], 0.02)), targets), k)[0]
    model.train()
    bn_before = model.blocks[0][0][1].running_mean.clone()
    d.after_step(STAGE, model, x, torch.zeros(6, dtype=torch.long))
    after = model.trapdoor.triggers
    assert model.training  # restored
    assert torch.equal(model.blocks[0][0][1].running_mean, bn_before)  # trigger step runs in eval mode
    assert not torch.equal(after, before)
    assert torch.allclose(after, (before - 0.05 * expected_grad.sign()).clamp(-1, 1))
    unused = [c for c in range(3) if c not in targets.tolist()]
    for c in unused:  # classes that were no target this batch keep their trigger
        assert torch.equal(after[c], before[c])


def test_triggers_survive_save_and_load(tmp_path) -> None:
    d = build_defense("trapmid")
    model = d.prepare(_model())
    d.forward(model.train(), torch.rand(4, 1, 16, 16) * 2 - 1)  # first batch initialises the triggers
    model.eval()
    path = tmp_path / "target"
    save_artifact(path, model.state_dict(), {"kind": "target", "defense": "trapmid", "defense_config": d.config_dict(), "model": SPEC})
    loaded = load_classifier(path).model
    assert torch.equal(loaded.trapdoor.triggers, model.trapdoor.triggers)
    x = torch.rand(2, 1, 16, 16)
    assert torch.allclose(loaded(x), model(x), atol=1e-6)


def test_placeholder_refuses_a_wrong_class_count() -> None:
    t = TrapdoorTriggers(3)
    with pytest.raises(RuntimeError):
        t.load_state_dict({"triggers": torch.zeros(4, 1, 16, 16)})
