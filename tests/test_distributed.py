"""Data-parallel training under torchrun (gloo, 2 CPU processes) computes what one process computes with the
same global batch and seed: targets, judges and the GAN prior, to float rounding."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.timeout(600)

GAN_SCRIPT = """
import sys, torch
from safetensors.torch import save_file
from calor import parallel
from calor.attacks.priors import train_gan
from calor.runtime import configure_threads
from calor.scenario import PriorSpec
configure_threads(1)
parallel.init_from_environment("cpu")
x = torch.rand(48, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
spec = PriorSpec(kind=sys.argv[2], width=8, z_dim=16, steps=6, batch_size=16, n_critic=2)
prior, _ = train_gan(x, spec, device=torch.device("cpu"), seed=3)
if parallel.is_main():
    z = torch.randn(8, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        save_file({"samples": prior.generator(z), "scores": prior.critic(x)}, sys.argv[1])
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(argv: list[str], processes: int, tmp_path: Path) -> str:
    env = {**os.environ, "CALOR_THREADS": "1", "OMP_NUM_THREADS": "1", "CALOR_PROGRESS": "0"}
    if processes > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
               "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), *argv]
    else:
        cmd = [sys.executable, *argv]
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _weights(cache: Path, kind: str) -> dict[str, torch.Tensor]:
    (found,) = list((cache / kind).glob("*/weights.safetensors"))
    return load_file(str(found))


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if a[k].is_floating_point():
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
        else:
            assert torch.equal(a[k], b[k]), k


# The generated faces carry pixel noise. Digits' flat -1 background gives max-pooling windows whose values
# differ only by float rounding, so which input receives the gradient follows the rounding: on one tiny
# digits batch, one process's channels-last float32 weight gradient differed from float64 by 5e-3, and by
# 9e-7 once 1e-3 noise was added to the same batch (a control run while writing this test). SGD: Adam divides each gradient by
# its running magnitude, so a parameter whose true gradient is zero (a bias just before batch norm) steps by
# the full learning rate along float rounding noise, and runs part after a few steps. With SGD, rounding
# stays rounding.
SGD = ["--scenario-set", "target.optimizer=sgd", "--scenario-set", "target.lr=0.05", "--scenario-set", "target.arch=cnn",
       "--scenario-set", "evaluation.optimizer=sgd", "--scenario-set", "evaluation.lr=0.05", "--scenario-set", "evaluation.arch=resnet"]


def test_two_gloo_processes_train_the_same_target_and_judge_as_one(face_yaml: Path, tmp_path: Path) -> None:
    for n in (1, 2):
        args = ["-m", "calor.cli", "train", "--scenario", str(face_yaml), "--cache", str(tmp_path / f"c{n}"), "--seed", "0",
                "--quiet", *SGD]
        out = _run(args, n, tmp_path)
        assert out.count("natural_acc") == 1  # only rank 0 reports
        _run([*args, "--evaluation-model"], n, tmp_path)
    _assert_close(_weights(tmp_path / "c1", "targets"), _weights(tmp_path / "c2", "targets"))
    _assert_close(_weights(tmp_path / "c1", "evaluation"), _weights(tmp_path / "c2", "evaluation"))
    assert not list((tmp_path / "c2" / "targets").glob(".*tmp"))  # one writer: no leftovers


# Compared by what the prior computes (samples for fixed latents, critic scores for fixed images): the
# critic's convolution biases just before instance norm have no true gradient, so under Adam they wander
# along rounding noise (see SGD above), without any effect on the critic's output.
@pytest.mark.parametrize("kind", ["wgan-gp", "dcgan"])
def test_two_gloo_processes_train_the_same_gan_prior_as_one(kind: str, tmp_path: Path) -> None:
    script = tmp_path / "gan.py"
    script.write_text(GAN_SCRIPT)
    _run([str(script), str(tmp_path / "one.safetensors"), kind], 1, tmp_path)
    _run([str(script), str(tmp_path / "two.safetensors"), kind], 2, tmp_path)
    _assert_close(load_file(str(tmp_path / "one.safetensors")), load_file(str(tmp_path / "two.safetensors")))


def test_defenses_with_per_process_state_refuse_data_parallel(face_yaml: Path, tmp_path: Path) -> None:
    env = {**os.environ, "CALOR_THREADS": "1", "CALOR_PROGRESS": "0"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), "-m", "calor.cli", "train", "--scenario", str(face_yaml), "--cache",
           str(tmp_path / "c"), "--defense", "dpsgd", "--quiet", "--scenario-set", "target.arch=cnn"]
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "cannot train data-parallel" in done.stderr


def test_bench_under_torchrun_trains_together_and_splits_the_cells(face_yaml: Path, tmp_path: Path) -> None:
    import json

    out = tmp_path / "bench"
    _run(["-m", "calor.cli", "bench", "--scenario", str(face_yaml), "--defenses", "none,calor", "--attacks", "gmi",
          "--seeds", "1", "--out", str(out), "--cache", str(tmp_path / "cache"), "--quiet", *SGD], 2, tmp_path)
    cells = [json.loads(p.read_text()) for p in (out / "cells").glob("*.json")]
    assert len(cells) == 2 and (out / "report.md").is_file()
    # one cell on each process; the targets were trained by both together (one artifact each, one writer)
    assert sorted(c["reported_with"]["executor"] for c in cells) == ["torchrun rank 0/2", "torchrun rank 1/2"]
    assert len(list((tmp_path / "cache" / "targets").glob("*/weights.safetensors"))) == 2
    results = json.loads((out / "results.json").read_text())["rows"]
    assert sum(1 for r in results if r.get("calibration")) == 3
