"""Every kind of file a user hands calor, fuzzed by content: checkpoints, scenario files, split files, image
folders, harden records and bench plans — empty, text, random, truncated, wrong-format, mutated and oversized.
Each is refused with exit 2 and one message that names the file and says what it is; never a traceback."""

from __future__ import annotations

import json
import os
import pickle
import struct
import zlib
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from calor import scenario_data
from calor.cli import main
from calor.errors import ArtifactError, ConfigError
from calor.filekinds import describe, sniff
from calor.scenario import load_scenario
from calor.weights import load_weights

from .conftest import TINY

FUZZ = settings(max_examples=int(os.environ.get("CALOR_FUZZ_EXAMPLES", "80")), deadline=None,
                derandomize=os.environ.get("CALOR_FUZZ_EXAMPLES") is None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def refused(argv: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    """Run the CLI: exit 2, one `calor CMD: error:` message holding every needle, no traceback."""
    scenario_data._DATA.clear()  # the split is memoised per process: read the files again
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, (argv, rc, err)
    assert "Traceback" not in err and err.count("error:") == 1, err
    for n in needles:
        assert n in err, (n, err)
    return err


def _png(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height (one row of data: a decompression bomb when large)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1))) + chunk(b"IEND", b"")


def _valid_pt(path: Path) -> bytes:
    torch.save({"fc.weight": torch.ones(3, 4), "fc.bias": torch.zeros(3)}, path)
    return path.read_bytes()


def _valid_safetensors(path: Path) -> bytes:
    save_file({"fc.weight": torch.ones(3, 4), "fc.bias": torch.zeros(3)}, str(path))
    return path.read_bytes()


def bad_weight_files(d: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, a phrase its refusal must hold)."""
    d.mkdir(parents=True, exist_ok=True)
    pt, st_ = _valid_pt(d / "valid.pt"), _valid_safetensors(d / "valid.safetensors")
    header_len = struct.unpack("<Q", st_[:8])[0]
    cases: dict[str, tuple[bytes, str, str]] = {
        "empty.pt": (b"", "an empty file", ""),
        "notes.txt": (b"model trained on 2024-01-01\nlr 0.1\n", "a text file beginning 'model trained", ""),
        "notes.pt": (b"hello", "a text file", ""),
        "config.json": (json.dumps({"lr": 0.1}).encode(), "a JSON document", ""),
        "random.bin": (bytes(range(7, 250)) * 5, "binary data of no known format", ""),
        "random.safetensors": (b"\x13\x37" * 100, "binary data of no known format", ""),
        "image.pt": (_png(4, 4), "a PNG image", ""),
        "truncated.pt": (pt[: len(pt) // 2], "not a readable PyTorch checkpoint", ""),
        "truncated.safetensors": (st_[: len(st_) - 7], "corrupt safetensors file", ""),
        "header-too-long.safetensors": (struct.pack("<Q", 1 << 40) + st_[8:], "corrupt safetensors file", ""),
        "bad-header.safetensors": (st_[:8] + b"{" + b"\xff" * (header_len - 1) + st_[8 + header_len:], "corrupt safetensors file", ""),
        "mutated.safetensors": (st_[:8] + st_[8:8 + header_len].replace(b"F32", b"F99") + st_[8 + header_len:], "corrupt safetensors file", ""),
        "code.pt": (pickle.dumps({"x": os.system}, protocol=2), "could run code", "posix.system"),
        "protocol4.pt": (pickle.dumps({"x": 1}, protocol=4), "the weights-only reader cannot read", ""),
        "list.pt": (b"", "expected a state dict", "list"),
    }
    out = {}
    for name, (content, phrase, _) in cases.items():
        f = d / name
        if name == "list.pt":
            torch.save([torch.ones(2)], f)
        else:
            f.write_bytes(content)
        out[name] = (f, phrase)
    out["directory"] = (d / "adir", "a directory")
    (d / "adir").mkdir(exist_ok=True)
    return out


def test_sniff_names_formats_by_content(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(_valid_safetensors(tmp_path / "x.safetensors"))
    assert sniff(tmp_path / "a.bin") == "safetensors"  # by content, not by suffix
    assert sniff(tmp_path / "x.safetensors") == "safetensors"
    _valid_pt(tmp_path / "m.pt")
    assert sniff(tmp_path / "m.pt") == "zip"
    (tmp_path / "t.yaml").write_text("name: x\n")
    assert sniff(tmp_path / "t.yaml") == "text" and describe(tmp_path / "t.yaml").startswith("a text file beginning 'name: x'")
    (tmp_path / "u.txt").write_text("é" * 40)  # a multi-byte character cut at the window's edge is still text
    assert sniff(tmp_path / "u.txt") == "text"
    assert sniff(tmp_path / "nothing") == "missing" and sniff(tmp_path) == "directory"


def test_every_bad_checkpoint_is_refused_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, (f, phrase) in bad_weight_files(tmp_path).items():
        with pytest.raises(ArtifactError) as exc:
            load_weights(f)
        assert str(f) in str(exc.value) and phrase in str(exc.value), (name, str(exc.value))
        refused(["inspect-weights", str(f)], capsys, str(f), phrase)
    assert load_weights(tmp_path / "valid.pt")["fc.bias"].shape == (3,)
    assert load_weights(tmp_path / "valid.safetensors")["fc.weight"].shape == (3, 4)


def test_bad_checkpoints_through_harden_audit_and_prior_import(tmp_path: Path, tiny_yaml: Path, user_package,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    files = bad_weight_files(tmp_path / "w")
    model = ["--module", "usermodels:Net", "--scenario", str(tiny_yaml), "--cache", str(tmp_path / "cache")]
    for name in ("notes.txt", "truncated.pt", "code.pt", "empty.pt"):
        f, phrase = files[name]
        refused(["harden", *model, "--checkpoint", str(f), "--out", str(tmp_path / "h.safetensors")], capsys, str(f), phrase)
        refused(["audit", *model, "--checkpoint", str(f), "--out", str(tmp_path / "audit")], capsys, str(f), phrase)
    for name in ("notes.txt", "random.bin", "truncated.safetensors", "code.pt"):
        f, phrase = files[name]
        refused(["prior", "import", str(f), "--kind", "stylegan2", "--out", str(tmp_path / "prior")], capsys, str(f), phrase)
    for content, phrase in ((b"notes", "a text file"), (b"", "an empty file"), (b"\x80\x02" + b"\x00" * 30, "a damaged pickle"),
                            (pickle.dumps({"x": 1}, protocol=2)[:-3], "a damaged pickle")):
        pkl = tmp_path / "network-snapshot.pkl"
        pkl.write_bytes(content)
        refused(["prior", "import", str(pkl), "--kind", "stylegan2", "--out", str(tmp_path / "prior")], capsys, str(pkl), phrase)
    assert not (tmp_path / "prior").exists() and not (tmp_path / "audit" / "results.json").exists()


def test_bad_harden_records_are_named(tmp_path: Path, tiny_yaml: Path, user_package, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "net.safetensors"
    save_file({k: v.contiguous() for k, v in user_package.Net().state_dict().items()}, str(ckpt))
    record = ckpt.with_suffix(".json")
    model = ["--module", "usermodels:Net", "--scenario", str(tiny_yaml), "--cache", str(tmp_path / "cache"),
             "--checkpoint", str(ckpt), "--out", str(tmp_path / "audit")]
    for content, phrase in ((b"", "an empty file"), (b"\xff\xfe\x00garbage", "not a UTF-8 text file"), (b"{not json", "not a `calor harden` record"),
                            (b"[1, 2]", "not a `calor harden` record"), (b'{"record": {"layer": "fc"}}', "not a `calor harden` record"),
                            (b'{"record": {"layer": "fc", "rank": "eight"}}', "not a `calor harden` record"),
                            (b'{"record": {"layer": "nowhere", "rank": 2}}', "nowhere")):
        record.write_bytes(content)
        refused(["audit", *model], capsys, str(record), phrase)


def test_bad_scenario_files_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    big = tmp_path / "huge.yaml"
    with open(big, "wb") as fh:  # a sparse 9 GB file: refused by its size before a byte is read
        fh.truncate(9 << 30)
    cases = {"empty.yaml": (b"", "expected a mapping"), "binary.yaml": (bytes(range(128, 256)), "not a UTF-8 text file"),
             "image.yaml": (_png(2, 2), "a PNG image"), "list.yaml": (b"- a\n- b\n", "expected a mapping"),
             "bad.yaml": (b"name: [unclosed\n", "invalid YAML"), "tabs.yaml": (b"name:\n\t- x\n", "invalid YAML")}
    for name, (content, phrase) in cases.items():
        (tmp_path / name).write_bytes(content)
    cases["huge.yaml"] = (b"", "more than a scenario file can be")
    for name, (_, phrase) in cases.items():
        with pytest.raises(ConfigError, match="scenario"):
            load_scenario(tmp_path / name)
        refused(["train", "--scenario", str(tmp_path / name), "--cache", str(tmp_path / "c")], capsys, name, phrase)
    refused(["train", "--scenario", str(tmp_path), "--cache", str(tmp_path / "c")], capsys, "is a directory")


@pytest.fixture
def prepared_faces(tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture[str]) -> tuple[list[str], Path]:
    """A generated CelebA layout, its scenario and a first `calor data prepare` (split file written)."""
    monkeypatch.delenv("CALOR_SPLIT_DIR", raising=False)
    monkeypatch.setenv("CALOR_DATA_ROOT", "")
    root = tmp_path / "root"
    assert main(["data", "fake", str(root / "celeba"), "--layout", "celeba", "--identities", "6", "--per-identity", "5"]) == 0
    sc = tmp_path / "s.yaml"
    sc.write_text(yaml.safe_dump({"name": "fz-faces", "resolution": 16, "judge_classes": "private",
                                  "data": {"source": "celeba", "path": "celeba", "private_classes": [], "public_classes": [],
                                           "identities": 4, "test_fraction": 0.2, "crop": 108}}))
    argv = ["data", "prepare", "--scenario", str(sc), "--data-root", str(root), "--quiet"]
    assert main(argv) == 0
    capsys.readouterr()
    return argv, root / "celeba"


def test_bad_split_files_are_named(prepared_faces, capsys: pytest.CaptureFixture[str]) -> None:
    argv, data = prepared_faces
    (split,) = data.glob("calor-split-*.json")
    good = split.read_text()
    body = json.loads(good)
    first_part = next(k for k, v in body.items() if isinstance(v, list) and v)
    tampered = dict(body, **{first_part: body[first_part][1:]})
    for content, phrase in ((b"", "unreadable"), (b"\x00\xff" * 20, "unreadable"), (good[: len(good) // 2].encode(), "unreadable"),
                            (b"[]", "unreadable"), (b"{}", "unreadable"), (json.dumps(tampered).encode(), "modified or is corrupt")):
        split.write_bytes(content)
        refused(argv, capsys, str(split), phrase)
    split.write_text(good)
    assert main(argv) == 0


def test_bad_images_in_a_folder_are_named(prepared_faces, capsys: pytest.CaptureFixture[str]) -> None:
    argv, data = prepared_faces
    for cache in data.glob("calor-decoded-*.npy"):
        cache.unlink()  # decode again, reading every file
    victim = sorted(data.rglob("*.jpg"))[0]
    good = victim.read_bytes()
    for content in (b"", b"just some text", good[: len(good) // 3], bytes(range(256)) * 4, _png(200_000, 200_000)):
        victim.write_bytes(content)
        for cache in data.glob("calor-decoded-*.npy"):
            cache.unlink()
        refused(argv, capsys, victim.name, "cannot decode image")
    victim.write_bytes(good)


def test_bad_bench_plans_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench"
    out.mkdir()
    plan = out / "plan.json"
    for content in (b"", b"\xff\xfe", b"{\"cells\": [", b"[1]", b"{\"cells\": []}", b"{\"scenario_config\": 3, \"cells\": []}"):
        plan.write_bytes(content)
        refused(["report", str(out)], capsys, str(plan))


@FUZZ
@given(data=st.binary(max_size=400))
def test_random_bytes_never_escape_as_a_traceback(tmp_path: Path, data: bytes) -> None:
    for suffix in (".pt", ".safetensors", ".bin"):
        f = tmp_path / f"random{suffix}"
        f.write_bytes(data)
        try:
            sd = load_weights(f)
        except ArtifactError as exc:
            assert str(f) in str(exc)
        else:
            assert all(isinstance(v, torch.Tensor) for v in sd.values())
    f = tmp_path / "random.yaml"
    f.write_bytes(data)
    try:
        load_scenario(f)
    except ConfigError as exc:
        assert "random.yaml" in str(exc)


@FUZZ
@given(where=st.floats(0, 1), how=st.sampled_from(["flip", "cut", "insert", "zero"]), kind=st.sampled_from(["pt", "legacy", "safetensors"]))
def test_mutated_valid_checkpoints_load_or_are_refused(tmp_path: Path, where: float, how: str, kind: str) -> None:
    f = tmp_path / f"m.{'safetensors' if kind == 'safetensors' else 'pt'}"
    if kind == "safetensors":
        good = _valid_safetensors(f)
    elif kind == "pt":
        good = _valid_pt(f)
    else:
        torch.save({"fc.weight": torch.ones(3, 4)}, f, _use_new_zipfile_serialization=False)
        good = f.read_bytes()
    i = min(int(where * len(good)), len(good) - 1)
    bad = {"flip": good[:i] + bytes([good[i] ^ 0xFF]) + good[i + 1:], "cut": good[:i], "insert": good[:i] + b"\x00\x01\x02" + good[i:],
           "zero": good[:i] + b"\x00" * min(16, len(good) - i) + good[i + 16:]}[how]
    f.write_bytes(bad)
    try:
        sd = load_weights(f)
    except ArtifactError as exc:
        assert str(f) in str(exc)
    else:
        assert all(isinstance(v, torch.Tensor) for v in sd.values())


@FUZZ
@given(where=st.floats(0, 1), how=st.sampled_from(["flip", "cut", "insert"]))
def test_mutated_scenario_files_load_or_are_refused(tmp_path: Path, where: float, how: str) -> None:
    good = yaml.safe_dump(TINY).encode()
    i = min(int(where * len(good)), len(good) - 1)
    bad = {"flip": good[:i] + bytes([good[i] ^ 0x5A]) + good[i + 1:], "cut": good[:i], "insert": good[:i] + b":\n- [" + good[i:]}[how]
    f = tmp_path / "s.yaml"
    f.write_bytes(bad)
    try:
        load_scenario(f)
    except ConfigError as exc:
        assert "s.yaml" in str(exc)

