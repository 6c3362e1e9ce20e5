"""The one thread policy: affinity by default, CALOR_THREADS or an explicit count over it, recorded."""

from __future__ import annotations

import os

import pytest
import torch

from calor.errors import ConfigError
from calor.runtime import available_cpus, configure_threads, versions


@pytest.fixture(autouse=True)
def _restore_threads(monkeypatch):
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_default_is_the_cpus_this_process_may_use(monkeypatch) -> None:
    monkeypatch.delenv("CALOR_THREADS", raising=False)
    assert available_cpus() == len(os.sched_getaffinity(0))
    assert configure_threads() == available_cpus() == torch.get_num_threads()


def test_environment_and_argument_override(monkeypatch) -> None:
    monkeypatch.setenv("CALOR_THREADS", "1")
    assert configure_threads() == 1 == torch.get_num_threads()
    assert versions()["threads"] == "1"
    assert configure_threads(2) == 2 == torch.get_num_threads()  # the argument wins over the environment
    assert versions()["threads"] == "2"


@pytest.mark.parametrize("env, arg, message", [("two", None, "CALOR_THREADS='two'"), ("0", None, "CALOR_THREADS 0"),
                                               (None, -1, "--threads -1")])
def test_bad_thread_counts_are_refused(monkeypatch, env, arg, message) -> None:
    if env is None:
        monkeypatch.delenv("CALOR_THREADS", raising=False)
    else:
        monkeypatch.setenv("CALOR_THREADS", env)
    with pytest.raises(ConfigError, match=message):
        configure_threads(arg)


def test_versions_record_what_moves_numbers() -> None:
    v = versions()
    assert v["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert v["threads"] == str(torch.get_num_threads()) and v["cpu"] and "onednn_max_cpu_isa" in v


def test_precision_policy_is_recorded_and_keyed(tiny_yaml, tmp_path, capsys) -> None:
    import json

    from calor.cli import main
    from calor.runtime import autocast, precision, set_precision

    try:
        with pytest.raises(ConfigError, match="choose fp32, bf16, fp16"):
            set_precision("fp8")
        set_precision("fp16")
        with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
            autocast(torch.device("cpu"))
        # bf16 autocast on the CPU: the same training loop, a separate cache entry, recorded everywhere
        for p in ("fp32", "bf16"):
            assert main(["train", "--scenario", str(tiny_yaml), "--cache", str(tmp_path / "c"), "--quiet", "--precision", p]) == 0
        metas = {json.loads(m.read_text())["versions"]["precision"]: json.loads(m.read_text())
                 for m in (tmp_path / "c" / "targets").glob("*/meta.json")}
        assert set(metas) == {"fp32", "bf16"}
        assert metas["bf16"]["key"]["precision"] == "bf16" and "precision" not in metas["fp32"]["key"]
        assert metas["bf16"]["metrics"]["natural_acc"] > 0.0
    finally:
        set_precision("fp32")
    assert precision() == "fp32"


def test_nchw_training_is_an_option_recorded_and_keyed(tiny_yaml, tmp_path) -> None:
    import json

    from calor.cli import main
    from calor.runtime import channels_last

    try:
        assert main(["train", "--scenario", str(tiny_yaml), "--cache", str(tmp_path / "c"), "--quiet", "--no-channels-last"]) == 0
        (meta,) = [json.loads(m.read_text()) for m in (tmp_path / "c" / "targets").glob("*/meta.json")]
        assert meta["key"]["channels_last"] is False and meta["versions"]["channels_last"] == "False"
    finally:
        from calor.runtime import set_channels_last

        set_channels_last(True)  # the CLI set it for this process; later tests expect the default
    assert channels_last()
