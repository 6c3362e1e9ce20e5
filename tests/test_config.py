import pytest

from calor import ConfigError, build_attack, build_defense, load_scenario
from calor.config import parse_assignments


def test_builtin_scenario_loads_and_overrides() -> None:
    sc = load_scenario("mnist")
    assert sc.resolution == 32 and sc.num_classes == 5 and sc.data.private_classes == (0, 1, 2, 3, 4)
    sc2 = sc.with_overrides({"target.epochs": "3", "attack.classes": "0,2"})
    assert sc2.target.epochs == 3 and sc2.attacked_classes() == [0, 2]


def test_scenario_validation_collects_problems() -> None:
    sc = load_scenario("mnist")
    with pytest.raises(ConfigError) as err:
        sc.with_overrides({"data.public_classes": "0,5", "data.test_fraction": "1.5"})
    assert "overlap" in str(err.value) and "test_fraction" in str(err.value)
    with pytest.raises(ConfigError, match="valid keys"):
        sc.with_overrides({"target.depth": "3"})


def test_unknown_scenario_and_bad_yaml(tmp_path) -> None:
    with pytest.raises(ConfigError, match="built-in: celeba64, .*mnist, mnist-stylegan2, or pass a YAML file"):
        load_scenario("imagenet")
    bad = tmp_path / "bad.yaml"
    bad.write_text("resolution: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_scenario(bad)
    bad.write_text("resolution: 30\n")
    with pytest.raises(ConfigError, match="multiple of 4"):
        load_scenario(bad)


def test_defense_and_attack_settings_are_typed_and_validated() -> None:
    d = build_defense("calor", parse_assignments(["rank=8", "gamma=4"]))
    assert d.config.rank == 8 and d.config.gamma == 4.0
    with pytest.raises(ConfigError, match="gamma"):
        build_defense("calor", {"gamma": "-1"})
    with pytest.raises(ConfigError, match="valid keys"):
        build_defense("calor", {"rnak": "3"})
    with pytest.raises(ConfigError, match="choose one of"):
        build_defense("vib-typo")
    assert build_attack("gmi", {"lam": "50"}).config.lam == 50.0
    with pytest.raises(ConfigError, match="key=value"):
        parse_assignments(["rank"])


def test_scenario_defense_blocks_are_parsed_into_their_config_types_at_load_time(tmp_path) -> None:
    import yaml

    from calor.cli import main

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "defenses": {"calor": {"rnak": 4}, "calro": {}, "mid": {"beta": -1}}}))
    with pytest.raises(ConfigError) as err:
        load_scenario(path)
    text = str(err.value)
    assert "defenses.calor: defense 'calor': unknown key(s) rnak" in text
    assert "defenses.calro: unknown defense (registered: " in text and "defenses.mid:" in text
    assert main(["bench", "--scenario", str(path), "--dry-run"]) == 2  # refused before any plan is made
    # values are typed by the defense's config at load time: an override's string is a number in the scenario
    typed = load_scenario("mnist").with_overrides({"defenses.calor.ca_epochs": "1"}).defenses["calor"]
    assert typed["ca_epochs"] == 1 and isinstance(typed["ca_epochs"], int) and typed["rank"] == 8
