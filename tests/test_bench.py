"""calor bench: planning, aggregation, report, and resume after a killed process."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from calor import ConfigError
from calor.bench import parse_sweeps, plan_bench
from calor.cli import main
from calor.report import aggregate, long_table, main_table, pareto_front, text_table


def test_plan_counts_cells_and_validates(tiny_scenario) -> None:
    plan = plan_bench(tiny_scenario, ["none", "calor"], ["gmi"], [0, 1], parse_sweeps(["calor.rank=1,2", "calor.gamma=4"]))
    labels = [c.label for c in plan.cells]
    assert len(plan.cells) == (1 + 1 + 3) * 2  # none, calor, calor[rank=1], calor[rank=2], calor[gamma=4] x 2 seeds
    assert "calor[rank=1]" in labels and "calor[gamma=4]" in labels
    assert len({c.cell_id(tiny_scenario) for c in plan.cells}) == len(plan.cells)
    with pytest.raises(ConfigError, match="unknown defense 'nope'"):
        plan_bench(tiny_scenario, ["nope"], ["gmi"], [0])
    with pytest.raises(ConfigError, match="gamma"):
        plan_bench(tiny_scenario, ["calor"], ["gmi"], [0], {"calor.gamma": ["-1"]})
    with pytest.raises(ConfigError, match="not in --defenses"):
        plan_bench(tiny_scenario, ["none"], ["gmi"], [0], {"calor.rank": ["2"]})
    with pytest.raises(ConfigError, match="DEFENSE.SETTING"):
        parse_sweeps(["rank=2"])


def _row(label, attack, seed, nat, acc, knn=1.0, fid=2.0):
    return {"label": label, "defense": label, "attack": attack, "seed": seed, "natural_acc": nat, "attack_acc@1": acc,
            "knn_dist": knn, "eval_fid": fid, "queries": 10, "mean_train_confidence": 0.9}


def test_aggregation_by_hand() -> None:
    rows = [_row("none", "gmi", 0, 0.9, 0.8), _row("none", "gmi", 1, 0.8, 0.6),
            _row("calor", "gmi", 0, 0.85, 0.2), _row("calor", "gmi", 1, 0.85, 0.4)]
    agg = aggregate(rows)
    m, s, n = agg["cells"]["none"]["natural_acc"]
    assert m == pytest.approx(0.85) and s == pytest.approx(0.0707107, rel=1e-5) and n == 2
    m, s, _ = agg["cells"]["calor"]["gmi"]["attack_acc@1"]
    assert m == pytest.approx(0.3) and s == pytest.approx(0.1414214, rel=1e-5)
    header, body = main_table(rows)
    assert header[:3] == ["defense", "natural_acc", "gmi attack_acc@1"]
    # best natural accuracy is none's 0.85 tie? none 0.85 == calor 0.85: both marked; best attack acc is calor's
    assert body[1][2].startswith("**0.300")
    assert not body[0][2].startswith("**")


def test_many_attacks_fall_back_to_one_line_per_attack_and_defense() -> None:
    rows = [_row(d, f"attack{i}", 0, 0.9 if d == "none" else 0.8, 0.5 + 0.1 * (d == "none")) for i in range(6) for d in ("none", "calor")]
    header, body = long_table(rows, markdown=False)
    assert header == ["attack", "defense", "natural_acc", "attack_acc@1", "knn_dist", "eval_fid"]
    assert len(body) == 12 and body[0][:2] == ["attack0", "none"] and body[1][:2] == ["attack0", "calor"]
    assert body[0][2] == "0.900 *" and body[1][3] == "0.500 *"  # best natural acc / lowest attack acc per attack
    wide = text_table(rows, width=10_000)
    assert wide.splitlines()[0].startswith("defense")  # fits: the wide layout
    narrow = text_table(rows, width=80)
    assert narrow.splitlines()[0].split()[:2] == ["attack", "defense"] and all(len(x) <= 80 for x in narrow.splitlines())


def test_estimate_charges_each_attack_its_cost_and_each_prior_once(tiny_scenario) -> None:
    from calor.attacks import ATTACKS
    from calor.bench import ATTACK_COST, estimate_seconds

    def est(attacks, defenses=("none",)):
        return estimate_seconds(plan_bench(tiny_scenario, list(defenses), list(attacks), [0], {}))

    assert est(["brepmi"]) > est(["mirror-b"]) > est(["gmi"])  # the query-based attacks cost the most
    gmi_attack = (est(["gmi", "adaptive-logit"]) - est(["gmi"])) / 1.05  # shares GMI's GAN: attack time only
    assert gmi_attack > 0
    # kedmi next to lomma-kedmi adds only its attack time: KED-MI's GAN is built once for both
    assert est(["kedmi", "lomma-kedmi"]) - est(["lomma-kedmi"]) == pytest.approx(0.5 * gmi_attack)
    assert est(["adaptive-bpda[base=lomma-kedmi]"]) == pytest.approx(est(["lomma-kedmi"]))  # priced as its base
    assert set(ATTACK_COST) <= set(ATTACKS.names())  # no stale names


def test_attack_specs_carry_settings_and_plain_cells_keep_their_ids(tiny_scenario) -> None:
    from calor.bench import Cell, parse_attack_spec, split_specs

    assert split_specs("gmi, adaptive-bpda[base=kedmi,iterations=5],lokt") == ["gmi", "adaptive-bpda[base=kedmi,iterations=5]", "lokt"]
    assert parse_attack_spec("adaptive-bpda[base=kedmi,iterations=5]") == ("adaptive-bpda", (("base", "kedmi"), ("iterations", "5")))
    plan = plan_bench(tiny_scenario, ["calor"], ["gmi", "adaptive-bpda[base=kedmi]"], [0], {})
    assert [c.attack_label for c in plan.cells] == ["gmi", "adaptive-bpda[base=kedmi]"]
    assert "attack_variant" not in Cell("calor", "gmi", 0).key(tiny_scenario)  # ids of cells stored earlier are unchanged
    for bad in ("adaptive-bpda[base=brepmi]", "adaptive-bpda[base]", "gmi[lam=1", "gmi[no_such=1]"):
        with pytest.raises(ConfigError):
            plan_bench(tiny_scenario, ["calor"], [bad], [0], {})


def test_pareto_front() -> None:
    pts = [(0.9, 0.99), (0.5, 0.95), (0.6, 0.90), (0.2, 0.80)]
    assert pareto_front(pts) == [(0.2, 0.8), (0.5, 0.95), (0.9, 0.99)]


def test_bench_report_has_every_section(tiny_yaml: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench"
    argv = ["bench", "--scenario", str(tiny_yaml), "--defenses", "none,calor", "--attacks", "gmi,adaptive-bpda[base=adaptive-logit,iterations=3]",
            "--seeds", "2", "--sweep", "calor.rank=1", "--out", str(out), "--cache", str(tmp_path / "cache"), "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "natural_acc" in printed and "calor[rank=1]" in printed and "adaptive-bpda[base=adaptive-logit,iterations=3]" in printed
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert len(rows) == 12 and {r["seed"] for r in rows} == {0, 1}
    bpda = [r for r in rows if r["attack_name"] == "adaptive-bpda"]
    assert len(bpda) == 6 and all(r["attack_config"]["base"] == "adaptive-logit" and r["attack_config"]["iterations"] == 3 for r in bpda)
    assert (out / "figures" / "privacy_utility_adaptive-bpda_base_adaptive-logit_iterations_3.png").is_file()
    page = (out / "report.html").read_text()
    for section in ("id=main-table", "id=privacy-utility", "id=confidence", "id=sensitivity", "id=reconstructions", "id=protocol"):
        assert section in page
    assert page.count("data:image/png;base64,") >= 1 + 1 + 1 + 3  # plot, histograms, sensitivity, grids (seed 0)
    md = (out / "report.md").read_text()
    assert "± " in md and "figures/privacy_utility_gmi.png" in md
    # `calor report` rebuilds the same report from the stored cells
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.html").is_file()
    assert main(["report", str(tmp_path / "nothing")]) == 2


def test_bench_resumes_after_the_process_is_killed(tiny_yaml: Path, tmp_path: Path) -> None:
    out, cache = tmp_path / "bench", tmp_path / "cache"
    argv = ["bench", "--scenario", str(tiny_yaml), "--defenses", "none,calor", "--attacks", "gmi", "--seeds", "2",
            "--out", str(out), "--cache", str(cache), "--quiet"]
    env = dict(os.environ, CALOR_PROGRESS="0")
    proc = subprocess.Popen([sys.executable, "-m", "calor.cli", *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cells = out / "cells"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and len(list(cells.glob("*.json"))) < 1:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = {p.name: p.stat().st_mtime_ns for p in cells.glob("*.json")}
    assert 1 <= len(first) < 4, "the bench should have been killed mid-grid"
    assert main(argv) == 0
    after = {p.name: p.stat().st_mtime_ns for p in cells.glob("*.json")}
    assert len(after) == 4
    assert all(after[name] == mtime for name, mtime in first.items())  # finished cells were not redone
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert len(rows) == 4 and len({r["cell"] for r in rows}) == 4
