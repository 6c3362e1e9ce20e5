"""Can the judges say "nothing"? Probe images that are no image of any class (constants, noise, sparse dots,
tiled textures; `calor.metrics.probes`) are shown to a scenario's judges, each labelled with the private
class the judge names for it. Printed per judge and probe set, the share of images

- `closed`: called a private class by the closed-set verdict (always 1: argmax over private classes);
- `open`:   called a private class by the open-set verdict — what counted as a hit before (`hit_open`);
- `real`:   counted as a hit under the realism rule (`hit_real`: open-set hit, not blank, within the
            realism threshold of `calor.evaluation.realism`) — what counts now;

then the same before/after for natural images that must be kept: the private test split (each image
labelled with its own class), and optionally real reconstructions: from an attack run here (`--attack gmi`:
an undefended target trained and attacked through the ordinary cache, minutes on a CPU), from attack-run
artifacts (`--run DIR`, repeatable: the images and labels it stored, whatever code version made it), or
decoded from the annotated grids of a report (`--grids docs/results/mnist/grids`: each reconstruction row
of a grid written by `calor.images.save_annotated_grid`; rows in class order).

    .venv/bin/python benchmarks/judge_probe.py [--scenario mnist] [--n 200] [--seed 0] [--grids DIR] [--attack gmi] [--run DIR]
                                               [--knn]

`--knn` adds the alternative the rule replaced: the nearest-private-neighbour distance (`knn_dist`, squared
L2 in the judge's features, to the claimed class) against the same quantile of the same natural reference.

The judges come from the cache or the shipped store, exactly as a bench gets them (`train_judges`).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from calor import Workspace, load_scenario
from calor.evaluation import REALISM_QUANTILE, judge_verdicts, probe_judges, realism
from calor.metrics.accuracy import predict
from calor.metrics.diversity import degenerate_mask
from calor.metrics.knn import nearest_private
from calor.metrics.probes import probe_images
from calor.metrics.realism import quantile
from calor.scenario_data import load_data
from calor.targets import train_judges


def decode_grid(path: Path, side: int, channels: int, scale: int = 4) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The reconstructions of an annotated grid (alternate rows: reconstructions with captions, their nearest
    private images without), in [-1, 1] (exact up to the 8-bit rounding of the PNG), labelled by row. None
    when the layout does not match (another font, scale or row pattern)."""
    from PIL import Image, ImageDraw, ImageFont

    img = np.asarray(Image.open(path).convert("RGB")).astype(np.int64)
    font, measure = ImageFont.load_default(), ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def size(text: str) -> tuple[int, int]:
        left, top, right, bottom = measure.textbbox((0, 0), text, font=font)
        return right - left, bottom - top

    h = w = side * scale
    frame, pad, cols = 2, 4, None
    label_w = max(size(t)[0] for t in ("nearest private", "class 0")) + 2 * pad
    # the column width follows from the image width for the usual 8 reconstructions per class
    for n in (8, 4, 2, 16, 1):
        if (img.shape[1] - pad - label_w) % n == 0 and (img.shape[1] - pad - label_w) // n >= w + 2 * frame:
            cols = n
            break
    if cols is None:
        return None
    cell_w = (img.shape[1] - pad - label_w) // cols

    def read(caption_h: int) -> list[tuple[int, np.ndarray]] | None:
        found, y0, row = [], pad, 0
        while y0 + h + 2 * frame <= img.shape[0]:
            marked = row % 2 == 0
            for j in range(cols):
                x0 = label_w + j * cell_w + (cell_w - pad - w - 2 * frame) // 2
                tile = img[y0 + frame:y0 + frame + h, x0 + frame:x0 + frame + w]
                small = tile[::scale, ::scale]
                if not (np.repeat(np.repeat(small, scale, 0), scale, 1) == tile).all():
                    return None  # not a nearest-neighbour upscale at this position: another layout
                if marked:
                    found.append((row // 2, small[..., :channels]))
            y0 += h + 2 * frame + (caption_h if marked else 0) + pad
            row += 1
        return found if found and y0 == img.shape[0] else None  # the rows fill the grid exactly

    # the caption height depends on the captions' letters ("1.00", "0.99 pub"): try each
    for caption_h in sorted({size(c)[1] + pad for c in ("1.00", "0.99 pub")}):
        found = read(caption_h)
        if found is not None:
            x = torch.tensor(np.stack([t for _, t in found]), dtype=torch.float32).permute(0, 3, 1, 2) / 127.5 - 1
            return x, torch.tensor([c for c, _ in found])
    return None


def attack_images(scenario, attack: str, seed: int, ws: Workspace, judges) -> tuple[torch.Tensor, torch.Tensor]:
    from calor import attack_target, train_target

    target = train_target(scenario, "none", seed=seed, ws=ws)
    run = attack_target(scenario, target, attack, seed=seed, ws=ws, judges=judges)
    return run.reconstructions.images, run.reconstructions.labels


class KnnGate:
    """The alternative: a hit also needs knn_dist <= the REALISM_QUANTILE quantile of natural images' knn_dist."""

    def __init__(self, judge, data) -> None:
        self.judge, k = judge, judge.num_private
        self.priv = predict(judge.model, data.x_train, features=True), data.y_train
        ref = [self.knn(data.x_test, data.y_test)]
        pub = data.public_reference()
        if len(pub):
            ref.append(self.knn(pub, predict(judge.model, pub)[:, :k].argmax(1)))
        self.threshold = quantile(torch.cat(ref), REALISM_QUANTILE)

    def knn(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nearest_private(predict(self.judge.model, x, features=True), y, *self.priv)[0]

    def hit(self, x: torch.Tensor, y: torch.Tensor) -> float:
        hit_open = predict(self.judge.model, x).argmax(1) == y
        return (hit_open & ~degenerate_mask(x) & (self.knn(x, y) <= self.threshold)).float().mean().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="mnist")
    ap.add_argument("--n", type=int, default=200, help="images per probe set")
    ap.add_argument("--seed", type=int, default=0, help="probe images' seed")
    ap.add_argument("--cache", default=None, help="default: a new temporary directory (the shipped judges need none)")
    ap.add_argument("--grids", default=None, help="a report's grids/ folder: judge its attack grids' reconstructions too")
    ap.add_argument("--attack", default=None, help="also attack an undefended target with this attack and judge the result")
    ap.add_argument("--attack-seed", type=int, default=None, help="default: the scenario's first seed (the shipped prior's)")
    ap.add_argument("--run", action="append", default=[], help="an attack-run artifact directory: judge its reconstructions")
    ap.add_argument("--knn", action="store_true", help="also show the knn_dist gate the realism rule replaced")
    args = ap.parse_args()

    sc = load_scenario(args.scenario)
    data = load_data(sc)
    ws = Workspace(cache=Path(args.cache or tempfile.mkdtemp(prefix="calor-judge-probe-")))
    judges = train_judges(sc, ws)
    t0 = time.perf_counter()
    tests = {j.name: realism(j, data) for j in judges}
    for j in judges:
        r = tests[j.name].record()
        print(f"judge {j.name} (private-test acc {j.natural_acc:.4f}): realism threshold {r['threshold']:.1f} = q{r['quantile']:g} "
              f"of the Mahalanobis distance of {r['n_reference']} natural images ({r['reference']}); "
              f"private test images within it: {r['private_test_accepted']:.4f}")
    print(f"(realism references: {time.perf_counter() - t0:.1f} s)")
    gates = {j.name: KnnGate(j, data) for j in judges} if args.knn else {}
    for name, gate in gates.items():
        print(f"judge {name}: knn_dist gate threshold {gate.threshold:.1f} (q{REALISM_QUANTILE:g} of the same reference's knn_dist)")
    print()

    sets = probe_images(data.image_shape, args.n, args.seed, natural=data.public_reference() if len(data.public_reference()) else None)
    table = probe_judges(judges, data, sets)
    names = [j.name for j in judges]
    knn_head = "  (knn)" if gates else ""
    print("Probe images called a private class (each labelled with the class the judge names)")
    print(f"{'probe set':<24}" + "".join(f" | {n + ': closed  open -> real' + knn_head:>{34 + len(knn_head)}}" for n in names))
    for s in sets:
        cells = ""
        for j in judges:
            n = j.name
            cells += f" | {table[n][s]['closed']:>{len(n) + 8}.3f} {table[n][s]['open']:>5.3f} -> {table[n][s]['hit_real']:.3f}"
            if gates:
                claimed = predict(j.model, sets[s])[:, : j.num_private].argmax(1)
                cells += f"  ({gates[n].hit(sets[s], claimed):.3f})"
        print(f"{s:<24}{cells}")
    worst = {n: max(table[n][s]["hit_real"] for s in sets) for n in names}
    print("worst probe set under the new rule: " + ", ".join(f"{n} {w:.3f}" for n, w in worst.items()) + "\n")

    natural: dict[str, tuple[torch.Tensor, torch.Tensor]] = {"private test (own class)": (data.x_test, data.y_test)}
    if args.grids:
        for path in sorted(Path(args.grids).glob("*.png")):
            decoded = decode_grid(path, data.image_shape[1], data.image_shape[0])
            if decoded is None:
                print(f"(skipped {path.name}: not an annotated grid of this layout)")
                continue
            natural[f"grid {path.stem}"] = decoded
    for run in args.run:
        from calor.artifacts import load_artifact

        art = load_artifact(Path(run))
        natural[f"run {art.meta.get('attack')} on {Path(art.meta.get('target', '?')).name.split('-')[0]}, seed {art.meta.get('seed')}"] = \
            (art.tensors["images"], art.tensors["labels"])
    if args.attack:
        seed = args.attack_seed if args.attack_seed is not None else sc.seeds[0]
        natural[f"{args.attack} on none, seed {seed}"] = attack_images(sc, args.attack, seed, ws, judges)
    print("Natural images and reconstructions: hits before (open set) -> after (realism rule); kept = after / before")
    print(f"{'image set':<40} {'n':>4}" + "".join(f" | {n + ': open -> real (kept)' + knn_head:>{32 + len(knn_head)}}" for n in names))
    for label, (x, y) in natural.items():
        cells = ""
        for j in judges:
            v = judge_verdicts(j, x, y, data, test=tests[j.name])
            before, after = v["hit_open"].float().mean().item(), v["hit_real"].float().mean().item()
            kept = f"{after / before:.2f}" if before > 0 else "-"
            cells += f" | {before:>{len(j.name) + 8}.3f} -> {after:.3f} ({kept:>4})"
            if gates:
                cells += f"  ({gates[j.name].hit(x, y):.3f})"
        print(f"{label[:40]:<40} {len(x):>4}{cells}")


if __name__ == "__main__":
    main()
