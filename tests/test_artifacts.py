import json
from pathlib import Path

import pytest
import torch

from calor import ArtifactError
from calor.artifacts import config_hash, find_artifact, load_artifact, save_artifact


def test_round_trip_and_no_temporary_left(tmp_path: Path) -> None:
    tensors = {"w": torch.randn(3, 4), "n": torch.tensor(7)}
    path = save_artifact(tmp_path / "a", tensors, {"kind": "x", "value": 1.5})
    art = load_artifact(path)
    assert torch.equal(art.tensors["w"], tensors["w"]) and art.meta["value"] == 1.5
    assert [p.name for p in tmp_path.iterdir()] == ["a"]
    assert find_artifact(path) == path and find_artifact(tmp_path / "b") is None


def test_overwrite_is_atomic_replace(tmp_path: Path) -> None:
    save_artifact(tmp_path / "a", {"w": torch.zeros(1)}, {"v": 1})
    save_artifact(tmp_path / "a", {"w": torch.ones(1)}, {"v": 2})
    assert load_artifact(tmp_path / "a").meta["v"] == 2


def test_config_hash_ignores_key_order() -> None:
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_corrupt_and_missing_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        load_artifact(tmp_path / "missing")
    path = save_artifact(tmp_path / "a", {"w": torch.zeros(2)}, {"v": 1})
    (path / "weights.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ArtifactError, match="corrupt weights"):
        load_artifact(path)
    (path / "meta.json").write_text("{broken")
    with pytest.raises(ArtifactError, match="corrupt JSON"):
        load_artifact(path)
    assert json.loads(json.dumps({"ok": 1}))
