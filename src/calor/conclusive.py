"""Did an attack learn anything? An attack's result on the baseline (undefended) model against its floors.

An attack that recovers no more from the *undefended* model than its own starting point — the GAN prior's
samples at the start latents (`floor: prior`) or the public images it began with (`floor: public`) — has
measured nothing: its low numbers on a defended model say nothing about the defense either. Such an
attack is **inconclusive**; its rows are flagged (`conclusive: False`), `summary.worst_case` leaves them
out, and an audit none of whose attacks is conclusive fails (`calor audit` exits 3).

The rule (`attack_conclusiveness`): on the baseline, the attack's seed-level interval of `metric`
(closed-set acc@1, the field's metric: the most lenient, so a weak but real attack counts) lies wholly
above the floor — the higher of the two floors' estimates, or chance (1 / classes) without floor rows —
and its estimate exceeds the floor by at least `margin` (10 points by default). Both are needed: the
interval alone passes a tiny gain measured on many seeds, the margin alone a large one on noise. The
interval counts seeds (`summary.estimate`), so on 2 seeds (1 degree of freedom) only a near-complete
recovery clears it: audit on 3 or more.

Why it failed is read from the rows: whether the judge can tell real images of the classes apart at all
(the ceiling row), whether the model itself believes the reconstructions
(`target_confidence`, the audited model's mean true-class probability on them: low means the search never
reached the class — too few steps, too small a step, or images in the wrong range; high means patterns
that fool the model but not the judge), and whether the prior's samples look like images at all.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .records import ResultRow
from .summary import estimate, group

MARGIN = 0.10
FLOOR_SETS = ("floor: prior", "floor: public")
CONFIDENCE_REACHED = 0.5  # the model's mean true-class probability above which the search reached the class
BLANK_PRIOR = 0.5  # share of blank prior samples at which the prior is called failed
FAR_PRIOR = 2.0  # prior samples this many times farther (knn) from private images than public images are


@dataclass(frozen=True)
class Conclusiveness:
    """One attack's verdict: whether its result on the baseline clears its floor, and why not."""

    attack: str
    conclusive: bool
    metric: str
    estimate: float  # the baseline's estimate of `metric` under the attack
    low: float  # its seed-level interval
    high: float
    floor: float
    floor_set: str  # which floor (or "chance")
    margin: float
    reason: str  # empty when conclusive

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _floor(rows: list[ResultRow], metric: str, num_classes: int | None) -> tuple[float, str]:
    cal = group([r for r in rows if r.get("calibration")])
    floors = {name: e["estimate"] for (_, name), cell in cal.items()
              if name in FLOOR_SETS and (e := estimate(cell, metric)) is not None}
    if floors:
        name = max(floors, key=lambda k: floors[k])
        return float(floors[name]), name
    if num_classes:
        return 1.0 / num_classes, "chance"
    return 0.0, "none measured"


def _mean(rows: list[ResultRow], key: str) -> float | None:
    values = [float(r[key]) for r in rows if r.get(key) is not None]
    return float(np.mean(values)) if values else None


def _reason(cell: list[ResultRow], rows: list[ResultRow], hints: dict[str, Any], metric: str, floor: float,
            margin: float) -> str:
    why = []
    ceiling = estimate([r for r in rows if r.get("calibration") and r["label"] == "ceiling: private test"], metric)
    if ceiling is not None and ceiling["estimate"] < floor + margin:
        why.append(f"the judge cannot tell the classes apart (ceiling: private test {ceiling['estimate']:.3f}, no higher "
                   "than floor + margin): no attack can be measured with it - give a stronger judge")
    conf = _mean(cell, "target_confidence")
    if conf is not None and conf < CONFIDENCE_REACHED:
        rng = hints.get("input_range")
        why.append(f"the search did not reach its classes on the model itself (the model's mean true-class confidence in "
                   f"the reconstructions: {conf:.2f}): too few iterations or too small a step for this model"
                   + (f", or the model is given images in the wrong range (input_range={tuple(rng)})" if rng is not None else ""))
    elif conf is not None:
        why.append(f"the reconstructions convince the model (mean true-class confidence {conf:.2f}) but not the judge: "
                   "patterns that fool this model, not its training data (a stronger prior, or a search that keeps to it)")
    prior = [r for r in rows if r.get("calibration") and r["label"] == "floor: prior"]
    public = [r for r in rows if r.get("calibration") and r["label"] == "floor: public"]
    blank = _mean(prior, "degenerate_rate")
    if blank is not None and blank >= BLANK_PRIOR:
        why.append(f"the GAN prior's samples are mostly blank ({blank:.0%}): its training failed")
    else:
        kp, kq = _mean(prior, "knn_dist"), _mean(public, "knn_dist")
        if kp is not None and kq and kp > FAR_PRIOR * kq:
            why.append(f"the GAN prior's samples are far from natural images (knn {kp:.1f} vs public images' {kq:.1f}): "
                       "train the prior longer")
    return "; ".join(why) or "no cause found in the rows: look at the reconstruction grids"


def attack_conclusiveness(rows: list[ResultRow], baseline: str, *, metric: str = "attack_acc@1", margin: float = MARGIN,
                          num_classes: int | None = None, hints: dict[str, Any] | None = None) -> dict[str, Conclusiveness]:
    """Per attack run on `baseline`, whether it cleared its floor there (the module docstring's rule).
    `hints` (e.g. {"input_range": (0, 1)}) are named in the reasons."""
    floor, floor_set = _floor(rows, metric, num_classes)
    out: dict[str, Conclusiveness] = {}
    for (attack, label), cell in group([r for r in rows if not r.get("calibration")]).items():
        if label != baseline:
            continue
        e = estimate(cell, metric)
        if e is None:
            continue
        low = e["low"] if not np.isnan(e["low"]) else e["estimate"]
        ok = bool(low > floor and e["estimate"] >= floor + margin)
        if ok:
            reason = ""
        elif e["estimate"] >= floor + margin:
            reason = (f"{metric} {e['estimate']:.3f} on {baseline} clears the floor ({floor_set} {floor:.3f}) but its interval "
                      f"over {e.get('n_seeds', len(cell))} seed(s) [{low:.3f}, {e['high']:.3f}] does not: run more seeds "
                      "(the interval counts seeds; with 2 it has 1 degree of freedom)")
        else:
            short = (f"{metric} {e['estimate']:.3f} [{low:.3f}, {e['high']:.3f}] on {baseline} does not clear the floor "
                     f"({floor_set} {floor:.3f}) by {margin:.2f}")
            reason = f"{short}: {_reason(cell, rows, hints or {}, metric, floor, margin)}"
        out[attack] = Conclusiveness(attack, ok, metric, float(e["estimate"]), float(low), float(e["high"]), floor, floor_set,
                                     margin, reason)
    return out


def mark_conclusive(rows: list[ResultRow], verdicts: dict[str, Conclusiveness]) -> None:
    """Flag every row of each judged attack (every model's: the attack, not the model, failed)."""
    for r in rows:
        v = verdicts.get(r["attack"])
        if v is not None and not r.get("calibration"):
            r["conclusive"] = v.conclusive
            if not v.conclusive:
                r["inconclusive_reason"] = v.reason


def flag_rows(rows: list[ResultRow], baseline: str = "none", judged: list[ResultRow] | None = None) -> dict[str, Conclusiveness]:
    """`attack_conclusiveness` on `baseline` over `judged` (default: `rows`; a report passes its published
    rows), then every row of `rows` flagged: what a bench report does before its worst case, as an audit does."""
    judged = rows if judged is None else judged
    verdicts = attack_conclusiveness(judged, baseline) if any(r["label"] == baseline for r in judged) else {}
    mark_conclusive(rows, verdicts)
    return verdicts
