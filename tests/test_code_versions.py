"""Caches and bench cells are keyed by the code that computed them: a changed module must bump its
version, and what an older version built is reported as stale and rebuilt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from calor import versioning
from calor.bench import plan_bench, run_bench
from calor.workspace import Workspace
from calor.attack_runs import attack_target
from calor.targets import train_judges, train_target
from calor.versioning import check, closure, normalized_source, stale_modules


def test_every_changed_module_has_bumped_its_version() -> None:
    changed = check()
    assert not changed, (
        f"these modules' code differs from calor/code_versions.json: {', '.join(changed)}.\n"
        "Artifacts they built would be reused silently. Bump their versions: python -m calor.versioning bump")


def test_comments_docstrings_and_layout_do_not_count_but_code_does() -> None:
    base = 'def f(x):\n    """Doc."""\n    return x + 1  # add one\n'
    same = '\n\ndef f(x):\n    """Another doc."""\n\n    # a comment\n    return x + 1\n'
    other = 'def f(x):\n    """Doc."""\n    return x + 2\n'
    assert normalized_source(base) == normalized_source(same)
    assert normalized_source(base) != normalized_source(other)


def test_dependencies_follow_imports() -> None:
    deps = closure(["attacks/lomma.py"])
    assert {"attacks/kedmi.py", "attacks/gmi.py", "models/gan.py", "attacks/lomma.py"} <= set(deps)
    assert "defenses/calor.py" not in deps and all(not d.startswith("report") for d in deps)


def bump_in_memory(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    real = versioning.version
    monkeypatch.setattr(versioning, "version", lambda m: real(m) + (m == module))


def test_a_stale_artifact_is_reported_and_rebuilt(tiny_scenario, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from calor import progress

    ws = Workspace(cache=tmp_path / "cache", packaged=False)
    first = train_target(tiny_scenario, "none", seed=0, ws=ws)
    judges = train_judges(tiny_scenario, ws)
    run = attack_target(tiny_scenario, first, "gmi", seed=0, ws=ws, judges=judges)
    assert first.meta["code"]["training.py"] == versioning.version("training.py")
    assert train_target(tiny_scenario, "none", seed=0, ws=ws).meta["created"] == first.meta["created"]  # current: reused

    progress.set_enabled(True)
    try:
        bump_in_memory(monkeypatch, "attacks/gmi.py")  # as if gmi.py had changed and been bumped
        again = attack_target(tiny_scenario, first, "gmi", seed=0, ws=ws, judges=judges)
        bump_in_memory(monkeypatch, "training.py")
        retrained = train_target(tiny_scenario, "none", seed=0, ws=ws)
    finally:
        progress.set_enabled(False)
    err = capsys.readouterr().err.replace("\n", "")  # the console wraps long lines
    gmi_v, training_v = run.meta["code"]["attacks/gmi.py"], first.meta["code"]["training.py"]
    assert "stale artifact" in err and f"attacks/gmi.py v{gmi_v} -> v{gmi_v + 1}" in err
    assert f"training.py v{training_v} -> v{training_v + 1}" in err
    assert again.meta["created"] >= run.meta["created"] and again.meta["code"]["attacks/gmi.py"] == run.meta["code"]["attacks/gmi.py"] + 1
    assert retrained.meta["code"]["training.py"] == first.meta["code"]["training.py"] + 1
    # an artifact that records no code versions (built before they existed) is stale too
    assert stale_modules(None, {"training.py": 1})


def test_a_stale_bench_cell_is_recomputed(tiny_scenario, tiny_yaml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from calor.cli import main

    ws = Workspace(cache=tmp_path / "cache", packaged=False)
    plan = plan_bench(tiny_scenario, ["none"], ["gmi"], [0], {})
    out = tmp_path / "bench"
    run_bench(plan, out=out, ws=ws, show=False, calibrate=False)
    cell = next((out / "cells").glob("*.json"))
    before = json.loads(cell.read_text())
    run_bench(plan, out=out, ws=ws, show=False, calibrate=False)
    assert json.loads(cell.read_text()) == before  # current: skipped
    dry = ["bench", "--scenario", str(tiny_yaml), "--defenses", "none", "--attacks", "gmi", "--seed", "0", "--seeds", "1",
           "--out", str(out), "--cache", str(tmp_path / "cache"), "--dry-run", "--quiet"]
    assert main(dry) == 0 and "seed 0  done" in capsys.readouterr().out
    bump_in_memory(monkeypatch, "attacks/gmi.py")
    assert main(dry) == 0 and "seed 0  stale" in capsys.readouterr().out  # the plan says it will be recomputed
    run_bench(plan, out=out, ws=ws, show=False, calibrate=False)
    after = json.loads(cell.read_text())
    assert after["code"]["attacks/gmi.py"] == before["code"]["attacks/gmi.py"] + 1


def test_a_shared_attack_prior_is_not_stale_for_another_attack_that_uses_it(tiny_scenario, tmp_path: Path) -> None:
    """KED-MI's GAN is built by kedmi.py whichever attack asks for it (kedmi or lomma-kedmi): one artifact."""
    from calor import build_attack, build_classifier, make_oracle
    from calor.attacks import ThreatModel
    from calor.prior_store import Priors

    torch_model = build_classifier("cnn", num_classes=3, in_channels=1, resolution=16, width=4, feature_dim=8)
    ws = Workspace(cache=tmp_path / "cache", packaged=False)
    built = []
    for name in ("kedmi", "lomma-kedmi", "kedmi"):
        oracle = make_oracle(torch_model, ThreatModel.WHITE_BOX, 3, (1, 16, 16))
        store = Priors(tiny_scenario, 0, ws, target_hash="t")
        build_attack(name, {"gan_steps": 3}).prepare(oracle, store.for_attacker())
        metas = list((tmp_path / "cache" / "priors").glob("kedmi-gan-*/meta.json"))
        assert len(metas) == 1
        built.append((metas[0].stat().st_ino, metas[0].stat().st_mtime_ns))  # a rebuild writes a new file
    assert len(set(built)) == 1  # built once, reused by the other attack and again (never rebuilt as stale)
    meta = json.loads(metas[0].read_text())
    assert "attacks/kedmi.py" in meta["code"] and "attacks/lomma.py" not in meta["code"]
