"""The judges can say "none of the private classes": probe images (constants, noise, dots, tiled textures) are
not counted as hits, natural images are; every judge's per-sample verdicts are kept, with their agreement."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from calor import Workspace, build_classifier, load_scenario
from calor.evaluation import (REALISM_QUANTILE, Judge, Realism, calibration_images, judge_images, judge_verdicts, probe_judges,
                              realism)
from calor.errors import MetricError
from calor.metrics.accuracy import predict
from calor.metrics.agreement import cohen_kappa, judge_agreement
from calor.metrics.probes import CONSTANTS, probe_images
from calor.metrics.realism import fit_class_gaussians
from calor.scenario_data import load_data
from calor.targets import train_judges


@pytest.fixture(scope="module")
def mnist_judges(tmp_path_factory):
    """The mnist scenario's shipped judges (loaded, never trained here) and its split."""
    from calor.defenses import DEFENSES
    from calor.targets import evaluation_model_key, judge_specs
    from calor.workspace import classifier_code

    sc = load_scenario("mnist")
    cache = tmp_path_factory.mktemp("cache")
    ws = Workspace(cache=cache)
    code = classifier_code(DEFENSES.get("none"))
    if any(ws.existing(cache / evaluation_model_key(sc, i)[1], code) is None for i in range(len(judge_specs(sc)))):
        pytest.skip("the shipped mnist judges are stale (tests/test_pretrained.py says so): rebuild them with python -m calor.pretrained")
    return load_data(sc), train_judges(sc, ws)


@pytest.mark.timeout(900)
def test_shipped_judges_reject_probe_images_and_accept_real_private_images(mnist_judges) -> None:
    data, judges = mnist_judges
    sets = probe_images(data.image_shape, 100, seed=0, natural=data.x_public)
    table = probe_judges(judges, data, sets)
    for j in judges:
        rows = table[j.name]
        # the problem: the open-set verdict alone calls an all-black image a private class (both shipped judges)
        assert rows["black"]["open"] == 1.0 and rows["black"]["closed"] == 1.0
        # the reject option: no probe set is counted as a hit in more than 3 of its 100 images (benchmarks/judge_probe.py,
        # 200 per set: at most 1.5 %, sparse dots on the resnet; every other set 0)
        assert max(round(r["hit_real"] * r["n"]) for r in rows.values()) <= 3, {s: r["hit_real"] for s, r in rows.items()}
        assert all(rows[c]["hit_real"] == 0.0 and rows[c]["degenerate"] == 1.0 for c in CONSTANTS)
        # ... and natural held-out images of the class are kept
        test = realism(j, data)
        v = judge_verdicts(j, data.x_test, data.y_test, data, test=test)
        assert v["realistic"].float().mean().item() >= 0.95
        assert v["hit_real"].float().mean().item() >= 0.95
        assert test.record()["private_test_accepted"] >= 0.95


def _tiny_judges(tiny_scenario, tmp_path) -> tuple[object, list[Judge]]:
    data = load_data(tiny_scenario)
    trained = train_judges(tiny_scenario, Workspace(cache=tmp_path, packaged=False))[0]
    torch.manual_seed(3)
    other = build_classifier("cnn", num_classes=6, in_channels=1, resolution=16, width=4, feature_dim=8).eval()
    return data, [trained, Judge("cnn-untrained", other, num_private=3, natural_acc=0.3)]


@pytest.mark.timeout(300)
def test_every_judge_keeps_per_sample_verdicts_consistent_with_its_aggregates(tiny_scenario, tmp_path) -> None:
    data, judges = _tiny_judges(tiny_scenario, tmp_path)
    sets = [calibration_images(name, data, [0, 1, 2], 4, seed=1) for name in ("ceiling: private test", "floor: public")]
    images, labels = torch.cat([s.images for s in sets]), torch.cat([s.labels for s in sets])
    images[-2:] = -1.0  # two blank images
    out = judge_images(images, labels, data, judges)
    m = out["metrics"]
    assert set(m["judges"]) == {j.name for j in judges}
    for j in judges:
        entry = m["judges"][j.name]
        ps = entry["per_sample"]
        assert set(ps) >= {"hit", "hit_open", "hit_real", "confidence"} and all(len(v) == len(images) for v in ps.values())
        assert np.mean(ps["hit"]) == pytest.approx(entry["acc@1"])
        assert np.mean(ps["hit_open"]) == pytest.approx(entry["acc@1_open"])
        assert np.mean(ps["hit_real"]) == pytest.approx(entry["acc@1_real"])
        assert np.mean(ps["confidence"]) == pytest.approx(entry["confidence"])
        assert all(r <= o for r, o in zip(ps["hit_real"], ps["hit_open"]))  # the rule only takes hits away
        assert ps["hit_real"][-2:] == [0, 0]  # blank images are never real hits
        assert entry["realism"]["threshold"] == realism(j, data).threshold
    primary = m["judges"][judges[0].name]["per_sample"]
    assert sum(primary["hit"]) > 0  # the trained judge recognises some of its private test images
    for key in ("hit", "hit_open", "hit_real", "confidence"):
        assert out["per_sample"][key] == primary[key]
    assert m["attack_acc@1_real"] == pytest.approx(np.mean(out["per_sample"]["hit_real"]))
    assert m["realism"]["judge"] == judges[0].name and m["realism"]["quantile"] == REALISM_QUANTILE
    pair = f"{judges[0].name} | {judges[1].name}"
    for key in ("hit", "hit_open", "hit_real"):
        a, b = primary[key], m["judges"][judges[1].name]["per_sample"][key]
        assert m["judge_agreement"][key][pair]["agreement"] == pytest.approx(np.mean(np.equal(a, b)))
        assert m["judge_agreement"][key][pair]["kappa"] == cohen_kappa(a, b)


def test_agreement_and_kappa_on_a_hand_made_case() -> None:
    a = [1, 1, 0, 0, 1, 0, 1, 1]
    b = [1, 0, 0, 0, 1, 1, 1, 1]
    # p_o = 6/8; each judge says 1 for 5 of 8: p_e = (5/8)^2 + (3/8)^2 = 34/64; kappa = (48/64 - 34/64) / (30/64)
    assert cohen_kappa(a, b) == pytest.approx(14 / 30)
    assert cohen_kappa(a, a) == pytest.approx(1.0)
    assert cohen_kappa([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)
    assert cohen_kappa([1, 1, 1], [1, 1, 1]) is None  # one category only: chance agreement is 1, kappa undefined
    # three categories: p_o = 3/5; p_e = (2*1 + 2*2 + 1*2) / 25 = 8/25
    assert cohen_kappa([0, 0, 1, 1, 2], [0, 1, 1, 2, 2]) == pytest.approx((3 / 5 - 8 / 25) / (1 - 8 / 25))
    pairs = judge_agreement({"A": a, "B": b, "C": torch.tensor(a)})
    assert list(pairs) == ["A | B", "A | C", "B | C"]
    assert pairs["A | B"] == {"agreement": 0.75, "kappa": pytest.approx(14 / 30), "n": 8}
    assert pairs["A | C"]["agreement"] == 1.0 and pairs["B | C"]["kappa"] == pytest.approx(14 / 30)
    assert judge_agreement({"A": a}) == {}
    with pytest.raises(MetricError):
        judge_agreement({"A": a, "B": b[:3]})


@pytest.mark.timeout(300)
def test_the_recorded_threshold_is_the_quantile_it_says(tiny_scenario, tmp_path) -> None:
    data, judges = _tiny_judges(tiny_scenario, tmp_path)
    for j in judges:
        test = realism(j, data)
        # recomputed here from the documented recipe
        k = j.num_private
        feats = [predict(j.model, data.x_train, features=True)]
        labels = [data.y_train]
        # the fit sees the judge's own public images; the reference, the holdout that no model saw
        x_fit, x_ref = data.x_public_judge, data.x_public_holdout
        assert x_fit is not None and x_ref is not None and len(x_fit) and len(x_ref)
        if j.open_set:  # public images in the class beyond the private ones that the judge names
            feats.append(predict(j.model, x_fit, features=True))
            labels.append(predict(j.model, x_fit)[:, k:].argmax(1) + k)
        g = fit_class_gaussians(torch.cat(feats), torch.cat(labels), int(j.model.num_classes))
        ref = torch.cat([g.distance(predict(j.model, data.x_test, features=True), data.y_test),
                         g.distance(predict(j.model, x_ref, features=True), predict(j.model, x_ref)[:, :k].argmax(1))]).numpy()
        assert test.threshold == pytest.approx(float(np.quantile(ref, REALISM_QUANTILE)), rel=1e-9)
        record = test.record()
        assert record["quantile"] == REALISM_QUANTILE and record["threshold"] == test.threshold
        assert record["n_reference"] == len(data.x_test) + len(x_ref)
        # linear interpolation between order statistics: all but the top (n-1)(1-q) scores lie within it
        assert np.sum(ref <= test.threshold) == math.floor(REALISM_QUANTILE * (len(ref) - 1)) + 1
        assert realism(j, data, q=0.5).threshold == pytest.approx(float(np.median(ref)), rel=1e-9)
    labels = data.y_test[:6]
    row = judge_images(data.x_test[:6], labels, data, judges)["metrics"]
    assert row["realism"]["threshold"] == realism(judges[0], data).threshold


def test_blank_images_are_not_real_hits_even_within_the_threshold(tiny_scenario) -> None:
    data = load_data(tiny_scenario)
    torch.manual_seed(0)
    model = build_classifier("cnn", num_classes=3, in_channels=1, resolution=16, width=4, feature_dim=8).eval()
    judge = Judge("cnn", model, 3, 0.5)
    images = torch.cat([torch.full((3, 1, 16, 16), -1.0), data.x_test[:3]])
    labels = predict(model, images).argmax(1)  # what the judge calls them: every image is an open-set hit
    base = realism(judge, data)
    everything = Realism(base.gaussians, base.reference, base.n_test, math.inf, 1.0)
    v = judge_verdicts(judge, images, labels, data, test=everything)
    assert v["hit_open"].all() and v["realistic"].all()
    assert v["hit_real"].tolist() == [False] * 3 + [True] * 3


def test_probe_images_have_the_shape_range_and_content_they_claim() -> None:
    natural = torch.rand(7, 3, 12, 10) * 2 - 1
    sets = probe_images((3, 12, 10), 5, seed=2, natural=natural)
    again = probe_images((3, 12, 10), 5, seed=2, natural=natural)
    assert {"black", "white", "grey", "uniform noise", "gaussian noise", "dots 2%", "tiled random patch",
            "tiled image patch 1/4"} <= set(sets)
    for name, x in sets.items():
        assert x.shape == (5, 3, 12, 10) and x.min() >= -1 and x.max() <= 1, name
        assert torch.equal(x, again[name]), name
    assert (sets["black"] == -1).all() and (sets["white"] == 1).all() and (sets["grey"] == 0).all()
    assert set(sets["dots 10%"].unique().tolist()) <= {-1.0, 1.0}
    assert 0 < (sets["dots 10%"] == 1).float().mean() < 0.25
    tile = sets["tiled random patch"]
    assert torch.equal(tile[..., :4, :4], tile[..., 4:8, 4:8])  # a 4x4 patch repeated
    patch = sets["tiled image patch 1/2"]
    assert torch.equal(patch[..., :6, :5], patch[..., 6:12, 5:10])
    assert "tiled image patch 1/4" not in probe_images((1, 8, 8), 2)  # no natural images given
    with pytest.raises(MetricError):
        probe_images((1, 8, 8), 2, natural=natural)  # wrong shape
