"""Shared tiny fixtures: a 16x16 scenario that trains in seconds on a CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

os.environ.setdefault("CALOR_PROGRESS", "0")
# The CLI applies calor's thread policy on every call; pin it so tests behave alike on any machine.
os.environ.setdefault("CALOR_THREADS", "2")

from calor.runtime import configure_threads  # noqa: E402

configure_threads()

TINY = {
    "name": "tiny",
    "description": "16x16, 40 digits per class, a few steps everywhere",
    "resolution": 16,
    "data": {"source": "mnist-embedded", "private_classes": [0, 1, 2], "public_classes": [5, 6, 7],
             "test_fraction": 0.25, "split_seed": 0, "max_per_class": 40},
    "target": {"arch": "cnn", "width": 8, "feature_dim": 16, "epochs": 2, "batch_size": 32, "lr": 0.003},
    "evaluation": {"arch": "resnet", "width": 4, "feature_dim": 16, "epochs": 2, "batch_size": 32, "lr": 0.003},
    "prior": {"kind": "dcgan", "width": 8, "z_dim": 16, "steps": 10, "batch_size": 16},
    "attack": {"per_class": 2, "iterations": 8},
    "defenses": {"calor": {"rank": 2, "ca_epochs": 1, "ca_lr": 0.001},
                 "lor": {"rank": 2}, "ca": {"ca_epochs": 1, "ca_lr": 0.001},
                 "ls-ft": {"rank": 2, "ca_epochs": 1, "ca_lr": 0.001}},
    "seeds": [0],
}


@pytest.fixture
def tiny_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.fixture
def tiny_scenario(tiny_yaml: Path):
    from calor import load_scenario

    return load_scenario(tiny_yaml)


USER_NET = (
    "from torch import nn\n"
    "class Net(nn.Module):\n"
    "    def __init__(self, classes=3):\n"
    "        super().__init__()\n"
    "        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten())\n"
    "        self.fc = nn.Linear(128, classes)\n"
    "    def forward(self, x):\n"
    "        return self.fc(self.body(x))\n")


@pytest.fixture
def user_package(tmp_path: Path, monkeypatch):
    """A user's package `usermodels` on the import path, defining `Net`, a 16x16 one-channel classifier for
    the tiny scenario (not a calor model); removed from sys.modules afterwards."""
    import importlib
    import sys

    pkg = tmp_path / "usermodels"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(USER_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield importlib.import_module("usermodels")
    sys.modules.pop("usermodels", None)


# A CelebA-layout stand-in: 8 generated identities of 8 images and 8 of 4 (aligned 178x218 RGB JPEGs with an
# identity file). The tiny face protocol takes the 4 identities with most images; public = 24 of the rest.
FACE_IDENTITIES = [8] * 8 + [4] * 8


def face_scenario_doc(root: Path, target_arch: str = "vgg16-bn", eval_arch: str = "ir50") -> dict:
    return {
        "name": "tiny-celeba",
        "description": "CelebA layout, generated faces, 16x16 RGB",
        "resolution": 16,
        "data": {"source": "celeba", "path": str(root), "private_classes": [], "public_classes": [], "identities": 4,
                 "test_fraction": 0.25, "split_seed": 0, "crop": 108, "public_images": 24},
        "target": {"arch": target_arch, "width": 4, "feature_dim": 16, "epochs": 2, "batch_size": 8, "lr": 0.003, "flip": True},
        "evaluation": {"arch": eval_arch, "width": 4, "feature_dim": 16, "epochs": 2, "batch_size": 8, "lr": 0.003, "flip": True},
        "judge_classes": "private",
        "prior": {"kind": "dcgan", "width": 8, "z_dim": 16, "steps": 8, "batch_size": 8},
        "attack": {"per_class": 2, "iterations": 6},
        "defenses": {"calor": {"rank": 2, "ca_epochs": 1, "ca_lr": 0.001}},
        "seeds": [0],
    }


@pytest.fixture(scope="session")
def fake_celeba(tmp_path_factory) -> Path:
    from calor.data.synthetic import write_fake_faces

    root = tmp_path_factory.mktemp("fake-celeba") / "celeba"
    return write_fake_faces(root, "celeba", len(FACE_IDENTITIES), FACE_IDENTITIES)


@pytest.fixture
def face_yaml(fake_celeba: Path, tmp_path: Path, monkeypatch) -> Path:
    """The tiny face scenario (VGG16-BN target, IR-50 judge) on a private copy of the fake CelebA; its split
    file and decoded images go to this test's directory."""
    monkeypatch.setenv("CALOR_SPLIT_DIR", str(tmp_path / "splits"))
    path = tmp_path / "tiny-celeba.yaml"
    path.write_text(yaml.safe_dump(face_scenario_doc(fake_celeba)))
    return path
