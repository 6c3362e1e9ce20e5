"""Checkpoints inside long stages: killed at any moment, the same call resumes and ends bit-identical to a
run that was never interrupted (CPU, same seed, same thread count)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from calor import load_scenario
from calor.artifacts import load_artifact
from calor.checkpoint import Checkpointer, flatten, unflatten
from calor.prior_store import Priors
from calor.workspace import Workspace
from calor.targets import train_target
from calor.errors import ConfigError

from .conftest import TINY

GAN_SCRIPT = """
import sys
from calor import load_scenario
from calor.prior_store import Priors
from calor.workspace import Workspace
from calor.runtime import configure_threads
configure_threads(1)
scenario = load_scenario(sys.argv[1])
print(Priors(scenario, 0, Workspace(cache=sys.argv[2], checkpoint_every=0, packaged=False)).gan().path, flush=True)
"""


def run_gan(yaml_file: Path, cache: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "CALOR_PROGRESS": "1"}
    return subprocess.Popen([sys.executable, "-c", GAN_SCRIPT, str(yaml_file), str(cache)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def snapshot_step(cache: Path) -> int:
    """The step of the newest finished GAN snapshot under `cache` (-1 if none)."""
    metas = list((cache / "checkpoints").glob("priors/*/snapshot-*/meta.json"))
    steps = []
    for m in metas:
        try:
            steps.append(int(json.loads(m.read_text())["position"].split()[1].split("/")[0]))
        except (OSError, ValueError, KeyError):  # being replaced right now
            pass
    return max(steps, default=-1)


def weights(path: str | Path) -> dict[str, torch.Tensor]:
    return load_artifact(Path(path)).tensors


PRIORS = {"dcgan": {**TINY["prior"], "steps": 400},
          "stylegan2": {"kind": "stylegan2", "width": 8, "z_dim": 16, "steps": 150, "batch_size": 16, "lr": 0.002,
                        "gp_weight": 1.0, "style_mixing": 0.5, "pl_weight": 2.0}}


@pytest.mark.timeout(400)
@pytest.mark.parametrize("kind", list(PRIORS))
def test_a_gan_prior_killed_with_sigkill_resumes_bit_identical(kind: str, tmp_path: Path) -> None:
    steps = PRIORS[kind]["steps"]
    sc = {**TINY, "prior": PRIORS[kind]}
    yaml_file = tmp_path / "gan.yaml"
    yaml_file.write_text(yaml.safe_dump(sc))

    straight = run_gan(yaml_file, tmp_path / "straight")
    out, err = straight.communicate(timeout=200)
    assert straight.returncode == 0, err
    reference = weights(out.strip())

    victim = run_gan(yaml_file, tmp_path / "killed")
    deadline = time.time() + 150
    while snapshot_step(tmp_path / "killed") < 40 and victim.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert victim.poll() is None, "the GAN finished before it could be killed; make it longer"
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    killed_at = snapshot_step(tmp_path / "killed")
    assert victim.returncode == -signal.SIGKILL and 40 <= killed_at < steps
    assert not list((tmp_path / "killed").glob("priors/*/meta.json"))  # no finished prior yet

    again = run_gan(yaml_file, tmp_path / "killed")
    out2, err2 = again.communicate(timeout=200)
    assert again.returncode == 0, err2
    assert "resuming from checkpoint" in err2
    resumed = weights(out2.strip())
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)
    assert not (tmp_path / "killed" / "checkpoints" / "priors").exists() or not any((tmp_path / "killed" / "checkpoints" / "priors").iterdir())


class Crash(Exception):
    pass


def crash_after_snapshots(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """Make the process 'die' (raise Crash) right after its n-th snapshot is written."""
    real_save = Checkpointer.save
    calls = {"n": 0}

    def save_then_crash(self: Checkpointer, *args, **kwargs) -> None:
        real_save(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == n:
            raise Crash

    monkeypatch.setattr(Checkpointer, "save", save_then_crash)


def spy_resumes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Positions that Checkpointer.load resumed from (so a test sees that work was resumed, not redone)."""
    positions: list[str] = []
    real_load = Checkpointer.load

    def load(self: Checkpointer):
        got = real_load(self)
        if got is not None:
            positions.append(str(got[0].get("step", got[0].get("epoch"))))
        return got

    monkeypatch.setattr(Checkpointer, "load", load)
    return positions


@pytest.mark.parametrize("defense", ["none", "calor", "tl"])
def test_classifier_training_resumes_bit_identical_after_a_crash(tiny_yaml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  defense: str) -> None:
    sc = load_scenario(tiny_yaml).with_overrides({"target.epochs": 4})
    reference = train_target(sc, defense, seed=0, ws=Workspace(cache=tmp_path / "a", checkpoint_every=None, packaged=False))

    crash_after_snapshots(monkeypatch, 3)  # dies right after its third snapshot
    ws = Workspace(cache=tmp_path / "b", checkpoint_every=0, packaged=False)
    with pytest.raises(Crash):
        train_target(sc, defense, seed=0, ws=ws)
    monkeypatch.undo()
    assert list((tmp_path / "b" / "checkpoints").rglob("snapshot-*"))
    resumes = spy_resumes(monkeypatch)
    resumed = train_target(sc, defense, seed=0, ws=ws)
    assert len(resumes) == 1
    ref_sd, got_sd = reference.model.state_dict(), resumed.model.state_dict()
    assert ref_sd.keys() == got_sd.keys() and all(torch.equal(ref_sd[k], got_sd[k]) for k in ref_sd)
    assert [h["loss"] for h in resumed.meta["history"] if h["epoch"] is not None] == \
           [h["loss"] for h in reference.meta["history"] if h["epoch"] is not None]
    assert not list((tmp_path / "b" / "checkpoints").rglob("snapshot-*"))  # removed once the artifact exists


def test_a_snapshot_of_other_work_is_ignored(tmp_path: Path) -> None:
    a = Checkpointer(tmp_path / "ck", {"config": 1}, every_seconds=0)
    a.save("step 1", {"w": torch.ones(2), "step": 1}, order=1)
    assert a.load()[0]["step"] == 1
    assert Checkpointer(tmp_path / "ck", {"config": 2}, every_seconds=0).load() is None
    assert Checkpointer(tmp_path / "ck", {"config": 1}, every_seconds=None).load() is None  # checkpoints off


def test_an_older_snapshot_is_kept_until_a_newer_one_is_complete(tmp_path: Path) -> None:
    ck = Checkpointer(tmp_path / "ck", {"k": 0}, every_seconds=0)
    ck.save("step 1", {"step": 1}, order=1)
    ck.save("step 2", {"step": 2}, order=2)
    assert [p.name for p in (tmp_path / "ck").iterdir()] == ["snapshot-000000000002"]
    # a half-written newer snapshot (no meta.json: killed mid-write) is skipped
    (tmp_path / "ck" / "snapshot-000000000003").mkdir()
    assert ck.load()[0]["step"] == 2


def test_flatten_round_trips_an_optimizer_state() -> None:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.5, 0.999))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors: dict[str, torch.Tensor] = {}
    flat = json.loads(json.dumps(flatten(opt.state_dict(), "opt", tensors)))
    back = unflatten(flat, tensors)
    assert back["param_groups"] == opt.state_dict()["param_groups"]
    assert all(torch.equal(back["state"][i]["exp_avg"], opt.state_dict()["state"][i]["exp_avg"]) for i in (0, 1))


def test_a_negative_interval_is_refused() -> None:
    with pytest.raises(ConfigError, match="checkpoint interval"):
        Workspace(checkpoint_every=-1)


def test_a_per_target_gan_resumes_bit_identical_with_its_queries(tiny_scenario, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from calor import build_attack, build_classifier, make_oracle
    from calor.attacks import ThreatModel

    def prepare(cache: Path, every: float | None):
        torch.manual_seed(0)
        model = build_classifier("cnn", num_classes=3, in_channels=1, resolution=16, width=4, feature_dim=8)
        oracle = make_oracle(model, ThreatModel.WHITE_BOX, 3, (1, 16, 16))
        store = Priors(tiny_scenario, 0, Workspace(cache=cache, checkpoint_every=every, packaged=False), target_hash="t")
        prior = build_attack("plgmi", {"gan_steps": 12}).prepare(oracle, store.for_attacker())
        return prior, store

    reference, ref_store = prepare(tmp_path / "a", None)
    crash_after_snapshots(monkeypatch, 5)
    with pytest.raises(Crash):
        prepare(tmp_path / "b", 0)
    monkeypatch.undo()
    resumes = spy_resumes(monkeypatch)
    resumed, store = prepare(tmp_path / "b", 0)
    assert resumes == ["5"]  # the fifth snapshot was taken before step 5
    ref_sd, got_sd = reference.generator.state_dict(), resumed.generator.state_dict()
    assert all(torch.equal(ref_sd[k], got_sd[k]) for k in ref_sd)
    assert store.queries["plgmi-cgan"] == ref_store.queries["plgmi-cgan"] > 0  # the killed run's queries are counted


@pytest.mark.parametrize("attack", ["gmi", "lomma-gmi", "kedmi", "plgmi"])
def test_a_latent_search_resumes_bit_identical_with_its_queries(attack: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from calor import build_attack, build_classifier, make_oracle
    from calor.attacks import ThreatModel
    from calor.attacks.kedmi import KedmiPrior, KPlusOneDiscriminator
    from calor.attacks.lomma import LommaPrior
    from calor.attacks.plgmi import ConditionalPrior
    from calor.attacks.priors import GanPrior
    from calor.models.cgan import ConditionalGenerator
    from calor.models.gan import Critic, Generator

    torch.manual_seed(0)
    model = build_classifier("cnn", num_classes=3, in_channels=1, resolution=16, width=4, feature_dim=8)
    prior = GanPrior(Generator(8, 16, 1, 4).eval(), Critic(16, 1, 4).eval(), "dcgan")
    settings = {"gmi": {"update": "adam"}, "lomma-gmi": {"identity": "ce"}, "kedmi": {"samples_per_step": 3}, "plgmi": {}}[attack]
    priors = {"gmi": lambda: prior, "lomma-gmi": lambda: LommaPrior(prior, [model], None),
              "kedmi": lambda: KedmiPrior(prior.generator, KPlusOneDiscriminator(3, 16, 1, 4, 4, 2).eval(), 0),
              "plgmi": lambda: ConditionalPrior(ConditionalGenerator(3, 8, 16, 1, 4).eval(), None, {})}

    def run(ckpt: Checkpointer | None):
        oracle = make_oracle(model, ThreatModel.WHITE_BOX, 3, (1, 16, 16))
        torch.manual_seed(1)
        return build_attack(attack, {"iterations": 12, **settings}).run(oracle, priors[attack](), [0, 2], 2, seed=3, checkpoint=ckpt)

    reference = run(None)
    crash_after_snapshots(monkeypatch, 7)
    with pytest.raises(Crash):
        run(Checkpointer(tmp_path / "ck", {"attack": attack}, every_seconds=0))
    monkeypatch.undo()
    resumes = spy_resumes(monkeypatch)
    resumed = run(Checkpointer(tmp_path / "ck", {"attack": attack}, every_seconds=0))
    assert resumes == ["7"]
    assert torch.equal(resumed.images, reference.images) and torch.equal(resumed.trajectory, reference.trajectory)
    per_step = {"kedmi": 2 * 3}.get(attack, 4)
    assert resumed.queries == reference.queries >= 12 * per_step


def test_surrogates_trained_in_a_row_resume_after_the_finished_ones(tiny_scenario, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from calor import build_attack, build_classifier, make_oracle
    from calor.attacks import ThreatModel

    settings = {"surrogates": 2, "distill_epochs": 3, "identity": "ce", "iterations": 2}

    def prepare(cache: Path, every: float | None):
        torch.manual_seed(0)
        model = build_classifier("cnn", num_classes=3, in_channels=1, resolution=16, width=4, feature_dim=8)
        oracle = make_oracle(model, ThreatModel.WHITE_BOX, 3, (1, 16, 16))
        store = Priors(tiny_scenario, 0, Workspace(cache=cache, checkpoint_every=every, packaged=False), target_hash="t")
        return build_attack("lomma-gmi", settings).prepare(oracle, store.for_attacker())

    reference = prepare(tmp_path / "a", None)
    # snapshots: GAN prior steps 1..9, surrogate 0 epochs 1, 2 and its end, then surrogate 1 epoch 1: dies there
    crash_after_snapshots(monkeypatch, 13)
    with pytest.raises(Crash):
        prepare(tmp_path / "b", 0)
    monkeypatch.undo()
    resumes = spy_resumes(monkeypatch)
    resumed = prepare(tmp_path / "b", 0)
    assert resumes == ["3", "1"]  # surrogate 0 taken whole from its last snapshot, surrogate 1 from epoch 1
    for ref, got in zip(reference.surrogates, resumed.surrogates):
        assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), got.state_dict().values()))
    assert not list((tmp_path / "b" / "checkpoints").rglob("snapshot-*"))


def test_the_disabled_checkpointer_touches_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from calor.checkpoint import no_checkpoints

    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("x")
    off = no_checkpoints()
    off.save("step 1", {"step": 1}, order=1)
    off.sub("part").clear()
    off.clear()
    assert off.load() is None and [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
