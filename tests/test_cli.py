"""End-to-end through the `calor` command on the tiny scenario, and its error handling."""

import json
from pathlib import Path

import pytest

from calor.cli import main



def test_demo_end_to_end_writes_results_report_and_grids(tiny_yaml: Path, tmp_path: Path, capsys) -> None:
    out, cache = tmp_path / "demo", tmp_path / "cache"
    assert main(["demo", "--scenario", str(tiny_yaml), "--out", str(out), "--cache", str(cache), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "natural acc" in printed and "calor" in printed and "[" in printed  # estimates print their interval
    results = json.loads((out / "results.json").read_text())
    rows = results["rows"]
    assert [r["defense"] for r in rows] == ["none", "calor", "floor: prior", "floor: public", "ceiling: private test"]
    rows = rows[:2]
    for r in rows:
        assert 0 <= r["natural_acc"] <= 1 and 0 <= r["attack_acc@1"] <= 1 and 0 <= r["attack_acc@1_open"] <= 1
        assert r["eval_fid"] is None  # 6 images in a 16-d feature space: refused, KID instead
        assert r["knn_dist"] > 0 and r["kid"] is not None and r["queries"] == 8 * 2 * 3
        assert r["scenario_config"]["name"] == "tiny" and r["versions"]["torch"] and r["data_split"]["sizes"]
        assert r["versions"]["threads"] == "2" and r["versions"]["cpu_capability"]
        assert Path(r["artifacts"]["target"], "meta.json").is_file()
        assert "attack_acc@5" not in r  # only 3 classes
    md = (out / "report.md").read_text()
    assert md.count("![") == 7  # privacy-utility plot, confidence histograms, two attack grids, three floor/ceiling grids
    grids = sorted(p.name for p in (out / "grids").glob("*.png"))
    assert len(grids) == 5 and grids[0].startswith("calor-gmi") and grids[-1].startswith("none-gmi")
    assert "id=results" in (out / "report.html").read_text()
    assert len(json.loads((out / "split.json").read_text())["indices"]["private_train"]) == 90
    # second run: everything comes from the cache
    before = sorted(p.name for p in (cache / "targets").iterdir())
    assert main(["demo", "--scenario", str(tiny_yaml), "--out", str(out), "--cache", str(cache), "--quiet"]) == 0
    assert sorted(p.name for p in (cache / "targets").iterdir()) == before
    again = json.loads((out / "results.json").read_text())["rows"]
    assert [r["attack_acc@1"] for r in again[:2]] == [r["attack_acc@1"] for r in rows]


def test_train_attack_evaluate_commands(tiny_yaml: Path, tmp_path: Path, capsys) -> None:
    cache = str(tmp_path / "cache")
    assert main(["train", "--scenario", str(tiny_yaml), "--defense", "calor", "--set", "rank=3", "--cache", cache, "--quiet"]) == 0
    out = capsys.readouterr().out
    artifact = out.split("artifact")[-1].strip()
    meta = json.loads(Path(artifact, "meta.json").read_text())
    assert meta["defense_config"]["rank"] == 3 and "natural_acc" in meta["metrics"]
    assert main(["evaluate", "--scenario", str(tiny_yaml), "--target", artifact, "--cache", cache, "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["defense"] == "calor"
    assert main(["attack", "--scenario", str(tiny_yaml), "--target", artifact, "--attack", "gmi", "--classes", "0,2",
                 "--per-class", "1", "--set", "iterations=3", "--out", str(tmp_path / "atk"), "--cache", cache, "--quiet"]) == 0
    row = json.loads((tmp_path / "atk" / "results.json").read_text())["rows"][0]
    assert row["classes"] == [0, 2] and row["queries"] == 3 * 2 and row["attack_config"]["iterations"] == 3


@pytest.mark.parametrize("argv, message", [
    (["train", "--defense", "nope"], "unknown defense 'nope'"),
    (["train", "--defense", "calor", "--set", "gamma=-2"], "gamma"),
    (["train", "--scenario", "missing.yaml"], "does not exist"),
    (["train", "--scenario-set", "resolution=30"], "multiple of 4"),
    (["attack", "--target", "no/such/dir"], "does not exist"),
    (["train", "--device", "tpu"], "unknown device"),
    (["train", "--threads", "0"], "--threads 0"),
])
def test_bad_input_exits_2_with_a_clear_message(argv, message, tmp_path: Path, capsys) -> None:
    assert main([*argv, "--cache", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_corrupt_target_artifact_is_reported(tiny_yaml: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "target"
    bad.mkdir()
    (bad / "meta.json").write_text("{not json")
    (bad / "weights.safetensors").write_bytes(b"x")
    assert main(["evaluate", "--scenario", str(tiny_yaml), "--target", str(bad), "--quiet"]) == 2
    assert "corrupt JSON" in capsys.readouterr().err


def test_list_shows_registries(capsys) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "calor" in out and "gmi" in out and "[white-box]" in out and "mnist" in out
