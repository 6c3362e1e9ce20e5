"""The judge's verdicts, the floor/ceiling sets and the gradient diagnostics."""

import pytest
import torch
from torch import nn

from calor import ConfigError, build_attack, build_classifier, load_scenario, make_oracle
from calor.attacks import GanPrior, ThreatModel
from calor.diagnostics import gradient_path
from calor.evaluation import CALIBRATION_SETS, Judge, calibration_images, judge_images, verdicts
from calor.errors import MetricError
from calor.models import Critic, Generator, LowRankHead
from calor.scenario_data import load_data


class FixedLogits(nn.Module):
    """A 'judge' whose logits are given per image (image i -> logits[i]), with trivial features."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(logits, requires_grad=False)
        self.num_classes, self.feature_dim = logits.shape[1], 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x[:, 0, 0, 0].long()]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :2]


def test_open_set_verdict_rejects_what_looks_public_while_the_closed_set_counts_it() -> None:
    # 2 private classes + 1 public class; image 1's top class is public, its best private class is the right one
    logits = torch.tensor([[5.0, 0.0, 1.0], [2.0, 0.0, 9.0], [0.0, 3.0, 1.0]])
    judge = Judge("fixed", FixedLogits(logits), num_private=2, natural_acc=1.0)
    images = torch.arange(3, dtype=torch.float).view(3, 1, 1, 1).expand(3, 1, 4, 4).clone()
    v = verdicts(judge, images, torch.tensor([0, 0, 0]))
    assert v["hit"].tolist() == [True, True, False]  # closed set: argmax over private logits only
    assert v["hit_open"].tolist() == [True, False, False]  # open set: image 1 is judged public
    assert v["public_verdict"].tolist() == [False, True, False]
    assert v["confidence"][1].item() == pytest.approx(torch.tensor([2.0, 0.0]).softmax(0)[0].item())
    assert judge.open_set and not Judge("closed", FixedLogits(logits[:, :2]), 2, 1.0).open_set


def test_calibration_sets_are_deterministic_labelled_and_bound_the_metrics(tiny_scenario) -> None:
    data = load_data(tiny_scenario)
    torch.manual_seed(0)
    G = Generator(tiny_scenario.prior.z_dim, 16, 1, 4)
    sets = {name: calibration_images(name, data, [0, 2], 3, seed=5, generator=G) for name in CALIBRATION_SETS}
    for rec in sets.values():
        assert rec.images.shape == (6, 1, 16, 16) and rec.labels.tolist() == [0, 0, 0, 2, 2, 2]
    again = calibration_images("floor: public", data, [0, 2], 3, seed=5)
    assert torch.equal(again.images, sets["floor: public"].images)
    # the ceiling is held-out private images of the claimed class: never a training image
    test_of_0 = data.x_test[data.y_test == 0]
    assert all((test_of_0 == img).flatten(1).all(1).any() for img in sets["ceiling: private test"].images[:3])
    with pytest.raises(MetricError, match="generator"):
        calibration_images("floor: prior", data, [0], 1, seed=0)
    with pytest.raises(MetricError, match="unknown calibration set"):
        calibration_images("floor: nothing", data, [0], 1, seed=0)
    # judged by a real (untrained) judge: every metric is present and the pixel distances order as they must
    judge_model = build_classifier("resnet", num_classes=6, in_channels=1, resolution=16, width=4, feature_dim=16).eval()
    judge = Judge("resnet-w4", judge_model, num_private=3, natural_acc=0.5)
    ceiling = judge_images(sets["ceiling: private test"].images, sets["ceiling: private test"].labels, data, [judge])
    public = judge_images(sets["floor: public"].images, sets["floor: public"].labels, data, [judge])
    for m in ("attack_acc@1", "attack_acc@1_open", "attack_acc@1_real", "judge_confidence", "knn_dist", "pixel_mse", "ssim", "kid",
              "degenerate_rate", "diversity", "realism", "judge_agreement"):
        assert m in ceiling["metrics"], m
    assert ceiling["metrics"]["attack_acc@1_real"] <= ceiling["metrics"]["attack_acc@1_open"]  # the realism rule only takes hits away
    assert ceiling["metrics"]["eval_fid"] is None  # 6 images in a 16-d feature space
    assert ceiling["metrics"]["pixel_mse"] < public["metrics"]["pixel_mse"]
    assert len(ceiling["per_sample"]["hit"]) == 6 and len(ceiling["nearest_private_index"]) == 6


def test_blank_images_are_counted_as_degenerate(tiny_scenario) -> None:
    data = load_data(tiny_scenario)
    judge_model = build_classifier("cnn", num_classes=3, in_channels=1, resolution=16, width=4, feature_dim=8).eval()
    blank = torch.full((4, 1, 16, 16), -1.0)
    out = judge_images(blank, torch.tensor([0, 0, 1, 1]), data, [Judge("cnn", judge_model, 3, 0.5)])
    assert out["metrics"]["degenerate_rate"] == 1.0 and out["per_sample"]["degenerate"] == [1, 1, 1, 1]
    assert out["metrics"]["diversity"] == pytest.approx(0.0)  # four identical images: a collapsed attack


def test_scenario_refuses_publishing_on_tuning_seeds(tiny_yaml) -> None:
    sc = load_scenario(tiny_yaml)
    with pytest.raises(ConfigError, match="also tuning_seeds"):
        sc.with_overrides({"seeds": "0,1", "tuning_seeds": "1"})
    with pytest.raises(ConfigError, match="judge_classes"):
        sc.with_overrides({"judge_classes": "everything"})


def _low_rank_target(scale: float) -> nn.Module:
    torch.manual_seed(0)
    model = build_classifier("cnn", num_classes=3, in_channels=1, resolution=16, width=4, feature_dim=8)
    model.head = LowRankHead(8, 2, 3)
    with torch.no_grad():
        model.head.down.weight.mul_(scale)  # a large scale drives tanh into saturation
        model.head.down.bias.mul_(scale)
    return model.eval()


def test_gradient_path_measures_saturation_and_the_gradient_relative_to_a_reference() -> None:
    torch.manual_seed(1)
    prior = GanPrior(Generator(8, 16, 1, 4).eval(), Critic(16, 1, 4).eval(), "wgan-gp")
    mild, saturated = _low_rank_target(1.0), _low_rank_target(1000.0)
    rec = build_attack("gmi", {"iterations": 4}).run(make_oracle(mild, ThreatModel.WHITE_BOX, 3, (1, 16, 16)), prior, [0, 1], 2, seed=0)
    self_ref = gradient_path(mild, rec, reference=mild)
    assert self_ref["grad_ratio"] == pytest.approx([1.0] * len(rec.trajectory))
    assert len(self_ref["progress"]) == len(rec.trajectory) and self_ref["progress"][-1] == 1.0
    sat = gradient_path(saturated, rec, reference=mild)
    assert min(sat["saturated_fraction"]) > 0.9 > max(self_ref["saturated_fraction"])
    assert max(sat["grad_ratio"]) < 0.1  # saturated units pass (almost) no gradient: the starvation CALoR claims
    assert gradient_path(mild, rec.__class__(rec.images, rec.labels)) is None  # no trajectory recorded
    plain = build_classifier("cnn", num_classes=3, in_channels=1, resolution=16, width=4, feature_dim=8).eval()
    assert gradient_path(plain, rec)["saturated_fraction"] is None and "grad_ratio" not in gradient_path(plain, rec)


def test_private_features_are_computed_once_per_judge_artifact(tiny_scenario, tmp_path) -> None:
    import calor.evaluation as ev
    from safetensors.torch import save_file

    data = load_data(tiny_scenario)
    judges = []
    for k in range(2):  # two artifacts of one key hash (two caches, trained apart): different weights
        torch.manual_seed(k)
        model = build_classifier("cnn", num_classes=3, in_channels=1, resolution=16, width=4, feature_dim=8).eval()
        (tmp_path / f"j{k}").mkdir()
        save_file({n: t.contiguous() for n, t in model.state_dict().items()}, str(tmp_path / f"j{k}" / "weights.safetensors"))
        judges.append(Judge("cnn", model, 3, 0.5, path=str(tmp_path / f"j{k}"), hash="judge-hash-for-test"))
    images, labels = data.x_test[:4], data.y_test[:4]
    first = judge_images(images, labels, data, [judges[0]])
    assert len([k for k in ev._FEATURES if k[0] == "judge-hash-for-test"]) == 1
    assert judge_images(images, labels, data, [judges[0]])["metrics"]["knn_dist"] == first["metrics"]["knn_dist"]
    assert len([k for k in ev._FEATURES if k[0] == "judge-hash-for-test"]) == 1
    # the other artifact of the same hash gets its own features, not the first one's
    other = judge_images(images, labels, data, [judges[1]])
    assert len([k for k in ev._FEATURES if k[0] == "judge-hash-for-test"]) == 2
    assert other["metrics"]["knn_dist"] != first["metrics"]["knn_dist"]


def test_a_cached_run_reports_the_threads_it_was_computed_with(tiny_scenario, tmp_path) -> None:
    from calor import Workspace, attack_target, configure_threads, train_target
    from calor.rows import result_row
    from calor.targets import train_judges

    ws = Workspace(cache=tmp_path)
    try:
        configure_threads(1)
        target = train_target(tiny_scenario, "none", seed=0, ws=ws)
        judges = train_judges(tiny_scenario, ws)
        attack_target(tiny_scenario, target, "gmi", seed=0, ws=ws, judges=judges)
        configure_threads(2)
        cached = attack_target(tiny_scenario, target, "gmi", seed=0, ws=ws, judges=judges)
        row = result_row(tiny_scenario, target, cached, judges)
    finally:
        configure_threads(2)
    assert row["versions"]["threads"] == "1" and row["target_versions"]["threads"] == "1"
    assert row["reported_with"]["threads"] == "2"
    # the row carries the realism rule's verdicts, its threshold, and every judge's per-sample values
    assert "attack_acc@1_real" in row and len(row["per_sample"]["hit_real"]) == row["n"]
    assert row["realism"]["threshold"] > 0 and row["realism"]["judge"] == judges[0].name
    assert all(len(j["per_sample"]["hit_real"]) == row["n"] for j in row["judges"].values())
