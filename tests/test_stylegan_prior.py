"""`prior.kind: stylegan2`: calor trains a StyleGAN2 prior on the public split, caches it like the other
priors, every latent attack searches it, and a scenario can extend another to use it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from calor import load_scenario
from calor.errors import ConfigError
from calor.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from calor.prior_store import Priors, gan_key
from calor.workspace import Workspace

from .conftest import TINY

STYLEGAN = {"kind": "stylegan2", "width": 8, "z_dim": 16, "steps": 30, "batch_size": 16, "lr": 0.002, "gp_weight": 1.0,
            "style_mixing": 0.5, "pl_weight": 2.0}


@pytest.fixture
def stylegan_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "sg.yaml"
    path.write_text(yaml.safe_dump({**TINY, "name": "tiny-stylegan2", "prior": STYLEGAN}))
    return path


@pytest.mark.timeout(300)
def test_a_stylegan2_prior_trains_is_cached_and_is_searched(stylegan_yaml: Path, tmp_path: Path, capsys) -> None:
    sc = load_scenario(stylegan_yaml)
    ws = Workspace(cache=tmp_path / "cache", packaged=False)
    prior = Priors(sc, 0, ws).gan()
    assert isinstance(prior.generator, StyleGAN2Generator) and isinstance(prior.critic, StyleGAN2Discriminator)
    assert Path(prior.path).name.startswith("stylegan2-")
    z = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        images = prior.generator(z)
        assert images.shape == (4, 1, 16, 16) and torch.isfinite(images).all()
        assert prior.energy(images).shape == (4,)
        assert prior.generator.w_avg.abs().sum() > 0  # the mapping tracked its mean w
        # loaded from the cache, not retrained: the same images
        again = Priors(sc, 0, ws).gan()
        assert again.path == prior.path and torch.equal(again.generator(z), images)
    meta = json.loads((Path(prior.path) / "meta.json").read_text())
    assert meta["history"] and {"d_loss", "g_loss", "r1", "pl_mean"} <= set(meta["history"][0])
    # every latent attack runs on it: GMI through the bench
    from calor.cli import main

    out = tmp_path / "bench"
    assert main(["bench", "--scenario", str(stylegan_yaml), "--defenses", "none", "--attacks", "gmi", "--out", str(out),
                 "--cache", str(tmp_path / "cache"), "--quiet"]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert any(r["attack"] == "gmi" and r["n"] == 6 for r in rows)


def test_the_stylegan2_fields_leave_older_prior_keys_unchanged() -> None:
    sc = load_scenario("mnist")
    key, rel = gan_key(sc, 2)
    assert set(key["prior"]) == {"kind", "width", "z_dim", "steps", "batch_size", "lr", "n_critic", "gp_weight"}
    assert rel == "priors/dcgan-d1da8bc000838a90"  # the shipped demo prior's key (src/calor/pretrained/store)
    key2, _ = gan_key(sc.with_overrides({"prior.style_mixing": 0.5}), 2)
    assert key2["prior"]["style_mixing"] == 0.5


def test_the_shipped_stylegan2_scenario_extends_mnist(tmp_path: Path) -> None:
    sc = load_scenario("mnist-stylegan2")
    base = load_scenario("mnist")
    assert sc.prior.kind == "stylegan2" and sc.name == "mnist-stylegan2"
    assert sc.data == base.data and sc.defenses == base.defenses and sc.attacks == base.attacks and sc.primary == base.primary
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({"extends": str(tmp_path / "b.yaml")}))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({"extends": str(tmp_path / "a.yaml")}))
    with pytest.raises(ConfigError, match="extends"):
        load_scenario(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="power-of-two resolution"):
        load_scenario("mnist-stylegan2").with_overrides({"resolution": 24})
