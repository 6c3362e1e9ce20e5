"""Property-based fuzzing of scenario files and command lines: a run either works (exit 0) or exits 2 with
one message; never a traceback, never another exit code."""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calor.cli import main

from .conftest import TINY

FUZZ = settings(max_examples=int(os.environ.get("CALOR_FUZZ_EXAMPLES", "60")), deadline=None,
                derandomize=os.environ.get("CALOR_FUZZ_EXAMPLES") is None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["cnn", "resnet", "dcgan", "wgan-gp", "idx", "mnist-embedded", "1e-3", "-1", "0"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=6)


def paths(d: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for k, v in d.items():
        out.append(prefix + (k,))
        if isinstance(v, dict):
            out += paths(v, prefix + (k,))
    return out


ALL_PATHS = paths(TINY)


@st.composite
def scenarios(draw) -> dict:
    """The tiny scenario with 1-3 edits: a value replaced, a key deleted or a key added anywhere."""
    d = copy.deepcopy(TINY)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(ALL_PATHS))
        parent = d
        for k in path[:-1]:
            parent = parent.get(k) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            continue
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(values)
        elif action == "delete":
            parent.pop(path[-1], None)
        else:
            parent[draw(st.text(min_size=1, max_size=10))] = draw(values)
    return d


def check_one_message(rc: int, err: str) -> None:
    assert "Traceback" not in err, err
    assert rc in (0, 2), (rc, err)
    if rc == 2:
        assert re.search(r"^(calor [\w-]+: error: |usage: )", err), err


@FUZZ
@given(sc=scenarios())
def test_fuzzed_scenario_files(sc: dict, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path_factory.mktemp("fuzz")
    path = root / "s.yaml"
    try:
        path.write_text(yaml.safe_dump(sc, allow_unicode=True))
    except yaml.YAMLError:
        return
    # planning validates the scenario, its data and every defense's settings, and trains nothing
    rc = main(["bench", "--scenario", str(path), "--defenses", "none,calor,lor", "--attacks", "gmi,plgmi", "--dry-run",
               "--out", str(root / "out"), "--cache", str(root / "cache"), "--quiet"])
    check_one_message(rc, capsys.readouterr().err)


OPTION_VALUES = st.one_of(st.sampled_from(["0", "-1", "1", "2", "abc", "", "1e9", "none", "nan", "calor", "gmi", "0,1", "9,9",
                                           "rank=4", "rank=", "=4", "target.epochs=1", "target.nope=1", "cuda", "cuda:7", "auto",
                                           "/proc/x", "/nonexistent"]),
                          st.text(max_size=10))
OPTIONS = ["--seed", "--seeds", "--threads", "--device", "--set", "--scenario-set", "--defense", "--defenses", "--attack",
           "--attacks", "--classes", "--per-class", "--target", "--checkpoint-every", "--sweep", "--out"]


@st.composite
def command_lines(draw) -> list[str]:
    command = draw(st.sampled_from(["bench", "train", "attack", "evaluate", "report", "list", "inspect-weights", "demo"]))
    argv = [command]
    for _ in range(draw(st.integers(0, 4))):
        argv += [draw(st.sampled_from(OPTIONS)), draw(OPTION_VALUES)]
    if draw(st.booleans()):
        argv.append(draw(OPTION_VALUES))  # a stray positional
    return argv


@FUZZ
@given(argv=command_lines())
def test_fuzzed_command_lines(argv: list[str], tiny_yaml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Every run is kept cheap: the tiny scenario, and bench/demo only plan (a valid demo/train would train a
    # tiny model, which the other tests cover); what is fuzzed is argument handling.
    if argv[0] in ("bench", "demo"):
        argv = ["bench", *argv[1:], "--dry-run"]
    extra = [] if argv[0] in ("list", "inspect-weights", "report") else ["--scenario", str(tiny_yaml), "--cache", str(tmp_path / "c"), "--quiet"]
    if argv[0] == "train" and not any(a in ("--set", "--defense", "--threads", "--device", "--seed", "--checkpoint-every") for a in argv):
        argv = [*argv, "--threads", "0"]  # keep it to validation: a plain train of the tiny scenario is tested elsewhere
    try:
        rc = main([*argv, *extra])
    except SystemExit as exc:  # argparse: usage + one error line, exit 2
        rc = exc.code if isinstance(exc.code, int) else 2
    check_one_message(rc, capsys.readouterr().err)
