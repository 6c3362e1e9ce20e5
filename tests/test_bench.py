"""calor bench: planning, aggregation, report, and resume after a killed process."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from calor import ConfigError, load_scenario
from calor.bench import parse_sweeps, plan_bench
from calor.cli import main
from calor.report import aggregate, pareto_front, results_table, text_table


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


def _sample_row(label, seed, hits, knn, tuning=False):
    return {"label": label, "defense": label, "attack": "gmi", "seed": seed, "natural_acc": 0.9, "tuning_seed": tuning,
            "classes": [0, 1], "per_class": len(hits) // 2, "n": len(hits), "kid": 0.5 + seed, "queries": 10,
            "per_sample": {"hit": hits, "knn_dist": knn}}


def test_results_table_gives_seed_level_intervals_and_marks_primary_and_exploratory_differences() -> None:
    n = 40
    seeds = (2, 3, 4, 5, 6)
    none = [_sample_row("none", s, [1] * n, [1.0] * n) for s in seeds]
    calor = [_sample_row("calor", s, [1] * (6 + s) + [0] * (34 - s), [5.0 + s / 10] * n) for s in seeds]
    tuning = [_sample_row("calor", 0, [1] * n, [1.0] * n, tuning=True)]
    rows = none + calor + tuning
    header, body = results_table(rows, ["attack_acc@1", "knn_dist", "kid"])
    assert header == ["attack", "defense", "natural acc", "acc@1 [95% CI]", "knn dist", "KID"]
    line = {r[1]: r for r in body}
    # 200 of 200 hits over 5 seeds: a proper interval, not [1.000, 1.000] (Wilson at n = 200 with t(0.975, 4))
    assert line["none"][3].startswith("1.000 [0.963, 1.000]")
    calor_acc = line["calor"][3]  # 50/200 hits, tuning seed 0 left out; below none under the same attack
    assert calor_acc.startswith("0.250 [")
    # no primary family declared: every comparison is exploratory (unadjusted, "°")
    assert calor_acc.endswith("↓°") and line["calor"][4].endswith("↑°")
    assert line["calor"][5] == "4.500 [2.537, 6.463]"  # set-level: mean of 2.5..6.5 +- t(0.975, 4) * sd / sqrt(5)
    primary = {"pairs": ["calor vs none"], "attacks": [], "metrics": ["attack_acc@1"]}
    marked = {r[1]: r for r in results_table(rows, ["attack_acc@1", "knn_dist"], primary=primary)[1]}
    assert marked["calor"][3].endswith("↓*") and marked["calor"][4].endswith("↑°")  # knn is outside the family
    one_seed = results_table([none[0], calor[0]], ["attack_acc@1"])[1]  # one seed: Wilson, and never a mark
    assert one_seed[0][3] == "1.000 [0.912, 1.000]" and not one_seed[1][3].endswith(("*", "°"))
    plain = text_table(none + calor)
    assert plain.splitlines()[0].split()[:2] == ["attack", "defense"]


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
    assert "natural acc" in printed and "calor[rank=1]" in printed and "adaptive-bpda[base=adaptive-logit,iterations=3]" in printed
    assert "floor: prior" in printed and "ceiling: private test" in printed
    rows = json.loads((out / "results.json").read_text())["rows"]
    cells = [r for r in rows if not r.get("calibration")]
    assert len(cells) == 12 and {r["seed"] for r in cells} == {0, 1}
    calibration = [r for r in rows if r.get("calibration")]  # three floor/ceiling rows per seed, same metrics
    assert sorted({r["label"] for r in calibration}) == ["ceiling: private test", "floor: prior", "floor: public"]
    assert len(calibration) == 6 and all(len(r["per_sample"]["hit"]) == r["n"] == 3 * 2 for r in calibration)
    for r in cells:  # every row checks its judge against its target, and keeps per-sample values for paired tests
        assert r["judge"]["stronger_than_target"] == (r["judge"]["natural_acc"] > r["natural_acc"])
        assert len(r["per_sample"]["hit"]) == r["n"] == 6 and set(r["judges"]) == {"resnet-w4"}
        assert r["diagnostics"]["grad_ratio"] and len(r["diagnostics"]["progress"]) == len(r["diagnostics"]["grad_norm"])
        if r["label"] == "none":  # the undefended target is its own reference
            assert all(x == pytest.approx(1.0) for x in r["diagnostics"]["grad_ratio"])
            assert r["diagnostics"]["saturated_fraction"] is None
        elif r["defense"] == "calor":
            assert all(0.0 <= x <= 1.0 for x in r["diagnostics"]["saturated_fraction"])
    bpda = [r for r in cells if r["attack_name"] == "adaptive-bpda"]
    assert len(bpda) == 6 and all(r["attack_config"]["base"] == "adaptive-logit" and r["attack_config"]["iterations"] == 3 for r in bpda)
    assert (out / "figures" / "privacy_utility_adaptive-bpda_base_adaptive-logit_iterations_3.png").is_file()
    page = (out / "report.html").read_text()
    for section in ("id=conclusive", "id=worst-case", "id=results", "id=exploratory", "id=judges", "id=diagnostics", "id=privacy-utility", "id=confidence",
                    "id=sensitivity", "id=reconstructions", "id=protocol"):
        assert section in page
    assert page.count("data:image/png;base64,") >= 1 + 1 + 1 + 3  # plot, histograms, sensitivity, grids (seed 0)
    md = (out / "report.md").read_text()
    assert "acc@1 [95% CI]" in md and "figures/privacy_utility_gmi.png" in md and "floor: public" in md
    # tiny budgets: every attack is at its floor on `none`, so the report says so instead of a worst case
    assert "Did each attack learn anything?" in md and "INCONCLUSIVE" in md and "there is no worst case to report" in md
    assert all(r["conclusive"] is False for r in json.loads((out / "results.json").read_text())["rows"] if not r.get("calibration"))
    # `calor report` rebuilds the same report from the stored cells
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.html").is_file()
    # a second, smaller plan into the same directory; `report --all` reports both plans' cells
    assert main(["bench", "--scenario", str(tiny_yaml), "--defenses", "none", "--attacks", "adaptive-logit", "--out", str(out),
                 "--cache", str(tmp_path / "cache"), "--quiet"]) == 0
    assert main(["report", str(out)]) == 0
    assert {r["attack"] for r in json.loads((out / "results.json").read_text())["rows"]} == {"adaptive-logit", "calibration"}
    grid = out / json.loads((out / "results.json").read_text())["rows"][0]["grid"]
    grid.unlink()
    assert main(["report", "--all", "--redraw-grids", str(out)]) == 0
    assert grid.is_file()  # drawn again from the cached attack artifact
    every = [r for r in json.loads((out / "results.json").read_text())["rows"] if not r.get("calibration")]
    assert len(every) == 13 and every[0]["attack"] == "gmi" and every[0]["label"] == "none"
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
    rows = [r for r in json.loads((out / "results.json").read_text())["rows"] if not r.get("calibration")]
    assert len(rows) == 4 and len({r["cell"] for r in rows}) == 4


def test_comparisons_pair_every_defense_with_none_and_calor_with_its_ablations() -> None:
    from calor.summary import comparison_pairs, comparisons, diagnostics_summary

    assert comparison_pairs(["none", "calor", "lor", "ca", "mid"]) == [
        ("calor", "none"), ("lor", "none"), ("ca", "none"), ("mid", "none"), ("calor", "lor"), ("calor", "ca")]
    n = 24
    rows = [_sample_row("none", s, [1] * n, [1.0] * n) for s in (2, 3, 4)]
    rows += [_sample_row("calor", s, [1] * n, [1.0] * n) for s in (2, 3, 4)]  # identical: no difference
    rows += [_sample_row("lor", s, [0] * n, [9.0] * n) for s in (2, 3)]  # only two seeds shared
    out = {(c["a"], c["b"], c["metric"]): c for c in comparisons(rows, ("attack_acc@1",), primary={"pairs": ["lor vs none"]})}
    assert out[("calor", "none", "attack_acc@1")]["difference"] == 0 and not out[("calor", "none", "attack_acc@1")]["significant_holm"]
    assert out[("calor", "none", "attack_acc@1")]["family"] == "exploratory"
    lor = out[("lor", "none", "attack_acc@1")]
    # every pair differs by -1, but two seeds are two observations: the sign-flip p over seeds is 2/4, never significant
    assert lor["difference"] == -1.0 and lor["seeds"] == [2, 3] and lor["n_pairs"] == 2 * n and lor["family"] == "primary"
    assert lor["p_value"] == 0.5 and not lor["significant_holm"] and lor["p_naive"] < 0.001
    assert out[("calor", "lor", "attack_acc@1")]["difference"] == 1.0
    diag = {"progress": [0, 0.5, 1], "saturated_fraction": [0.1, 0.2, 0.3], "grad_norm": [1, 1, 1], "grad_ratio": [0.5, 0.4, 0.3]}
    summary = diagnostics_summary([{**rows[3], "diagnostics": diag}])
    assert summary[("gmi", "calor")]["saturated"] == [0.1, 0.2, 0.3] and summary[("gmi", "calor")]["grad_ratio"] == [0.5, 0.4, 0.3]


@pytest.mark.timeout(300)
def test_aa_replicate_is_an_independent_target_facing_the_same_attacker(tiny_yaml: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "aa"
    argv = ["bench", "--scenario", str(tiny_yaml), "--defenses", "none", "--aa", "none", "--attacks", "gmi", "--seeds", "2",
            "--out", str(out), "--cache", str(tmp_path / "cache"), "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "none~aa1" in printed and "A/A calibration" in printed and "empirical false-positive rate" in printed
    rows = [r for r in json.loads((out / "results.json").read_text())["rows"] if not r.get("calibration")]
    by = {(r["label"], r["seed"]): r for r in rows}
    assert sorted(by) == [("none", 0), ("none", 1), ("none~aa1", 0), ("none~aa1", 1)]
    for seed in (0, 1):
        a, b = by[("none", seed)], by[("none~aa1", seed)]
        assert a["defense"] == b["defense"] == "none" and a["artifacts"]["target"] != b["artifacts"]["target"]
        assert a["artifacts"]["gan"] == b["artifacts"]["gan"]  # the same prior: the pair is paired
        assert a["classes"] == b["classes"] and a["per_class"] == b["per_class"]
        meta = json.loads((Path(b["artifacts"]["target"]) / "meta.json").read_text())
        assert meta["replicate"] == 1 and meta["seed"] == seed and meta["train_seed"] != seed
    report = (out / "report.md").read_text()
    assert "## A/A calibration" in report and "| a/a |" in report
    with pytest.raises(ConfigError, match="A/A replicate copies a defense"):
        plan_bench(load_scenario(tiny_yaml), ["none"], ["gmi"], [0], {}, ["calor"])


def test_primary_family_is_checked_when_the_scenario_loads_and_changes_no_cell(tiny_scenario) -> None:
    from calor.scenario import PrimaryFamily

    plain = plan_bench(tiny_scenario, ["none"], ["gmi"], [0]).cells[0].cell_id(tiny_scenario)
    declared = tiny_scenario.with_overrides({"primary": {"pairs": ["calor vs none"], "metrics": ["attack_acc@1"]}})
    assert declared.primary == PrimaryFamily(pairs=("calor vs none",), metrics=("attack_acc@1",))
    assert plan_bench(declared, ["none"], ["gmi"], [0]).cells[0].cell_id(declared) == plain
    with pytest.raises(ConfigError, match="expected 'A vs B'"):
        tiny_scenario.with_overrides({"primary": {"pairs": ["calor-none"]}})
    with pytest.raises(ConfigError, match="unknown metric 'acc'"):
        tiny_scenario.with_overrides({"primary": {"pairs": ["calor vs none"], "metrics": ["acc"]}})


def test_scenario_attack_defaults_reach_the_attack_and_its_bpda_composition(tiny_scenario, tmp_path: Path) -> None:
    from calor.attacks.base import build_attack
    from calor.scenario import attack_settings

    plain_id = plan_bench(tiny_scenario, ["none"], ["gmi"], [0]).cells[0].cell_id(tiny_scenario)
    sc = tiny_scenario.with_overrides({"attacks": {"gmi": {"update": "normalized", "lr": 0.002}}})
    assert attack_settings(sc, "gmi") == {"update": "normalized", "lr": 0.002}
    assert attack_settings(sc, "gmi", {"lr": 0.01}) == {"update": "normalized", "lr": 0.01}  # the user's setting wins
    bpda = build_attack("adaptive-bpda", attack_settings(sc, "adaptive-bpda")).config_dict()
    assert bpda["base"] == "gmi" and bpda["base_settings"] == {"update": "normalized", "lr": 0.002}
    assert attack_settings(sc, "adaptive-bpda", {"base": "plgmi"}) == {"base": "plgmi"}  # gmi's defaults are not plgmi's
    # a tuned default changes what runs, so the cell is a new one; an empty block changes nothing
    assert plan_bench(sc, ["none"], ["gmi"], [0]).cells[0].cell_id(sc) != plain_id
    assert plan_bench(tiny_scenario.with_overrides({"attacks": {}}), ["none"], ["gmi"], [0]).cells[0].cell_id(tiny_scenario) == plain_id
    with pytest.raises(ConfigError, match="attacks.gmi: .*unknown key"):
        tiny_scenario.with_overrides({"attacks": {"gmi": {"updat": "adam"}}})
    with pytest.raises(ConfigError, match="attacks.gmii: unknown attack"):
        tiny_scenario.with_overrides({"attacks": {"gmii": {}}})


@pytest.mark.timeout(300)
def test_bpda_on_a_model_without_saturating_units_is_its_base_run_computed_once(tiny_scenario, tmp_path: Path) -> None:
    from calor import Workspace, attack_target, train_target
    from calor.attack_runs import has_saturating_units
    from calor.targets import train_judges

    ws = Workspace(cache=tmp_path / "cache")
    sc = tiny_scenario.with_overrides({"attack.iterations": 4})
    none, calor = train_target(sc, "none", seed=0, ws=ws), train_target(sc, "calor", seed=0, ws=ws)
    assert not has_saturating_units(none.model) and has_saturating_units(calor.model)
    judges = train_judges(sc, ws)
    gmi = attack_target(sc, none, "gmi", seed=0, ws=ws, judges=judges)
    bpda = attack_target(sc, none, "adaptive-bpda", seed=0, ws=ws, judges=judges)
    assert bpda.path == gmi.path and bpda.meta["computed_as"]["attack"] == "gmi"  # one artifact for both columns
    assert bpda.meta["attack"] == "adaptive-bpda" and bpda.meta["attack_config"]["base"] == "gmi"
    assert torch.equal(bpda.reconstructions.images, gmi.reconstructions.images) and bpda.metrics == gmi.metrics
    through = attack_target(sc, calor, "adaptive-bpda", seed=0, ws=ws, judges=judges)
    assert "computed_as" not in through.meta and through.path != attack_target(sc, calor, "gmi", seed=0, ws=ws, judges=judges).path


def test_a_report_flags_cells_computed_by_older_code() -> None:
    from calor.report import _warnings, stale_cells
    from calor.versioning import version

    now = {"evaluation.py": version("evaluation.py"), "attacks/gmi.py": version("attacks/gmi.py")}
    fresh = {"label": "none", "attack": "gmi", "seed": 2, "cell": "none-gmi-s2", "code": now, "target_code": {}}
    old = {**fresh, "cell": "calor-gmi-s2", "code": {**now, "evaluation.py": now["evaluation.py"] - 1}}
    assert stale_cells([fresh]) == {}
    assert list(stale_cells([fresh, old])) == ["calor-gmi-s2"]
    (warning,) = [w for w in _warnings([fresh, old], {}) if "older code" in w]
    assert "1 cells were computed by older code" in warning and "evaluation.py" in warning
