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
