"""An attack that recovers no more than its floor from the baseline is inconclusive, never "low leakage":
the rule on synthetic rows, and `calor.audit` / `calor audit` with an attack that cannot fail (it returns the
private images themselves) beside one that cannot succeed (one iteration)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import calor
from calor.attacks.base import ATTACKS, Attack, Reconstructions
from calor.attacks.oracle import ThreatModel
from calor.conclusive import attack_conclusiveness, mark_conclusive
from calor.summary import worst_case

from calor.scenario import ClassifierSpec
from tests.test_audit import ATTACKER, PRIOR, digits, train_own  # noqa: F401  (digits: a fixture)

# a judge that tells the three tiny classes apart (test_audit's 2-epoch judge does not: its ceiling is its floor)
JUDGE = ClassifierSpec(arch="cnn", width=8, feature_dim=16, epochs=15, batch_size=16, lr=0.003)


def _row(label: str, attack: str, seed: int, hits: list[int], **extra) -> dict:
    return {"label": label, "defense": label, "attack": attack, "seed": seed, "n": len(hits),
            "attack_acc@1": float(np.mean(hits)), "per_sample": {"hit": hits}, **extra}


def _floor(name: str, seed: int, hits: list[int], **extra) -> dict:
    return _row(name, "calibration", seed, hits, calibration=True, **extra)


def _grid(baseline_rate: float, seeds=(0, 1, 2), n: int = 40, floor_rate: float = 0.2, **extra) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for s in seeds:
        draw = lambda p: [int(v) for v in (rng.random(n) < p)]  # noqa: E731
        rows += [_row("plain", "a", s, draw(baseline_rate), **extra), _row("hard", "a", s, draw(baseline_rate / 2), **extra),
                 _floor("floor: prior", s, draw(floor_rate), degenerate_rate=0.0, knn_dist=50.0),
                 _floor("floor: public", s, draw(floor_rate / 2), degenerate_rate=0.0, knn_dist=40.0)]
    return rows


def test_an_attack_far_above_its_floor_is_conclusive() -> None:
    v = attack_conclusiveness(_grid(0.9), "plain")["a"]
    assert v.conclusive and v.reason == "" and v.floor_set == "floor: prior" and v.low > v.floor
    assert v.floor == pytest.approx(np.mean([r["attack_acc@1"] for r in _grid(0.9) if r["label"] == "floor: prior"]))


def test_an_attack_at_its_floor_is_inconclusive_and_says_why() -> None:
    # the search never reached the class on the model itself
    v = attack_conclusiveness(_grid(0.2, target_confidence=0.3), "plain", hints={"input_range": (0, 1)})["a"]
    assert not v.conclusive and "does not clear the floor" in v.reason
    assert "did not reach its classes" in v.reason and "input_range=(0, 1)" in v.reason
    # the model believes its reconstructions, the judge does not
    v = attack_conclusiveness(_grid(0.2, target_confidence=0.95), "plain")["a"]
    assert not v.conclusive and "convince the model" in v.reason
    # a prior whose samples are blank is named
    rows = _grid(0.2)
    for r in rows:
        if r["label"] == "floor: prior":
            r["degenerate_rate"] = 0.9
    assert "mostly blank" in attack_conclusiveness(rows, "plain")["a"].reason
    # a judge whose ceiling is no higher than the floor cannot measure any attack
    rows = _grid(0.2) + [_floor("ceiling: private test", s, [1] * 10 + [0] * 30) for s in (0, 1, 2)]
    assert "judge cannot tell the classes apart" in attack_conclusiveness(rows, "plain")["a"].reason


def test_the_margin_and_the_interval_are_both_needed() -> None:
    # 8 points above the floor on 10 seeds: the interval clears it, the 10-point margin does not
    v = attack_conclusiveness(_grid(0.28, seeds=range(10), n=200, floor_rate=0.2), "plain")["a"]
    assert v.low > v.floor and not v.conclusive
    # far above the floor on 2 seeds that disagree: the margin clears it, the interval over 2 seeds does not
    rows = [_row("plain", "a", 0, [1] * 40), _row("plain", "a", 1, [1] * 12 + [0] * 28),
            _floor("floor: prior", 0, [1] * 8 + [0] * 32), _floor("floor: prior", 1, [1] * 8 + [0] * 32)]
    v = attack_conclusiveness(rows, "plain")["a"]
    assert v.estimate >= v.floor + v.margin and not v.conclusive and "run more seeds" in v.reason
    # no floor rows: chance is the floor
    v = attack_conclusiveness([r for r in _grid(0.9) if not r.get("calibration")], "plain", num_classes=5)["a"]
    assert v.floor_set == "chance" and v.floor == 0.2


def test_inconclusive_rows_leave_the_worst_case() -> None:
    rows = _grid(0.9) + [_row(m, "b", s, [0] * 40) for s in (0, 1, 2) for m in ("plain", "hard")]
    rows += [_row("plain", "c", s, [1] * 6 + [0] * 34) for s in (0, 1, 2)] + [_row("hard", "c", s, [1] * 40) for s in (0, 1, 2)]
    verdicts = attack_conclusiveness(rows, "plain")
    assert {a: v.conclusive for a, v in verdicts.items()} == {"a": True, "b": False, "c": False}
    # attack c would be "hard"'s worst case (1.0) — but it learnt nothing from the baseline: left out
    before = {e["label"]: e["attack"] for e in worst_case(rows, ("attack_acc@1",), baseline="plain")}
    mark_conclusive(rows, verdicts)
    after = {e["label"]: e["attack"] for e in worst_case(rows, ("attack_acc@1",), baseline="plain")}
    assert before["hard"] == "c" and after == {"plain": "a", "hard": "a"}
    assert all(r["conclusive"] is False and r["inconclusive_reason"] for r in rows if r["attack"] in ("b", "c"))


class _Copycat(Attack):
    """A test attack that cannot fail: it returns private training images of each class (what no real
    attack has): the conclusive end of the rule."""

    name = "test-copycat"
    threat_model = ThreatModel.LABEL_ONLY
    images: dict[int, torch.Tensor] = {}

    def _run(self, oracle, prior, classes, per_class, gen) -> Reconstructions:
        x = torch.cat([self.images[c][:per_class] for c in classes])
        return Reconstructions(x, torch.tensor(classes).repeat_interleave(per_class))


@pytest.fixture
def copycat(digits):  # noqa: F811
    (x, y), _, _ = digits
    _Copycat.images = {c: x[y == c] * 2 - 1 for c in y.unique().tolist()}  # calor's [-1, 1]
    ATTACKS.register("test-copycat")(_Copycat)
    yield
    ATTACKS._items.pop("test-copycat", None)


@pytest.mark.timeout(300)
def test_the_audit_flags_an_attack_that_learnt_nothing_and_fails_without_a_conclusive_one(digits, copycat) -> None:  # noqa: F811
    train, test, public = digits
    model = train_own(train)
    kw = dict(test_data=test, judge=JUDGE, prior=PRIOR, attacker_model=ATTACKER, per_class=4, iterations=1,
              input_range=(0.0, 1.0), seeds=(0, 1, 2))
    result = calor.audit({"plain": model, "hard": train_own(train, epochs=5)}, train, public, ["test-copycat", "gmi"], **kw)
    assert result.conclusive["test-copycat"]["conclusive"] and not result.conclusive["gmi"]["conclusive"]
    assert result.usable
    assert all(r["target_confidence"] is not None for r in result.rows if not r.get("calibration"))
    assert {r["conclusive"] for r in result.rows if r["attack"] == "gmi"} == {False}
    md = result.to_markdown()
    assert "## Did each attack learn anything?" in md and "INCONCLUSIVE" in md and "does not clear the floor" in md
    worst = worst_case(result.rows, ("attack_acc@1",), baseline="plain")
    assert {e["attack"] for e in worst} == {"test-copycat"}
    # the broken attack alone: nothing measured, never a pass
    alone = calor.audit(model, train, public, ["gmi"], **kw)
    assert not alone.usable and "It is not a pass" in alone.to_markdown()
    assert worst_case(alone.rows, ("attack_acc@1",), baseline="model") == []


@pytest.mark.timeout(300)
def test_calor_audit_exits_3_when_no_attack_is_conclusive(tiny_yaml, tmp_path, capsys, user_package) -> None:
    from safetensors.torch import save_file

    from calor.cli import main

    net = user_package.Net()  # untrained, attacked for 1 iteration: nothing to recover
    save_file(net.state_dict(), str(tmp_path / "plain.safetensors"))
    out = tmp_path / "audit"
    code = main(["audit", "--checkpoint", str(tmp_path / "plain.safetensors"), "--module", "usermodels:Net", "--scenario", str(tiny_yaml),
                 "--quiet", "--cache", str(tmp_path / "c"), "--attacks", "gmi", "--iterations", "1", "--per-class", "2",
                 "--seeds", "0,1", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 3 and "INCONCLUSIVE" in captured.err and "not a pass" in captured.err
    assert "did each attack learn anything" in captured.out and "INCONCLUSIVE" in captured.out
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["conclusive"]["gmi"]["conclusive"] is False  # the record says so too
