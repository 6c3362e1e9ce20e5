"""Bad input: one clear message naming the problem, exit code 2, and nothing already in the cache touched."""

from __future__ import annotations

import copy
import errno
import hashlib
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from calor.artifacts import save_artifact
from calor.cli import main
from calor.errors import ArtifactError, DataError

from .conftest import TINY


def cache_digest(cache: Path) -> dict[str, str]:
    """Every file of the cache but the (empty) lock files: a lock file is left behind on purpose, since
    deleting one while another process waits on it would let two processes hold "the" lock."""
    return {str(p.relative_to(cache)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(cache.rglob("*")) if p.is_file() and p.name != ".calor.lock" and ".locks" not in p.parts}


@pytest.fixture(scope="module")
def trained_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A cache holding a trained tiny target (and its scenario file): what a bad call must leave alone."""
    root = tmp_path_factory.mktemp("bad")
    good = root / "tiny.yaml"
    good.write_text(yaml.safe_dump(TINY))
    cache = root / "cache"
    assert main(["train", "--scenario", str(good), "--cache", str(cache), "--quiet", "--seed", "0"]) == 0
    target = next((cache / "targets").iterdir())
    return good, cache, target


def scenario_file(root: Path, name: str, edit) -> Path:
    d = copy.deepcopy(TINY)
    edit(d)
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def write_idx(directory: Path, images: bytes, labels: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train-images-idx3-ubyte").write_bytes(images)
    (directory / "train-labels-idx1-ubyte").write_bytes(labels)
    return directory


def idx_scenario(root: Path, name: str, images: bytes, labels: bytes) -> Path:
    directory = write_idx(root / name, images, labels)
    return scenario_file(root, name, lambda d: d["data"].update(source="idx", path=str(directory), private_classes=[0, 1],
                                                                 public_classes=[2]))


GOOD_LABELS = b"\x00\x00\x08\x01" + struct.pack(">I", 10) + bytes(range(10))


def bad_scenarios(root: Path) -> dict[str, tuple[Path, str]]:
    """name -> (scenario file, the message expected)."""
    return {
        "truncated IDX header": (idx_scenario(root, "idx-header", b"\x00\x00\x08\x03\x00\x00", GOOD_LABELS),
                                 "train-images-idx3-ubyte: IDX header truncated"),
        "truncated IDX data": (idx_scenario(root, "idx-data", b"\x00\x00\x08\x03" + struct.pack(">3I", 10, 28, 28) + b"\x00" * 100,
                                            GOOD_LABELS), "train-images-idx3-ubyte: header says (10, 28, 28) but holds 100 values"),
        "not an IDX file": (idx_scenario(root, "idx-magic", b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, GOOD_LABELS),
                            "train-images-idx3-ubyte: not an unsigned-byte IDX file"),
        "classes not in the data": (scenario_file(root, "range", lambda d: d["data"].update(private_classes=[0, 1, 12])),
                                    "classes [12] have no images"),
        "private/public overlap": (scenario_file(root, "overlap", lambda d: d["data"].update(public_classes=[2, 5])),
                                   "data.public_classes overlap the private ones: [2]"),
        "mistyped key": (scenario_file(root, "typo", lambda d: d["target"].update(epochz=3)),
                         "unknown key(s) epochz; valid keys: arch"),
        "unknown section": (scenario_file(root, "section", lambda d: d.update(atack={})), "unknown key(s) atack"),
        "wrong type": (scenario_file(root, "type", lambda d: d["target"].update(epochs="many")),
                       "target.epochs: expected an integer, got 'many'"),
        "rank >= feature dim": (scenario_file(root, "rank", lambda d: d["defenses"]["calor"].update(rank=16)),
                                "rank=16 must be below the model's feature_dim=16"),
        "per_class 0": (scenario_file(root, "perclass", lambda d: d["attack"].update(per_class=0)),
                        "per_class and iterations must be >= 1"),
        "not a mapping": (root / "list.yaml", "expected a mapping at the top level"),
        "invalid YAML": (root / "broken.yaml", "invalid YAML at line 2, column 1: expected"),
    }


@pytest.mark.timeout(300)
def test_each_bad_scenario_gets_one_message_and_exit_2(trained_cache, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _good, cache, _target = trained_cache
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    before = cache_digest(cache)
    for name, (path, expected) in bad_scenarios(tmp_path).items():
        rc = main(["train", "--scenario", str(path), "--defense", "calor", "--cache", str(cache), "--quiet"])
        err = capsys.readouterr().err
        assert rc == 2, (name, err)
        assert expected in err, (name, err)
        assert err.startswith("calor train: error: ") and "Traceback" not in err, (name, err)
    assert cache_digest(cache) == before


def test_labels_outside_the_class_range_are_named(tiny_scenario) -> None:
    from calor.defenses import build_defense
    from calor.models import build_classifier
    from calor.training import train_classifier

    model = build_classifier("cnn", num_classes=3, in_channels=1, resolution=16, width=4, feature_dim=8)
    x, y = torch.randn(8, 1, 16, 16), torch.tensor([0, 1, 2, 3, 0, 1, 2, 0])
    with pytest.raises(DataError, match=r"labels go up to 3, but the model predicts 3 classes"):
        train_classifier(model, build_defense("none"), x, y, tiny_scenario.target, device=torch.device("cpu"), seed=0)
    with pytest.raises(DataError, match="non-negative integer label"):
        train_classifier(model, build_defense("none"), x, -y, tiny_scenario.target, device=torch.device("cpu"), seed=0)


def test_impossible_cli_values(trained_cache, capsys: pytest.CaptureFixture[str]) -> None:
    good, cache, target = trained_cache
    before = cache_digest(cache)
    cases = [
        (["attack", "--target", str(target), "--per-class", "0"], "per_class"),
        (["attack", "--target", str(target), "--classes", "0,7"], "classes [7]: the target has classes 0..2"),
        (["train", "--threads", "0"], "--threads 0: the number of threads must be >= 1"),
        (["train", "--defense", "calor", "--set", "rank=abc"], "rank: expected an integer, got 'abc'"),
        (["train", "--defense", "nonesuch"], "unknown defense 'nonesuch'"),
        (["train", "--checkpoint-every", "-5"], "--checkpoint-every -5: use seconds >= 0, or -1 for no checkpoints"),
        (["attack", "--target", str(cache / "nowhere")], "artifact directory does not exist"),
    ]
    if not torch.cuda.is_available():
        cases.append((["train", "--device", "cuda"], "CUDA is not available on this machine"))
    for argv, expected in cases:
        rc = main([*argv, "--scenario", str(good), "--cache", str(cache), "--quiet"])
        err = capsys.readouterr().err
        assert rc == 2 and expected in err and "Traceback" not in err, (argv, err)
    assert cache_digest(cache) == before


def test_a_corrupt_artifact_is_named(trained_cache, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, _cache, target = trained_cache
    broken = tmp_path / "broken-target"
    broken.mkdir()
    (broken / "meta.json").write_text((target / "meta.json").read_text())
    (broken / "weights.safetensors").write_bytes((target / "weights.safetensors").read_bytes()[:100])  # truncated
    rc = main(["evaluate", "--target", str(broken), "--scenario", str(good), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "weights.safetensors: corrupt weights file" in err


def test_an_output_directory_that_cannot_be_created(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc = main(["demo", "--out", "/proc/x", "--cache", str(tmp_path / "cache"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "/proc/x: cannot create the directory" in err and "Traceback" not in err
    assert not (tmp_path / "cache").exists()  # refused before any work


def test_a_full_disk_during_a_write_keeps_the_old_artifact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import calor.artifacts as artifacts

    path = save_artifact(tmp_path / "art", {"w": torch.ones(3)}, {"kind": "target", "v": 1})
    before = cache_digest(tmp_path)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(artifacts, "save_file", full_disk)
    with pytest.raises(ArtifactError, match="No space left on device.*previous version, if any, is unchanged"):
        save_artifact(path, {"w": torch.zeros(3)}, {"kind": "target", "v": 2})
    assert cache_digest(tmp_path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["art"]  # no temporary leftovers
    monkeypatch.undo()
    monkeypatch.setattr(Path, "write_text", full_disk)  # the JSON side: write_file_atomic
    with pytest.raises(ArtifactError, match="cannot write"):
        save_artifact(path, {"w": torch.zeros(3)}, {"kind": "target", "v": 3})
    monkeypatch.undo()
    assert cache_digest(tmp_path) == before and [p.name for p in tmp_path.iterdir()] == ["art"]


def test_a_full_disk_through_the_cli_is_one_message(trained_cache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import calor.artifacts as artifacts

    good, cache, _target = trained_cache
    before = cache_digest(cache)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(artifacts, "save_file", full_disk)
    rc = main(["train", "--defense", "lor", "--scenario", str(good), "--cache", str(cache), "--quiet", "--seed", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "No space left on device" in err and "Traceback" not in err
    assert cache_digest(cache) == before


HOLD_LOCK = """
import sys, time
from calor.locking import directory_lock
with directory_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


@pytest.mark.timeout(120)
def test_a_second_bench_on_the_same_directory_is_refused(trained_cache, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, cache, _target = trained_cache
    out = tmp_path / "bench"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        rc = main(["bench", "--scenario", str(good), "--cache", str(cache), "--out", str(out), "--quiet", "--seeds", "1"])
        err = capsys.readouterr().err
        assert rc == 2 and f"{out}: another calor bench is writing here (pid {holder.pid})" in err
        assert not (out / "cells").exists()
    finally:
        holder.kill()
        holder.wait()
    # the lock died with its holder (even a kill -9): the directory is free again
    from calor.locking import directory_lock

    with directory_lock(out):
        pass
