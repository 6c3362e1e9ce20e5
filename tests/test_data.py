import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from calor import DataError, load_scenario
from calor.data import load_idx_directory, make_splits, to_model_range


def test_mnist_split_sizes_and_disjoint_classes() -> None:
    sc = load_scenario("mnist")
    d = make_splits(sc)
    assert d.x_train.shape == (2000, 1, 32, 32) and d.x_test.shape == (500, 1, 32, 32)
    # the 2,500 public digits in three parts: the attacker's 60 %, the judges' 30 %, a 10 % holdout
    assert (len(d.x_public), len(d.x_public_judge), len(d.x_public_holdout)) == (1500, 750, 250)
    assert set(d.y_train.tolist()) == set(range(5)) == set(d.y_test.tolist())
    # stratified: 400 train / 100 test per private class
    assert np.bincount(d.y_train.numpy()).tolist() == [400] * 5
    tr, te, pu, pj, ph = (set(d.info["indices"][k]) for k in ("private_train", "private_test", "public", "public_judge",
                                                               "public_holdout"))
    parts = [tr, te, pu, pj, ph]
    assert all(not (a & b) for i, a in enumerate(parts) for b in parts[i + 1:])
    assert len(pu | pj | ph) == 2500
    assert set(d.info["private_classes"]).isdisjoint(d.info["public_classes"])
    assert d.x_train.min() >= -1 and d.x_train.max() <= 1


def test_the_public_cut_is_stratified_and_keeps_the_private_split() -> None:
    sc = load_scenario("mnist")
    d = make_splits(sc)
    assert np.bincount(d.y_public.numpy()).tolist() == [300] * 5
    assert np.bincount(d.y_public_judge.numpy()).tolist() == [150] * 5
    # the judge trains on its own public images; the floor and the realism reference are the holdout
    assert d.judge_public()[0] is d.x_public_judge and d.public_reference() is d.x_public_holdout
    shared = make_splits(sc.with_overrides({"data.judge_public_fraction": 0.0, "data.public_holdout_fraction": 0.0}))
    assert len(shared.x_public) == 2500 and shared.x_public_judge is None and shared.public_reference() is shared.x_public
    assert shared.info["indices"]["private_test"] == d.info["indices"]["private_test"]
    assert sc.data.judge_public_fraction == 0.3  # None resolves by judge_classes
    assert sc.with_overrides({"judge_classes": "private", "data.judge_public_fraction": None}).data.judge_public_fraction == 0.0


@pytest.mark.parametrize("cut", [{"data.judge_public_fraction": 0.7, "data.public_holdout_fraction": 0.3},
                                 {"data.public_holdout_fraction": -0.1}, {"data.judge_public_fraction": 1.0}])
def test_a_public_cut_that_leaves_the_attacker_nothing_is_refused(cut) -> None:
    from calor import ConfigError

    with pytest.raises(ConfigError, match="judge_public_fraction"):
        load_scenario("mnist").with_overrides(cut)


def test_split_is_deterministic_and_seeded() -> None:
    sc = load_scenario("mnist")
    a, b = make_splits(sc), make_splits(sc)
    assert a.info["indices"] == b.info["indices"]
    c = make_splits(sc.with_overrides({"data.split_seed": 1}))
    assert c.info["indices"]["private_test"] != a.info["indices"]["private_test"]


def test_padding_28_to_32_is_exact() -> None:
    img = np.full((1, 28, 28), 255, dtype=np.uint8)
    x = to_model_range(img, 32)
    assert x.shape == (1, 1, 32, 32)
    assert x[0, 0, 2:30, 2:30].eq(1).all() and x[0, 0, :2].eq(-1).all()
    assert to_model_range(img, 16).shape == (1, 1, 16, 16)


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


def test_idx_directory_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (30, 28, 28), dtype=np.uint8)
    labels = np.repeat(np.arange(10), 3).astype(np.uint8)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", imgs)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    x, y = load_idx_directory(str(tmp_path))
    assert np.array_equal(x, imgs) and np.array_equal(y, labels)


def test_idx_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a directory"):
        load_idx_directory(str(tmp_path / "nope"))
    with pytest.raises(DataError, match="no train"):
        load_idx_directory(str(tmp_path))
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"garbage!")
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"garbage!")
    with pytest.raises(DataError, match="magic"):
        load_idx_directory(str(tmp_path))


def test_missing_class_is_an_error() -> None:
    sc = load_scenario("mnist").with_overrides({"data.private_classes": "0,1,11"})
    with pytest.raises(DataError, match="11"):
        make_splits(sc)
