"""Only safetensors and JSON come out of the cache; user checkpoints are read with weights_only=True; a
malicious pickle is refused, never executed."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import calor
from calor.artifacts import WEIGHTS, load_artifact, save_artifact
from calor.errors import ArtifactError
from calor.weights import load_weights

SRC = Path(calor.__file__).parent


class Payload:
    """Unpickling this runs `os.system`: it writes a marker file if the loader executes code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def malicious_checkpoint(path: Path, marker: Path) -> Path:
    with open(path, "wb") as fh:
        pickle.dump({"state_dict": {"w": torch.zeros(2)}, "evil": Payload(marker)}, fh)
    return path


def test_a_malicious_pickle_is_refused_and_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = malicious_checkpoint(tmp_path / "model.pt", marker)
    with pytest.raises(ArtifactError, match=r"model\.pt: refused to load"):
        load_weights(evil)
    assert not marker.exists()
    # the same bytes under the cache's weights name: safetensors does not unpickle either
    art = save_artifact(tmp_path / "artifact", {"w": torch.zeros(2)}, {"kind": "target"})
    (art / WEIGHTS).write_bytes(evil.read_bytes())
    with pytest.raises(ArtifactError, match="corrupt weights file"):
        load_artifact(art)
    assert not marker.exists()


def test_the_cli_refuses_it_with_one_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    evil = malicious_checkpoint(tmp_path / "model.pt", marker)
    from calor.cli import main

    assert main(["inspect-weights", str(evil)]) == 2
    err = capsys.readouterr().err
    assert "refused to load" in err and "Traceback" not in err and not marker.exists()


def test_plain_checkpoints_load(tmp_path: Path) -> None:
    sd = {"a.weight": torch.randn(3, 2), "a.bias": torch.randn(3)}
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, tmp_path / "ddp.pth")
    save_file(sd, str(tmp_path / "w.safetensors"))
    for f in ("ddp.pth", "w.safetensors"):
        got = load_weights(tmp_path / f)
        assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)


@pytest.mark.parametrize("content, message", [
    (b"", "an empty file"),
    (b"\x80\x04garbage", "weights-only reader cannot read|corrupt pickle"),
])
def test_corrupt_checkpoints_get_a_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    f = tmp_path / "bad.pt"
    f.write_bytes(content)
    with pytest.raises(ArtifactError, match=message):
        load_weights(f)
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 5)
    with pytest.raises(ArtifactError, match="binary data of no known format"):  # told by content, not by suffix
        load_weights(tmp_path / "bad.safetensors")
    with pytest.raises(ArtifactError, match="does not exist"):
        load_weights(tmp_path / "missing.pt")


def test_no_unsafe_loader_anywhere_in_calor() -> None:
    offenders = []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        for m in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in m.group(1):
                offenders.append(f"{path.name}: torch.load without weights_only=True")
        if re.search(r"pickle\.loads?\(|import dill|import joblib|np\.load\([^)]*allow_pickle=True", text):
            offenders.append(f"{path.name}: unpickles")
        # one unpickler exists: the StyleGAN importer's, which maps every global to an inert stub
        if "Unpickler" in text and path.name != "stylegan_import.py":
            offenders.append(f"{path.name}: an Unpickler outside stylegan_import.py")
        if path.name == "stylegan_import.py" and re.search(r"import_module|__import__|sys\.modules|(?<![.\w])eval\(|(?<![.\w])exec\(", text):
            offenders.append(f"{path.name}: the inert unpickler imports or executes")
    assert not offenders, offenders
