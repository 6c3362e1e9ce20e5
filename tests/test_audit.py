"""calor.audit on classifiers calor did not define: a user's own nn.Module is trained, hardened with
calor.harden and audited beside its plain self, paired, with calor's metrics, floors and ceilings; and the
same through `calor audit` on safetensors checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import calor
from calor.errors import ConfigError, DataError
from calor.scenario import ClassifierSpec, PriorSpec

# tiny budgets: the judge, prior and attack of a test audit run in seconds
JUDGE = ClassifierSpec(arch="resnet", width=4, feature_dim=16, epochs=2, batch_size=32, lr=0.003)
PRIOR = PriorSpec(kind="dcgan", width=8, z_dim=16, steps=10, batch_size=16)
ATTACKER = ClassifierSpec(arch="cnn", width=8, feature_dim=16, epochs=1, batch_size=32)


class DigitNet(nn.Module):
    """A user's own classifier for 16x16 one-channel images in [0, 1]: not a calor Classifier."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                                   nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.logits = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.trunk(x))


def unit_range(x: torch.Tensor) -> torch.Tensor:
    return (x + 1) / 2  # calor's [-1, 1] digits as the [0, 1] images this user's model takes


@pytest.fixture
def digits(tiny_scenario):
    data = calor.load_data(tiny_scenario)
    return ((unit_range(data.x_train), data.y_train), (unit_range(data.x_test), data.y_test),
            (unit_range(data.x_public), data.y_public))


def train_own(train: tuple[torch.Tensor, torch.Tensor], epochs: int = 30) -> DigitNet:
    torch.manual_seed(0)
    model = DigitNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = train
    for _ in range(epochs):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def test_a_user_model_trained_hardened_and_audited_beside_its_plain_self(digits, tmp_path) -> None:
    train, test, public = digits
    plain = train_own(train)
    hardened, record = calor.harden(train_own(train), train, rank=4, gamma=2.0, epochs=3, lr=3e-3, ca_epochs=1, ca_lr=1e-3,
                                    test_data=test)
    assert record.layer == "logits" and record.after["test"]["accuracy"] > 0.5

    result = calor.audit({"plain": plain, "hardened": hardened}, train, public, ["gmi"], test_data=test, judge=JUDGE,
                         prior=PRIOR, attacker_model=ATTACKER, per_class=2, iterations=6, input_range=(0.0, 1.0), seeds=(0,))
    assert result.baseline == "plain"
    attacked = [r for r in result.rows if not r.get("calibration")]
    assert [(r["label"], r["attack"]) for r in attacked] == [("plain", "gmi"), ("hardened", "gmi")]
    for r in attacked:
        assert 0.0 <= r["attack_acc@1"] <= 1.0 and r["n"] == 6 and len(r["per_sample"]["hit"]) == 6
        assert r["queries"] > 0 and r["threat_model"] == "white-box"
        assert r["judge"]["stronger_than_target"] in (True, False)  # test data given: the check is made
    # paired: both models' searches start from the same latents
    trajectories = [result.reconstructions[(m, "gmi", 0)].trajectory for m in ("plain", "hardened")]
    assert torch.equal(trajectories[0][0], trajectories[1][0])
    # the hardened model's low-rank head is seen by the diagnostics, measured against the baseline's gradients
    diag = result.row("hardened", "gmi")["diagnostics"]
    assert diag["saturated_fraction"] is not None and len(diag["grad_ratio"]) == len(diag["progress"])
    assert result.row("plain", "gmi")["diagnostics"]["saturated_fraction"] is None
    from calor.records import ROW_SCHEMA

    assert all(r["schema"] == ROW_SCHEMA for r in result.rows)  # typed, versioned records (calor.records)
    # floors and ceiling by the same code
    assert {r["label"] for r in result.rows if r.get("calibration")} == {"floor: prior", "floor: public", "ceiling: private test"}

    md = result.to_markdown()
    assert "| gmi | plain |" in md and "| gmi | hardened |" in md and "ceiling: private test" in md
    assert "Paired comparisons with `plain`" in md and "| gmi | hardened | plain | attack_acc@1 |" in md
    out = result.save(tmp_path / "audit")
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["models"] == ["plain", "hardened"] and saved["config"]["input_range"] == [0.0, 1.0]
    assert (out / "grids" / "hardened-gmi-s0.png").is_file() and (out / "reconstructions" / "plain-gmi-s0.safetensors").is_file()
    assert (out / "report.md").read_text() == md
    assert result.metric("hardened", "gmi", "knn_dist") == pytest.approx(result.row("hardened", "gmi")["knn_dist"])


def test_audit_without_test_data_holds_out_private_images_and_says_the_check_is_unverified(digits) -> None:
    train, _, public = digits
    result = calor.audit(train_own(train, epochs=5), train, public[0], ["gmi"], judge=JUDGE, prior=PRIOR, attacker_model=ATTACKER,
                         per_class=1, iterations=2, input_range=(0.0, 1.0), calibration=False)
    (row,) = result.rows
    assert row["label"] == "model" and row["judge"]["stronger_than_target"] is None
    assert result.config["held_out"] and result.config["judge"]["classes"] == "private classes only"  # unlabelled public images
    assert "unverified" in result.to_markdown()


def test_audit_refuses_bad_input_with_one_clear_message(digits) -> None:
    train, test, public = digits
    model = train_own(train, epochs=1)
    kw = dict(judge=JUDGE, prior=PRIOR, attacker_model=ATTACKER, per_class=1, iterations=2)
    with pytest.raises(DataError, match=r"private_data: values span \[0.5, 2.*\], outside input_range \(-1, 1\)"):
        calor.audit(model, (train[0] * 2 + 0.5, train[1]), public, **kw)
    with pytest.raises(DataError, match="public_data: images of shape"):
        calor.audit(model, train, public[0][:, :, :8, :8], input_range=(0.0, 1.0), **kw)
    with pytest.raises(ConfigError, match="unknown attack"):
        calor.audit(model, train, public, ["nope"], input_range=(0.0, 1.0), **kw)
    with pytest.raises(ConfigError, match=r"classes \[7\]"):
        calor.audit(model, train, public, classes=[7], input_range=(0.0, 1.0), **kw)
    with pytest.raises(ConfigError, match="predict different numbers of classes"):
        calor.audit({"a": model, "b": DigitNet(classes=4)}, train, public, input_range=(0.0, 1.0), **kw)


def test_the_cli_audits_a_safetensors_checkpoint_and_its_hardened_version(tiny_yaml, tmp_path, capsys, user_package) -> None:
    from safetensors.torch import save_file

    from calor.cli import main

    net = user_package.Net()  # a user's 16x16 one-channel model taking calor's [-1, 1] images
    save_file(net.state_dict(), str(tmp_path / "plain.safetensors"))
    common = ["--module", "usermodels:Net", "--scenario", str(tiny_yaml), "--quiet", "--cache", str(tmp_path / "c")]
    assert main(["harden", "--checkpoint", str(tmp_path / "plain.safetensors"), *common, "--rank", "4", "--epochs", "1",
                 "--ca-epochs", "1", "--out", str(tmp_path / "hard.safetensors")]) == 0
    capsys.readouterr()
    out = tmp_path / "audit"
    # an untrained model attacked for 4 steps: GMI recovers nothing beyond its floor, so the audit is written but
    # inconclusive (exit 3, tests/test_conclusive.py)
    assert main(["audit", "--checkpoint", str(tmp_path / "plain.safetensors"), "--compare", str(tmp_path / "hard.safetensors"),
                 *common, "--attacks", "gmi", "--iterations", "4", "--per-class", "1", "--out", str(out)]) == 3
    printed = capsys.readouterr().out
    assert "plain" in printed and "hard" in printed and "report.md" in printed
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert {r["label"] for r in rows if not r.get("calibration")} == {"plain", "hard"}
    report = (out / "report.md").read_text()
    assert "| gmi | hard | plain |" in report  # the paired comparison
    assert "(calor artifact resnet-w4-" in report  # the scenario's judge, named by its artifact
    # a checkpoint that is not there: one line, exit 2
    assert main(["audit", "--checkpoint", str(tmp_path / "gone.safetensors"), *common, "--out", str(out)]) == 2
    assert "gone.safetensors" in capsys.readouterr().err
