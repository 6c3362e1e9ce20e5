"""The judge and GAN prior shipped with calor are exactly what the current code would build for mnist."""

from __future__ import annotations

from pathlib import Path

from calor import Workspace, load_scenario, train_evaluation_model
from calor.defenses import DEFENSES
from calor.prior_store import Priors, gan_key
from calor.workspace import classifier_code
from calor.targets import evaluation_model_key, judge_specs, train_judges
from calor.pretrained import STORE, shipped


def test_shipped_artifacts_match_the_current_keys_and_load_without_training(tmp_path: Path) -> None:
    sc = load_scenario("mnist")
    demo_seed = sc.seeds[0]
    expected = sorted([*(evaluation_model_key(sc, i)[1] for i in range(len(judge_specs(sc)))), gan_key(sc, demo_seed)[1]])
    # Fails when a change to the code's keys (ARTIFACT_FORMAT, models, scenario budgets) or a version bump of
    # the code that trains them (calor/code_versions.json) leaves the shipped copies stale: rebuild them with
    # `python -m calor.pretrained`.
    assert shipped() == expected
    ws = Workspace(cache=tmp_path / "cache")
    judges = train_judges(sc, ws)
    prior = Priors(sc, demo_seed, ws).gan()
    assert all(Path(j.path).is_relative_to(STORE) for j in judges) and Path(prior.path).is_relative_to(STORE)
    assert len(judges) >= 2 and len({j.name for j in judges}) == len(judges)  # an ensemble of architectures
    assert all(j.open_set for j in judges)  # they know the public classes too
    assert all(j.natural_acc > 0.99 for j in judges)
    assert not (tmp_path / "cache").exists()  # nothing was trained or written


def test_rebuild_ignores_the_shipped_artifacts(tmp_path: Path) -> None:
    sc = load_scenario("mnist")
    ws = Workspace(cache=tmp_path, packaged=False)
    code = classifier_code(DEFENSES.get("none"))
    assert ws.existing(tmp_path / evaluation_model_key(sc)[1], code) is None
    assert Workspace(cache=tmp_path).existing(tmp_path / evaluation_model_key(sc)[1], code) is not None
