"""calor bench --executor ray: the same cells as the in-process loop, resume, failures, and the missing-Ray error."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from calor.cli import main

ray = pytest.importorskip("ray")

GRID = ["--defenses", "none", "--attacks", "gmi,adaptive-logit", "--seeds", "1", "--threads", "1", "--quiet"]
RAY = ["--executor", "ray", "--ray-cpus-per-cell", "1"]
# what a row reports about the run rather than the result: timings, where artifacts are, who computed it
RUN_FIELDS = {"train_s", "attack_s", "prior_s", "metrics_s", "artifacts", "versions", "target_versions", "reported_with"}


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance for the module (calor uses a running instance instead of starting its own)."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def _cells(out: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))}


def _results(out: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in RUN_FIELDS} for r in json.loads((out / "results.json").read_text())["rows"]]


def _bench(yaml: Path, out: Path, cache: Path, *extra: str) -> int:
    return main(["bench", "--scenario", str(yaml), *GRID, "--out", str(out), "--cache", str(cache), *extra])


def test_ray_cells_equal_local_cells_and_resume(ray_instance, tiny_yaml: Path, tmp_path: Path, capsys) -> None:
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert _bench(tiny_yaml, local, tmp_path / "cache-local") == 0
    capsys.readouterr()
    assert _bench(tiny_yaml, remote, tmp_path / "cache-ray", *RAY) == 0
    assert "built more than once" not in capsys.readouterr().err  # the two cells share a target and a prior: built once
    a, b = _cells(local), _cells(remote)
    assert len(a) == 2 and a.keys() == b.keys()
    for name in a:
        ra, rb = a[name], b[name]
        assert ra.keys() == rb.keys()
        assert ra["reported_with"]["executor"] == "local" and rb["reported_with"]["executor"] == "ray"
        assert ra["versions"]["threads"] == rb["versions"]["threads"] == "1"
        differ = {key: (ra[key], rb[key]) for key in sorted(ra.keys() - RUN_FIELDS) if ra[key] != rb[key]}
        assert not differ, (name, differ)  # same code, same seeds, one thread: the same numbers, exactly
        assert Path(rb["artifacts"]["target"]).is_relative_to((tmp_path / "cache-ray").resolve())
    assert _results(local) == _results(remote)  # floor/ceiling rows too (the driver computes them)

    # resume: a finished cell is not redone; a missing one is redone by Ray, to the same row
    first = {p.name: p.stat().st_mtime_ns for p in (remote / "cells").glob("*.json")}
    gone = sorted(first)[0]
    (remote / "cells" / gone).unlink()
    assert _bench(tiny_yaml, remote, tmp_path / "cache-ray", *RAY) == 0
    after = {p.name: p.stat().st_mtime_ns for p in (remote / "cells").glob("*.json")}
    assert after.keys() == first.keys()
    assert all(after[n] == first[n] for n in first if n != gone) and after[gone] != first[gone]
    again = _cells(remote)[gone]
    assert {k: v for k, v in again.items() if k not in RUN_FIELDS} == {k: v for k, v in b[gone].items() if k not in RUN_FIELDS}


def test_a_failed_cell_fails_the_bench_after_the_others_finish(ray_instance, tiny_yaml: Path, tmp_path: Path, capsys) -> None:
    from calor import load_scenario
    from calor.bench import Cell

    out = tmp_path / "bench"
    bad = Cell("none", "gmi", 0).cell_id(load_scenario(tiny_yaml))
    (out / "grids" / f"{bad}.png").mkdir(parents=True)  # its grid cannot be written
    assert _bench(tiny_yaml, out, tmp_path / "cache", *RAY) == 1
    err = capsys.readouterr().err
    assert f"cell 1/2 none × gmi (seed 0) failed: ArtifactError: {out / 'grids' / bad}.png: cannot write (Is a directory)" in err
    assert f"1 of 2 cells failed (the others are stored; rerun to redo these):\n  - {bad}: ArtifactError" in err
    assert [p.stem for p in (out / "cells").glob("*.json")] == [Cell("none", "adaptive-logit", 0).cell_id(load_scenario(tiny_yaml))]


def test_ray_options_need_ray_and_the_ray_executor(tiny_yaml: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    assert main(["bench", "--scenario", str(tiny_yaml), "--ray-cpus-per-cell", "2", "--out", str(tmp_path / "b")]) == 2
    assert "only with --executor ray" in capsys.readouterr().err
    assert main(["bench", "--scenario", str(tiny_yaml), *RAY, "--device", "cuda", "--out", str(tmp_path / "b")]) == 2
    assert "--ray-gpus-per-cell" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails, as where Ray is not installed
    assert main(["bench", "--scenario", str(tiny_yaml), *RAY, "--out", str(tmp_path / "b")]) == 2
    assert "pip install calor[ray]" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()  # refused before anything ran


def test_importing_calor_does_not_import_ray() -> None:
    import subprocess

    code = "import sys, calor, calor.bench, calor.cli, calor.executors; print('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
