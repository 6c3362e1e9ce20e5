"""Every registered attack goes through the same tiny end-to-end check via the `calor` command."""

import json
from pathlib import Path

import pytest

from calor.attacks import ATTACKS
from calor.cli import main


@pytest.fixture(scope="module")
def tiny_target(tmp_path_factory) -> tuple[Path, Path, Path]:
    import yaml

    from tests.conftest import TINY

    root = tmp_path_factory.mktemp("attack-contract")
    scenario = root / "tiny.yaml"
    scenario.write_text(yaml.safe_dump(TINY))
    cache = root / "cache"
    assert main(["train", "--scenario", str(scenario), "--defense", "calor", "--cache", str(cache), "--quiet"]) == 0
    target = next((cache / "targets").iterdir())
    return scenario, cache, target


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_runs_through_the_cli(name: str, tiny_target, tmp_path: Path, capsys) -> None:
    scenario, cache, target = tiny_target
    out = tmp_path / "out"
    argv = ["attack", "--scenario", str(scenario), "--target", str(target), "--attack", name, "--classes", "0,1",
            "--per-class", "2", "--cache", str(cache), "--out", str(out), "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    row = json.loads((out / "results.json").read_text())["rows"][0]
    assert row["attack"] == name and row["classes"] == [0, 1] and row["per_class"] == 2
    assert 0.0 <= row["attack_acc@1"] <= 1.0 and row["knn_dist"] >= 0.0 and row["queries"] > 0
    assert row["threat_model"] == ATTACKS.get(name).threat_model.value
    assert row["prior_s"] > 0.0  # every attack builds (or reuses) at least one prior, and its cost is reported
    assert (out / f"grid_calor_{name}.png").is_file()


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_declares_threat_model_and_paper(name: str) -> None:
    from calor import ConfigError

    cls = ATTACKS.get(name)
    assert cls.paper and cls.threat_model.value in ("white-box", "black-box", "label-only")
    cls.from_settings({})
    with pytest.raises(ConfigError):
        cls.from_settings({"no_such_setting": 1})


def test_bpda_on_a_target_dependent_base_through_the_cli(tiny_target, tmp_path: Path, capsys) -> None:
    """adaptive-bpda with base=lomma-kedmi builds KED-MI's GAN and LOMMA's surrogates through the
    straight-through copy; their queries land on the real target's count."""
    scenario, cache, target = tiny_target
    out = tmp_path / "out"
    argv = ["attack", "--scenario", str(scenario), "--target", str(target), "--attack", "adaptive-bpda", "--set", "base=lomma-kedmi",
            "--classes", "0,1", "--per-class", "2", "--cache", str(cache), "--out", str(out), "--quiet", "--diagnostics"]
    assert main(argv) == 0, capsys.readouterr().err
    row = json.loads((out / "results.json").read_text())["rows"][0]
    assert row["attack_config"]["base"] == "lomma-kedmi" and row["prior_queries"] > 0 and row["queries"] > 0
    assert "kedmi-gan" in row["artifacts"] and "lomma-surrogates" in row["artifacts"]
    # --diagnostics: KED-MI's recorded path replayed against the calor target and the undefended one
    diag = row["diagnostics"]
    assert len(diag["grad_ratio"]) == len(diag["progress"]) > 2 and all(0 <= x <= 1 for x in diag["saturated_fraction"])
