"""Every registered defense goes through the same tiny end-to-end check via the `calor` command."""

import json
from pathlib import Path

import pytest

from calor.cli import main
from calor.defenses import DEFENSES


@pytest.mark.parametrize("name", DEFENSES.names())
def test_every_defense_trains_through_the_cli(name: str, tiny_yaml: Path, tmp_path: Path, capsys) -> None:
    cls = DEFENSES.get(name)
    argv = ["train", "--scenario", str(tiny_yaml), "--defense", name, "--cache", str(tmp_path), "--quiet"]
    if cls.architectures:
        argv += ["--scenario-set", f"target.arch={cls.architectures[0]}"]
    assert main(argv) == 0, capsys.readouterr().err
    artifact = capsys.readouterr().out.split("artifact")[-1].strip()
    meta = json.loads(Path(artifact, "meta.json").read_text())
    m = meta["metrics"]
    assert meta["defense"] == name and isinstance(meta["defense_config"], dict)
    assert 0.0 <= m["natural_acc"] <= 1.0 and m["seconds_per_epoch"] > 0
    assert 0.0 < m["train_confidence"]["mean"] <= 1.0 and len(m["train_confidence"]["histogram"]) == 20
    assert isinstance(m["defense"], dict)


@pytest.mark.parametrize("name", DEFENSES.names())
def test_every_defense_has_validated_typed_defaults(name: str) -> None:
    cls = DEFENSES.get(name)
    assert cls.paper, f"{name}: cite the paper"
    cls.from_settings({})  # defaults are valid
    from calor import ConfigError

    with pytest.raises(ConfigError):
        cls.from_settings({"no_such_setting": 1})
