"""Rebuild the shipped artifacts: ``python -m calor.pretrained`` (trains the mnist judges and the GAN prior
of the scenario's first published seed, the demo's, with 2 threads into a fresh cache, then replaces the
copies in the package store)."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

from ..artifacts import WEIGHTS
from ..prior_store import Priors
from ..targets import train_judges
from ..workspace import Workspace
from ..runtime import configure_threads, versions
from ..scenario import load_scenario
from . import STORE, shipped


def main() -> None:
    configure_threads(2)
    sc = load_scenario("mnist")
    with tempfile.TemporaryDirectory(prefix="calor-pretrained-") as tmp:
        ws = Workspace(cache=Path(tmp), packaged=False)
        built = [Path(j.path) for j in train_judges(sc, ws)] + [Path(Priors(sc, sc.seeds[0], ws).gan().path)]
        old = {name: hashlib.sha256((STORE / name / WEIGHTS).read_bytes()).hexdigest() for name in shipped()}
        for stale in shipped():
            shutil.rmtree(STORE / stale)
        for path in built:
            rel = path.relative_to(ws.cache)
            shutil.copytree(path, STORE / rel)
            for f in (STORE / rel).iterdir():
                f.chmod(0o644)  # package data must be readable by every user
            digest = hashlib.sha256((path / WEIGHTS).read_bytes()).hexdigest()
            same = {None: "new", digest: "identical to the shipped copy"}.get(old.get(str(rel)), "DIFFERS from the shipped copy")
            print(f"{rel}  sha256 {digest}  ({same})")
    v = versions()
    print(f"built with torch {v['torch']} on {v['cpu']} ({v['cpu_capability']}), {v['threads']} threads")


if __name__ == "__main__":
    main()
