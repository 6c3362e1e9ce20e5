import torch

from calor import Workspace, load_classifier, train_target
from calor.scenario_data import load_data


def test_calor_target_records_confidence_per_stage(tiny_scenario, tmp_path) -> None:
    ws = Workspace(cache=tmp_path)
    t = train_target(tiny_scenario, "calor", seed=0, ws=ws)
    stages = [h["stage"] for h in t.meta["history"] if h["epoch"] is not None]
    assert stages == ["lor", "lor", "ca"]
    assert set(t.meta["metrics"]["confidence_by_stage"]) == {"lor", "ca"}
    assert 0 <= t.meta["metrics"]["natural_acc"] <= 1
    assert t.meta["defense_config"]["rank"] == 2  # scenario default applied
    # cached: the second call loads the same weights instead of training
    again = train_target(tiny_scenario, "calor", seed=0, ws=ws)
    assert again.path == t.path and again.meta["created"] == t.meta["created"]
    loaded = load_classifier(t.path)
    x = load_data(tiny_scenario).x_test[:4]
    assert torch.allclose(loaded.model(x), t.model(x), atol=1e-5)


def test_calor_without_ca_stage_trains_like_lor_only(tiny_scenario, tmp_path) -> None:
    ws = Workspace(cache=tmp_path)
    a = train_target(tiny_scenario, "calor", seed=0, settings={"ca_epochs": 0}, ws=ws)
    assert [h["stage"] for h in a.meta["history"] if h["epoch"] is not None] == ["lor", "lor"]


def test_training_is_reproducible_from_seed(tiny_scenario, tmp_path) -> None:
    a = train_target(tiny_scenario, "none", seed=3, ws=Workspace(cache=tmp_path / "a"))
    b = train_target(tiny_scenario, "none", seed=3, ws=Workspace(cache=tmp_path / "b"))
    x = load_data(tiny_scenario).x_test
    assert torch.allclose(a.model(x), b.model(x), atol=1e-5)
    assert a.meta["hash"] == b.meta["hash"]


def test_a_non_finite_loss_stops_training_with_a_clear_error(tiny_scenario) -> None:
    import pytest

    from calor import build_classifier, build_defense
    from calor.errors import TrainingError
    from calor.training import train_classifier

    data = load_data(tiny_scenario)
    model = build_classifier("cnn", num_classes=data.num_classes, in_channels=1, resolution=16, width=4, feature_dim=8)
    with torch.no_grad():
        model.head.weight.fill_(float("nan"))
    with pytest.raises(TrainingError, match=r"\[train\] epoch 0: the loss became nan"):
        train_classifier(model, build_defense("none", {}), data.x_train, data.y_train, tiny_scenario.target,
                         device=torch.device("cpu"), seed=0)


def test_every_stage_trains_on_channels_last_batches(tiny_scenario) -> None:
    """Un-augmented stages (CA fine-tune) get the same fast layout as augmented ones."""
    from calor import build_defense
    from calor.targets import build_model, model_spec
    from calor.training import train_classifier

    data = load_data(tiny_scenario)
    defense = build_defense("calor", {"rank": 2, "ca_epochs": 1, "ca_lr": 0.001})
    model = build_model(model_spec(data, tiny_scenario.target), defense)
    seen: list[tuple[str, bool]] = []
    model.register_forward_pre_hook(lambda m, inp: seen.append((m.training, inp[0].stride(1) == 1)))
    train_classifier(model, defense, data.x_train, data.y_train, tiny_scenario.target, device=torch.device("cpu"), seed=0)
    assert seen and all(cl for training, cl in seen if training)
