"""The examples in examples/ and the Python blocks of docs/quickstart.md run, at tiny size, as tests: the
documentation cannot drift from the code."""  # noqa: D200

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def registries_restored(monkeypatch):
    """An example registers a defense or an attack; the other tests (which check that every registered
    attack is one of calor's inspected modules) must not see it afterwards."""
    from calor.attacks.base import ATTACKS
    from calor.defenses.base import DEFENSES

    for registry in (ATTACKS, DEFENSES):
        monkeypatch.setattr(registry, "_items", dict(registry._items))


def load_example(name: str) -> ModuleType:
    """examples/<name>.py as a fresh module (it registers its defense or attack into the registries)."""
    spec = importlib.util.spec_from_file_location(f"calor_example_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_example_harden_and_audit(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = load_example("harden_and_audit").main(tiny=True)
    labels = [(r["label"], r["attack"]) for r in result.rows if not r.get("calibration")]
    assert labels == [("plain", "gmi"), ("hardened", "gmi")]
    md = result.to_markdown()
    assert "Paired comparisons with `plain`" in md and "| gmi | hardened |" in md


def test_example_add_a_defense(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    runs = load_example("add_a_defense").main(tiny=True)
    assert set(runs) == {"none", "confidence-penalty"}
    from calor import ConfigError, Scenario

    from calor.records import CARD_SCHEMA

    assert runs["confidence-penalty"].meta["key"]["attack"] == "gmi" and runs["none"].meta["schema"] == CARD_SCHEMA
    # the registered config type validates a scenario's defenses block like a built-in defense's
    with pytest.raises(ConfigError, match="beta=-1.0: the entropy weight must be >= 0"):
        Scenario(defenses={"confidence-penalty": {"beta": -1.0}})


def test_example_add_an_attack(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    run = load_example("add_an_attack").main(tiny=True)
    assert run.meta["threat_model"] == "black-box"
    assert run.reconstructions.queries == 5 * 64 and len(run.reconstructions.images) == 5 * 2


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


QUICKSTART_TINY = {"resolution": "16", "data.max_per_class": "40", "target.epochs": "2", "target.width": "8",
                   "evaluation.epochs": "2", "evaluation.width": "4", "extra_judges": "", "prior.steps": "10", "prior.kind": "dcgan",
                   "attack.iterations": "8", "attack.per_class": "2", "defenses.calor.ca_epochs": "1"}


def test_quickstart_python_blocks_run(tmp_path, monkeypatch) -> None:
    """docs/quickstart.md's Python blocks, in order, in one namespace; the scenario made tiny and the audit's
    budget cut, by substitution (the page shows the real sizes)."""
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(ROOT / "docs" / "quickstart.md")
    assert len(blocks) == 3
    tiny = [blocks[0].replace('calor.load_scenario("mnist")', 'calor.load_scenario("mnist").with_overrides(QUICKSTART_TINY)'),
            blocks[1].replace("def fit(model, epochs=3)", "def fit(model, epochs=1)"),
            blocks[2].replace("per_class=5, iterations=300)", "per_class=1, iterations=4, judge=JUDGE, prior=PRIOR)")]
    assert tiny != blocks, "the substitutions no longer match docs/quickstart.md"
    assert all(a != b for a, b in zip(tiny, blocks)), "a substitution no longer matches docs/quickstart.md"
    from calor.scenario import ClassifierSpec, PriorSpec

    namespace: dict = {"QUICKSTART_TINY": QUICKSTART_TINY, "JUDGE": ClassifierSpec(arch="resnet", width=4, feature_dim=16, epochs=1),
                       "PRIOR": PriorSpec(kind="dcgan", width=8, z_dim=16, steps=10, batch_size=16)}
    for block in tiny:
        exec(compile(block, "docs/quickstart.md", "exec"), namespace)  # noqa: S102 - our own documentation
    assert (tmp_path / "runs" / "quickstart-audit" / "report.md").is_file()
    assert {r["label"] for r in namespace["result"].rows if not r.get("calibration")} == {"mine", "hardened"}
