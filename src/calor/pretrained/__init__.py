"""Artifacts shipped inside the calor package: the embedded `mnist` scenario's judges (evaluation models)
and the GAN prior of its first published seed (the demo's), so `calor demo` spends its time on what it demonstrates (training
defended targets and attacking them) instead of rebuilding the same instrument on every machine.

A shipped artifact is used only when its key — the same config hash the cache uses — matches what the
current code and scenario would build; otherwise calor trains as usual. `--rebuild` (or
`Workspace(packaged=False)`) ignores them. The shipped judge and prior are the same on every machine,
so they no longer vary with the CPU that would have trained them (targets and attacks still do).

Rebuild them with ``python -m calor.pretrained`` (documented in BENCHMARKS.md): it trains both into a
fresh cache with 2 threads and copies them here, printing each weights file's SHA-256; on the same
CPU capability and thread count the bytes are identical to the shipped ones.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..artifacts import find_artifact

STORE = Path(str(resources.files("calor.pretrained") / "store"))


def packaged_artifact(relative: Path | str) -> Path | None:
    """The shipped artifact stored at `relative` (e.g. ``evaluation/none-<hash>``), if there is one."""
    return find_artifact(STORE / relative)


def shipped() -> list[str]:
    """Every shipped artifact, as ``<kind dir>/<name>``."""
    return sorted(f"{p.parent.name}/{p.name}" for p in STORE.glob("*/*") if find_artifact(p))
