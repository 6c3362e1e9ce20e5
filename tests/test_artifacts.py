import json
from pathlib import Path

import pytest
import torch

from calor import ArtifactError
from calor.artifacts import config_hash, find_artifact, load_artifact, save_artifact, write_file_atomic


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


def test_failed_file_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "figures" / "plot.png"
    write_file_atomic(path, lambda tmp: tmp.write_bytes(b"old"))
    assert path.read_bytes() == b"old" and oct(path.stat().st_mode & 0o777) == "0o644"

    def half_then_fail(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(ArtifactError, match="plot.png: cannot write .disk full.; the previous version, if any, is unchanged"):
        write_file_atomic(path, half_then_fail)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in path.parent.iterdir()) == ["plot.png"]
