"""The judge and GAN prior shipped with calor are exactly what the current code would build for mnist."""

from __future__ import annotations

from pathlib import Path

from calor import Workspace, load_scenario, train_evaluation_model
from calor.pipeline import Priors, evaluation_model_key, gan_key
from calor.pretrained import STORE, shipped


def test_shipped_artifacts_match_the_current_keys_and_load_without_training(tmp_path: Path) -> None:
    sc = load_scenario("mnist")
    expected = sorted([evaluation_model_key(sc)[1], gan_key(sc, 0)[1]])
    # Fails when a change to the code's keys (ARTIFACT_FORMAT, models, scenario budgets) leaves the shipped
    # copies stale: rebuild them with `python -m calor.pretrained`.
    assert shipped() == expected
    ws = Workspace(cache=tmp_path / "cache")
    judge = train_evaluation_model(sc, ws)
    prior = Priors(sc, 0, ws).gan()
    assert judge.path.is_relative_to(STORE) and Path(prior.path).is_relative_to(STORE)
    assert judge.meta["metrics"]["natural_acc"] > 0.95
    assert not (tmp_path / "cache").exists()  # nothing was trained or written


def test_rebuild_ignores_the_shipped_artifacts(tmp_path: Path) -> None:
    sc = load_scenario("mnist")
    ws = Workspace(cache=tmp_path, packaged=False)
    assert ws.existing(tmp_path / evaluation_model_key(sc)[1]) is None
    assert Workspace(cache=tmp_path).existing(tmp_path / evaluation_model_key(sc)[1]) is not None
