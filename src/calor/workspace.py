"""The workspace: where artifacts are cached, which device computes, and the one cache-or-build sequence
every artifact (target, judge, GAN prior, attack-specific prior, attack run) goes through.

An artifact is found by the hash of its cache key and is reused only when it was built by the current
code (`calor.versioning`); otherwise it is reported as stale and rebuilt. Long builds get a
`Checkpointer` keyed by the same key, cleared once the artifact is saved.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch

from .artifacts import Artifact, config_hash, find_artifact, load_artifact, load_meta, save_artifact
from .checkpoint import DEFAULT_EVERY_SECONDS, Checkpointer
from .defenses.base import Defense
from .errors import ConfigError
from .locking import artifact_lock
from .progress import log
from . import parallel
from .runtime import versions
from .versioning import class_modules, code_versions, stale_modules

ARTIFACT_FORMAT = 3  # bump when a change makes old cached artifacts invalid

# the modules every artifact's work runs through, besides its own (calor.versioning follows their imports)
COMMON_CODE = ("data/splits.py", "runtime.py")

T = TypeVar("T")


def classifier_code(defense: type[Defense]) -> dict[str, int]:
    """Code versions of a classifier artifact trained under the `defense` class."""
    return code_versions([*COMMON_CODE, "training.py", "models/classifiers.py", *class_modules(defense)])


def gan_code(kind: str | None = None) -> dict[str, int]:
    """Code versions of the shared GAN prior (of `kind`: a StyleGAN2 prior adds its own modules)."""
    extra = ["attacks/stylegan_prior.py", "models/stylegan2.py"] if kind == "stylegan2" else []
    return code_versions([*COMMON_CODE, "attacks/priors.py", *extra])


def attack_code(attack: type) -> dict[str, int]:
    """Code versions of a run of the `attack` class (and of its attack-specific priors): the attack's class
    hierarchy and the judging code its metrics come from."""
    return code_versions([*COMMON_CODE, *class_modules(attack), "evaluation.py", "diagnostics.py"])


def now() -> str:
    """UTC time stamp recorded in every artifact."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


LOCKS = ".locks"  # under the cache: one lock file per artifact path
BUILT: list[str] = []  # the artifacts this process built (cache-relative paths), in order: a Ray driver checks for doubles


@dataclass
class Workspace:
    """Where artifacts are cached, which device computes, and whether artifacts shipped with calor
    (`calor.pretrained`: the embedded scenario's judges and the demo seed's GAN prior) may stand in for cached ones."""

    cache: Path = Path("runs/cache")
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    packaged: bool = True
    # least seconds between checkpoints inside a long stage (0: every epoch / step; None: no checkpoints)
    checkpoint_every: float | None = DEFAULT_EVERY_SECONDS

    def __post_init__(self) -> None:
        self.cache = Path(self.cache)  # a str works too (the README's example passes one)
        self.device = torch.device(self.device)
        if self.checkpoint_every is not None and self.checkpoint_every < 0:
            raise ConfigError(f"checkpoint interval {self.checkpoint_every}: must be >= 0 seconds (or None for no checkpoints)")

    def checkpointer(self, rel: str, key: dict[str, Any]) -> Checkpointer:
        """Checkpoints of the work that will produce artifact `rel` (keyed by its cache key), under
        <cache>/checkpoints/<rel>; removed once the artifact is saved."""
        return Checkpointer(self.cache / "checkpoints" / rel, key, self.checkpoint_every)

    def existing(self, path: Path, code: dict[str, int], *, report: bool = True) -> Path | None:
        """The finished artifact for cache location `path`, built by the current `code` (see calor.versioning):
        the cached one, else a shipped one with the same key (same relative path), else None. An artifact
        built by other code is not returned (the caller rebuilds it), and reported as stale with `report`."""
        found = path if find_artifact(path) else None
        if found is None and self.packaged:
            from .pretrained import packaged_artifact

            found = packaged_artifact(Path(path).relative_to(self.cache))
        if found is None:
            return None
        stale = stale_modules(load_meta(found).get("code"), code)
        if stale:
            if report:
                log(f"[yellow]stale artifact {found}: built by other code ({'; '.join(stale[:4])}"
                    f"{'; ...' if len(stale) > 4 else ''}); rebuilding[/yellow]")
            return None
        return found

    def cached(self, rel: str, key: dict[str, Any], code: dict[str, int], *,
               build: Callable[[Checkpointer], tuple[dict[str, torch.Tensor], dict[str, Any], T]],
               load: Callable[[Artifact], T], what: str) -> tuple[T, dict[str, Any], Path]:
        """The one cache-or-build sequence: the artifact at `<cache>/<rel>` for cache `key`, built by `code`.

        Found (and not stale): `load(artifact)` makes the value. Otherwise `build(checkpointer)` returns
        (tensors, meta, value); the meta gains kind, hash, key, versions, code and a time stamp, the artifact
        is saved atomically and its checkpoints removed. Returns (value, meta, artifact directory)."""
        path = self.cache / rel
        # Data-parallel (torchrun): every process takes rank 0's view of the cache, trains together, and only
        # rank 0 writes; the barriers keep a process from looking while another is writing.
        parallel.barrier()
        # A current artifact is never rewritten (only stale ones are replaced, under the lock), so it is read
        # without the lock, and a run that only reads (e.g. from the shipped store) writes nothing to the cache.
        found = parallel.broadcast(self.existing(path, code, report=False))
        if found:
            return self._load(found, load, what)
        # Processes sharing the cache (two benches, Ray tasks): the first builds under the artifact's lock, the
        # others wait, then find it. Data-parallel processes (torchrun) are one builder: rank 0 takes the lock.
        lock = artifact_lock(self.cache / LOCKS / f"{rel}.lock", what) if parallel.is_writer() else contextlib.nullcontext()
        with lock:
            found = parallel.broadcast(self.existing(path, code))
            if found:
                return self._load(found, load, what)
            return self._build(rel, path, key, code, build)

    @staticmethod
    def _load(found: Path, load: Callable[[Artifact], T], what: str) -> tuple[T, dict[str, Any], Path]:
        art = load_artifact(found)
        log(f"[dim]cached {what}: {found}[/dim]")
        return load(art), art.meta, found

    def _build(self, rel: str, path: Path, key: dict[str, Any], code: dict[str, int],
               build: Callable[[Checkpointer], tuple[dict[str, torch.Tensor], dict[str, Any], T]]) -> tuple[T, dict[str, Any], Path]:
        ckpt = self.checkpointer(rel, key)
        BUILT.append(rel)
        tensors, extra, value = build(ckpt)
        meta = {"kind": key["kind"], "hash": config_hash(key), "key": key, **extra, "versions": versions(), "code": code,
                "created": now()}
        if parallel.is_writer():
            save_artifact(path, tensors, meta)
            ckpt.clear()
        parallel.barrier()
        return value, meta, path
