"""Checkpoints inside long stages, so that `kill -9` costs at most one interval of work.

A long loop (classifier training, a GAN prior, a per-target GAN, surrogate distillation) asks its
`Checkpointer` whether a snapshot is due, and hands it everything that determines the rest of the run:
model and optimiser states, the RNG states and its position. Each snapshot is a complete artifact
(safetensors + JSON, written atomically) in its own numbered directory; the older one is deleted only
after the newer one is in place, so a kill at any moment leaves a loadable snapshot. On resume the loop
restores the state and continues; on the CPU with the same seed and thread count it ends bit-identical
to a run that was never interrupted (tests/test_checkpoint.py kills a real process to check it).

A snapshot records a fingerprint of the work it belongs to (the artifact's cache key); a snapshot of
other work found at the same place is reported and ignored, never resumed.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .artifacts import config_hash, find_artifact, load_artifact, save_artifact
from .errors import ArtifactError
from .progress import log

DEFAULT_EVERY_SECONDS = 300.0  # a snapshot at most every 5 minutes of a stage's work
PREFIX = "snapshot-"


def flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """`obj` (nested dicts/lists/tuples of tensors and JSON values, e.g. an optimiser's state dict) as JSON,
    each tensor moved into `tensors` under a dotted name and replaced by a reference to it."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().clone()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        # JSON keys are strings: record each key's type so integer keys (optimiser state) come back as ints
        return {"__dict__": [[k, flatten(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        items = [flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise ArtifactError(f"cannot checkpoint a {type(obj).__name__} at {prefix}")


def unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of `flatten`."""
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: unflatten(v, tensors) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(unflatten(v, tensors) for v in obj["__tuple__"])
        return {k: unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unflatten(v, tensors) for v in obj]
    return obj


def rng_state(gen: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The torch RNG states a loop draws from: its own generator and the global CPU generator (dropout,
    initialisations)."""
    state = {"torch": torch.get_rng_state()}
    if gen is not None:
        state["generator"] = gen.get_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, torch.Tensor], gen: torch.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"])
    if gen is not None and "generator" in state:
        gen.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


@dataclass
class Checkpointer:
    """Snapshots of one piece of work under `directory`.

    `every_seconds`: the least time between snapshots (0: at every opportunity the loop offers; None: never).
    `fingerprint`: what the snapshots belong to (usually the artifact's cache key)."""

    directory: Path | None  # None: checkpoints off (nothing is ever read, written or deleted)
    fingerprint: dict[str, Any]
    every_seconds: float | None = DEFAULT_EVERY_SECONDS
    _last: float = field(default_factory=time.perf_counter, repr=False)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory) if self.directory is not None else None
        self.key = config_hash(self.fingerprint)

    @property
    def enabled(self) -> bool:
        return self.every_seconds is not None and self.directory is not None

    def _snapshots(self) -> list[Path]:
        if self.directory is None or not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if p.name.startswith(PREFIX) and find_artifact(p))

    def load(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
        """The newest snapshot of this work as (state, tensors), or None. `state` is what `save` was given,
        with its tensors restored."""
        if not self.enabled:
            return None
        for path in reversed(self._snapshots()):
            try:
                art = load_artifact(path)
            except ArtifactError as exc:  # a damaged snapshot: fall back to the one before it
                log(f"[yellow]checkpoint {path} is unreadable ({exc}); trying an older one[/yellow]")
                continue
            if art.meta.get("fingerprint") != self.key:
                log(f"[yellow]checkpoint {path} belongs to other work (key {art.meta.get('fingerprint')}, "
                    f"expected {self.key}); ignored[/yellow]")
                return None
            log(f"resuming from checkpoint {path} ({art.meta.get('position')})")
            return unflatten(art.meta["state"], art.tensors), art.tensors
        return None

    def due(self) -> bool:
        return self.enabled and time.perf_counter() - self._last >= (self.every_seconds or 0.0)

    def save(self, position: str, state: dict[str, Any], *, order: int) -> None:
        """Write a snapshot (`order`: a number that grows along the run, e.g. the step) and delete older ones."""
        if self.directory is None:
            return
        tensors: dict[str, torch.Tensor] = {}
        flat = flatten(state, "s", tensors)
        path = self.directory / f"{PREFIX}{order:012d}"
        save_artifact(path, tensors, {"kind": "checkpoint", "fingerprint": self.key, "position": position, "state": flat})
        for old in self._snapshots():
            if old != path:
                shutil.rmtree(old, ignore_errors=True)
        self._last = time.perf_counter()

    def sub(self, name: str) -> "Checkpointer":
        """The checkpointer of one part of this work (one of several surrogates trained in a row), stored
        beside its snapshots and removed with them."""
        if self.directory is None:
            return no_checkpoints()
        return Checkpointer(self.directory / name, {**self.fingerprint, "part": name}, self.every_seconds)

    def clear(self) -> None:
        """Remove every snapshot (the work finished and its artifact is saved)."""
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


def resume_loop(ckpt: Checkpointer, parts: dict[str, Any], gen: torch.Generator | None) -> tuple[int, dict[str, Any]]:
    """Restore `parts` (modules and optimisers: anything with `load_state_dict`; tensors, e.g. latents, are
    restored in place) and the RNG states from the newest snapshot of a step loop. Returns (the step to
    continue at, the loop's saved extras); (0, {}) when there is nothing to resume."""
    resumed = ckpt.load()
    if resumed is None:
        return 0, {}
    state, _ = resumed
    for name, part in parts.items():
        if isinstance(part, torch.Tensor):
            with torch.no_grad():
                part.copy_(state["parts"][name])
        else:
            part.load_state_dict(state["parts"][name])
    set_rng_state(state["rng"], gen)
    return int(state["step"]), state["extras"]


def snapshot_loop(ckpt: Checkpointer, step: int, total: int, parts: dict[str, Any], gen: torch.Generator | None,
                  extras: dict[str, Any], *, force: bool = False) -> None:
    """Write a snapshot of a step loop before `step` when one is due, or always with `force` (the end of one
    part of a longer build, so that a resumed build skips it; see `resume_loop`)."""
    if ckpt.enabled and (force or ckpt.due()):
        saved = {n: p.detach() if isinstance(p, torch.Tensor) else p.state_dict() for n, p in parts.items()}
        ckpt.save(f"step {step}/{total}", {"step": step, "parts": saved,
                                             "rng": rng_state(gen), "extras": extras}, order=step)


def no_checkpoints() -> Checkpointer:
    """A Checkpointer that never saves nor loads (for calls outside a cache)."""
    return Checkpointer(None, {}, every_seconds=None)
