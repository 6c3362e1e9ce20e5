"""The face datasets' on-disk layouts, the identity protocol's split files, decoding and their errors,
on generated stand-ins (no package ships face images)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from calor.data import make_splits
from calor.data.decode import Decode, decode_images
from calor.data.listings import LISTINGS
from calor.data.synthetic import write_fake_faces
from calor.errors import ConfigError, DataError
from calor.scenario import load_scenario

# 6 identities with 8 images, 6 with 5: the protocol must pick the first six
COUNTS = [8] * 6 + [5] * 6


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faces")
    write_fake_faces(root / "celeba", "celeba", 12, COUNTS)
    write_fake_faces(root / "facescrub", "facescrub", 6, 6)
    write_fake_faces(root / "ffhq", "ffhq", 4, 5)
    write_fake_faces(root / "folder", "image-folder", 4, 6)
    return root


def _scenario(tmp_path: Path, data: dict, resolution: int = 16, **extra) -> object:
    doc = {"name": "fake-faces", "resolution": resolution, "judge_classes": "private",
           "data": {"private_classes": [], "public_classes": [], "test_fraction": 0.25, "split_seed": 0, **data}, **extra}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_scenario(path)


def test_layout_readers_list_files_and_identities(faces: Path) -> None:
    celeba = LISTINGS.get("celeba")(faces / "celeba")
    assert len(celeba.files) == sum(COUNTS) and len(set(celeba.identities)) == 12
    scrub = LISTINGS.get("facescrub")(faces / "facescrub")
    assert len(scrub.files) == 36 and len(set(scrub.identities)) == 6
    ffhq = LISTINGS.get("ffhq")(faces / "ffhq")
    assert len(ffhq.files) == 20 and ffhq.identities is None
    folder = LISTINGS.get("image-folder")(faces / "folder")
    assert sorted(set(folder.identities)) == [f"class_{k:03d}" for k in range(4)]


def test_celeba_protocol_split_counts_and_file(faces: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CALOR_DATA_ROOT", str(faces))
    monkeypatch.setenv("CALOR_SPLIT_DIR", str(tmp_path / "splits"))
    sc = _scenario(tmp_path, {"source": "celeba", "path": "celeba", "identities": 6, "crop": 108, "public_images": 20})
    d = make_splits(sc)
    # the 6 identities with 8 images are private: 2 test + 6 train each; public = 20 of the other 30 images,
    # cut in the attacker's 18 and a holdout of 2 (judge_classes private here: no judge share)
    assert d.num_classes == 6 and d.class_names == [str(k) for k in range(1, 7)]
    assert (len(d.x_train), len(d.x_test), len(d.x_public), len(d.x_public_judge), len(d.x_public_holdout)) == (36, 12, 18, 0, 2)
    assert d.image_shape == (3, 16, 16) and d.x_train.min() >= -1 and d.x_train.max() <= 1
    assert sorted(d.y_public.unique().tolist()) == list(range(6))  # labelled public identities, numbered 0..5
    files = list((tmp_path / "splits").glob("calor-split-celeba-*.json"))
    assert len(files) == 1 and d.info["split_file"] == files[0].name
    body = json.loads(files[0].read_text())
    assert len(body["train"]) == 36 and not set(body["train"]) & set(body["test"]) and not set(body["public"]) & set(body["train"])
    # decoded once: the cache is there and a second load gives the same tensors (from the split file)
    assert list((tmp_path / "splits").glob("calor-decoded-16px-*.npy"))
    again = make_splits(sc)
    assert (again.x_train == d.x_train).all() and again.info["split_checksum"] == d.info["split_checksum"]


def test_a_changed_copy_of_the_data_is_reported_not_resplit(faces: Path, tmp_path: Path, monkeypatch) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(faces / "celeba", copy / "celeba")
    monkeypatch.setenv("CALOR_DATA_ROOT", str(copy))
    sc = _scenario(tmp_path, {"source": "celeba", "path": "celeba", "identities": 6, "crop": 108, "public_images": 20})
    make_splits(sc)
    ident = copy / "celeba" / "identity_CelebA.txt"
    ident.write_text(ident.read_text().replace("000001.jpg 1", "000001.jpg 2"))
    with pytest.raises(DataError, match="differs from the copy the split file"):
        make_splits(sc)
    split = next((copy / "celeba").glob("calor-split-*.json"))
    body = json.loads(split.read_text())
    body["train"] = body["train"][1:]
    split.write_text(json.dumps(body))
    with pytest.raises(DataError, match="modified or is corrupt"):
        make_splits(sc)


def test_facescrub_with_ffhq_public(faces: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CALOR_DATA_ROOT", str(faces))
    monkeypatch.setenv("CALOR_SPLIT_DIR", str(tmp_path / "splits"))
    sc = _scenario(tmp_path, {"source": "facescrub", "path": "facescrub", "identities": 6, "public_source": "ffhq",
                              "public_path": "ffhq", "public_images": 12, "public_crop": 88}, resolution=32)
    d = make_splits(sc)
    # unlabelled public images: no judge share (judge_classes private), a holdout of 1
    assert (len(d.x_train) + len(d.x_test), len(d.x_public), len(d.x_public_judge), len(d.x_public_holdout)) == (36, 11, 0, 1)
    assert d.image_shape == (3, 32, 32) and (d.y_public == -1).all() and d.num_public_classes == 0
    assert d.info["public_listing"]["layout"].startswith("FFHQ")


def test_image_folder_as_class_list_source(faces: Path, tmp_path: Path) -> None:
    sc = _scenario(tmp_path, {"source": "image-folder", "path": str(faces / "folder"), "private_classes": [0, 1],
                              "public_classes": [2, 3]})
    d = make_splits(sc)
    assert d.image_shape == (3, 16, 16) and len(d.x_train) + len(d.x_test) == 12
    assert len(d.x_public) + len(d.x_public_judge) + len(d.x_public_holdout) == 12


def test_decode_crops_and_keeps_grayscale(tmp_path: Path) -> None:
    from PIL import Image

    files = []
    for k, mode in enumerate(["L", "L"]):
        f = tmp_path / f"{k}.png"
        Image.fromarray(np.full((40, 30), 50 * k, dtype=np.uint8), mode).save(f)
        files.append(f)
    out = decode_images(files, tmp_path, Decode(16), tmp_path / "cache", what="test")
    assert out.shape == (2, 16, 16) and out.dtype == np.uint8 and int(out[1].mean()) == 50
    with pytest.raises(DataError, match="smaller than the 108-pixel crop"):
        decode_images(files, tmp_path, Decode(16, 108), tmp_path / "cache", what="test")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match="cannot decode image"):
        decode_images([files[0], bad], tmp_path, Decode(16), tmp_path / "cache2", what="test")


def test_error_messages_name_the_missing_piece(faces: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("CALOR_DATA_ROOT", raising=False)
    sc = _scenario(tmp_path, {"source": "celeba", "path": "celeba-nowhere", "identities": 6})
    with pytest.raises(DataError, match="pass --data-root DIR or set CALOR_DATA_ROOT"):
        make_splits(sc)
    monkeypatch.setenv("CALOR_DATA_ROOT", str(tmp_path))
    with pytest.raises(DataError, match="celeba-nowhere does not exist"):
        make_splits(sc)
    (tmp_path / "celeba-nowhere").mkdir()
    with pytest.raises(DataError, match="identity_CelebA.txt"):
        make_splits(sc)
    monkeypatch.setenv("CALOR_DATA_ROOT", str(faces))
    sc = _scenario(tmp_path, {"source": "celeba", "path": "celeba", "identities": 50})
    with pytest.raises(DataError, match="the 50 identities with most images, but the data has 12"):
        make_splits(sc)
    sc = _scenario(tmp_path, {"source": "celeba", "path": "celeba", "identities": 6, "public_images": 500})
    with pytest.raises(DataError, match="asks for 500 public images but only 30"):
        make_splits(sc)
    with pytest.raises(ConfigError, match="needs labelled public data"):
        _scenario(tmp_path, {"source": "celeba", "path": "celeba", "identities": 6, "public_source": "ffhq", "public_path": "ffhq"},
                  judge_classes="private+public")
    with pytest.raises(ConfigError, match="public_source and data.public_path go together"):
        _scenario(tmp_path, {"source": "celeba", "path": "celeba", "identities": 6, "public_source": "ffhq"})


def test_builtin_face_scenarios_load_and_name_their_data() -> None:
    for name, ids in (("celeba64", 1000), ("ffhq-celeba64", 1000), ("facescrub64", 530)):
        sc = load_scenario(name)
        assert sc.num_classes == ids and sc.resolution == 64 and sc.judge_classes == "private"
    assert len(load_scenario("celeba64").attacked_classes()) == 300
    assert load_scenario("fashion-mnist").data.path == "/usr/share/datasets/fashion-mnist"


def test_data_commands_write_a_layout_and_prepare_its_split(tmp_path: Path, monkeypatch, capsys) -> None:
    from calor.cli import main

    monkeypatch.delenv("CALOR_SPLIT_DIR", raising=False)
    monkeypatch.setenv("CALOR_DATA_ROOT", "")  # --data-root below sets it for the process: restored after the test
    assert main(["data", "fake", str(tmp_path / "root" / "celeba"), "--layout", "celeba", "--identities", "6",
                 "--per-identity", "5"]) == 0
    sc = tmp_path / "s.yaml"
    sc.write_text(yaml.safe_dump({"name": "cli-faces", "resolution": 16, "judge_classes": "private",
                                  "data": {"source": "celeba", "path": "celeba", "private_classes": [], "public_classes": [],
                                           "identities": 4, "test_fraction": 0.2, "crop": 108}}))
    capsys.readouterr()
    assert main(["data", "prepare", "--scenario", str(sc), "--data-root", str(tmp_path / "root"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "4 private classes, images (3, 16, 16)" in out and "private_train       16 images" in out
    # 10 public images: the attacker's 9 and a holdout of 1 that no model sees (no judge share: judge_classes private)
    assert "public               9 images" in out and "public_holdout       1 images" in out
    assert "split file     calor-split-celeba-" in out
    assert list((tmp_path / "root" / "celeba").glob("calor-split-celeba-*.json"))  # beside the data by default
    assert main(["data", "fake", str(tmp_path / "x"), "--identities", "2", "--per-identity", "0"]) == 2
    assert main(["data", "prepare", "--scenario", str(sc), "--data-root", str(tmp_path / "nowhere"), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cache_keys_name_the_copy_of_the_data(tmp_path: Path, monkeypatch) -> None:
    from calor.scenario_data import data_key

    for copy, seed in (("a", 0), ("b", 1)):
        write_fake_faces(tmp_path / copy / "celeba", "celeba", 6, 5, seed=seed)
    monkeypatch.setenv("CALOR_SPLIT_DIR", str(tmp_path / "splits"))
    sc = _scenario(tmp_path, {"source": "celeba", "path": "celeba", "identities": 4, "crop": 108})
    keys = []
    for copy in ("a", "b"):
        monkeypatch.setenv("CALOR_DATA_ROOT", str(tmp_path / copy))
        monkeypatch.setenv("CALOR_SPLIT_DIR", str(tmp_path / "splits" / copy))
        keys.append(data_key(sc))
    # same scenario settings, other images: another key, so no artifact of one copy stands in for the other
    assert keys[0]["data"] == keys[1]["data"] and keys[0]["data_content"] != keys[1]["data_content"]


def test_a_mixed_folder_decodes_to_rgb(tmp_path: Path) -> None:
    from PIL import Image

    gray, color = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(np.full((20, 20), 90, dtype=np.uint8), "L").save(gray)
    Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8) + np.array([200, 10, 10], dtype=np.uint8), "RGB").save(color)
    out = decode_images([gray, color], tmp_path, Decode(8), tmp_path / "cache", what="mixed")
    assert out.shape == (2, 8, 8, 3) and (out[0] == 90).all() and tuple(out[1, 0, 0]) == (200, 10, 10)
